"""The plugin template works end to end: rendered with ``cookiecutter --no-input``, built and
installed next to hubbub, the plugin is listed by ``hubbub plugins``, a real ``hubbub serve``
offers its tool, and the generated project's own tests pass.

The project is installed with ``uv pip install --target`` into a directory that subprocesses put
on ``PYTHONPATH``: a real wheel build (hatchling from hubbub's dev dependencies, offline) and a real
``.dist-info`` with the entry point, without touching the test environment itself.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "templates" / "hubbub-plugin"
TUTORIAL = ROOT / "docs" / "plugins" / "first-plugin.md"

# The template's defaults.
DISTRIBUTION = "hubbub-example-plugin"
PLUGIN = "example_plugin"
TOOL = "example_plugin.greet"

# The ``hubbub`` console script, run by this interpreter.
HUBBUB = [sys.executable, "-c", "from hubbub.cli import main; main()"]


def find_uv() -> str:
    """uv on ``PATH``, else the copy the Makefile installs into ``.uv/``."""
    found = shutil.which("uv") or shutil.which("uv", path=str(ROOT / ".uv" / "bin"))
    if found is None:
        pytest.fail("uv is needed to install the rendered plugin: pip install uv (or make venv)")
    return found


def environment(home: Path, site: Path | None) -> dict[str, str]:
    """This process's environment without ``HUBBUB_*`` settings; ``site`` on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    env.pop("PYTHONPATH", None)
    env["HUBBUB_HOME"] = str(home)
    if site is not None:
        env["PYTHONPATH"] = str(site)
    return env


class Rendered:
    """A rendered and installed copy of the template."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.site = root / "site"
        self.work = root / "work"  # the current directory for commands: no hubbub.toml there
        self.work.mkdir()
        output = root / "rendered"
        self.project = Path(
            cookiecutter(
                str(TEMPLATE),
                no_input=True,
                output_dir=str(output),
                # keep cookiecutter's replay files out of the home directory
                default_config={"replay_dir": str(root / "replay")},
            )
        )

    def install(self) -> None:
        # hatchling is a dev dependency of hubbub, so the wheel builds offline without isolation.
        command = [find_uv(), "pip", "install", "--offline", "--no-deps", "--no-build-isolation"]
        command += ["--python", sys.executable, "--target", str(self.site), str(self.project)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            pytest.fail(f"uv could not install the rendered plugin:\n{result.stderr}")

    def run(
        self, args: list[str], *, installed: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            cwd=cwd or self.work,
            env=environment(self.root / "home", self.site if installed else None),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    rendered = Rendered(tmp_path_factory.mktemp("template"))
    rendered.install()
    return rendered


def test_the_template_renders_a_project_with_the_entry_point(rendered: Rendered) -> None:
    project = rendered.project
    assert project.name == DISTRIBUTION
    for name in ("pyproject.toml", "README.md", "tests/test_plugin.py"):
        assert (project / name).is_file(), name
    assert not list(project.rglob("*{{*")), "unrendered file names"
    entry_points = (next(rendered.site.glob("*.dist-info")) / "entry_points.txt").read_text()
    assert f"{PLUGIN} = hubbub_example_plugin" in entry_points


def plugin_rows(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    assert result.returncode == 0, result.stdout + result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_hubbub_plugins_lists_the_installed_plugin(rendered: Rendered) -> None:
    rows = plugin_rows(rendered.run([*HUBBUB, "plugins", "--json"]))
    row = dict(rows[PLUGIN])
    provides = row.pop("provides")  # in the order kinds are declared: compare what, not order
    assert isinstance(provides, list)
    assert sorted(provides) == [f"events:{PLUGIN}", f"tools:{PLUGIN}"]
    assert row == {
        "name": PLUGIN,
        "version": "0.1.0",
        "source": DISTRIBUTION,
        "distribution": DISTRIBUTION,
        "hooks": ["register_event_sinks", "register_tools"],
        "error": None,
    }
    # Control: without the installed distribution on the path, there is no such plugin (unless
    # someone installed the tutorial's plugin into this environment itself).
    without = plugin_rows(rendered.run([*HUBBUB, "plugins", "--json"], installed=False))
    try:
        importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        assert PLUGIN not in without


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(rendered: Rendered, tmp_path: Path) -> Iterator[str]:
    """``hubbub serve`` on a free loopback port with the plugin installed; its base URL."""
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*HUBBUB, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=rendered.work,
            env=environment(tmp_path / "home", rendered.site),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"hubbub serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"hubbub serve was not ready within 30 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_server_offers_and_runs_the_plugins_tool(server: str) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:
        tools = {tool["name"]: tool for tool in client.get("/api/tools").json()["tools"]}
        assert tools[TOOL]["source"] == PLUGIN
        assert list(tools[TOOL]["parameters"]["properties"]) == ["name"]
        conversation = client.post("/api/conversations", json={"model": "offline/tools"}).json()
        sent = client.post(
            f"/api/conversations/{conversation['id']}/messages",
            json={"content": f'call {TOOL} {{"name": "Ada"}}', "wait": True},
        )
    assert sent.status_code == 200, sent.text
    assert "Hello, Ada!" in sent.json()["reply"]["content"]


def test_the_generated_projects_tests_pass(rendered: Rendered) -> None:
    tests = rendered.project / "tests"
    result = rendered.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
        cwd=rendered.project,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    written = re.findall(r"^(?:async )?def test_", (tests / "test_plugin.py").read_text(), re.M)
    assert re.search(rf"\b{len(written)} passed\b", output), output
    assert not re.search(r"\b(skipped|xfailed|deselected)\b", output), output


def quoted_blocks(markdown: str) -> list[tuple[str, str]]:
    """``(path, code)`` for every fenced code block with a ``title="path"``."""
    return re.findall(r'^```\w+ title="([^"]+)"\n(.*?)^```$', markdown, re.M | re.S)


def quotes(text: str, excerpt: str) -> bool:
    """Whether ``excerpt`` is a run of lines of ``text``, indentation aside."""
    wanted = textwrap.dedent(excerpt).strip("\n")
    lines = text.splitlines()
    size = len(wanted.splitlines())
    return any(
        textwrap.dedent("\n".join(lines[start : start + size])) == wanted
        for start in range(len(lines) - size + 1)
    )


def test_quotes_check_can_fail() -> None:
    text = "class A:\n    def f(self):\n        return 1\n"
    assert quotes(text, "def f(self):\n    return 1\n")
    assert not quotes(text, "def f(self):\n    return 2\n")


def test_the_tutorial_quotes_the_rendered_files(rendered: Rendered) -> None:
    # Every titled block but the user's own hubbub.toml quotes a file of the rendered project.
    blocks = [block for block in quoted_blocks(TUTORIAL.read_text()) if block[0] != "hubbub.toml"]
    assert {path for path, _ in blocks} == {
        "pyproject.toml",
        "src/hubbub_example_plugin/__init__.py",
        "tests/test_plugin.py",
    }
    for path, code in blocks:
        assert quotes((rendered.project / path).read_text(), code), f"{path} no longer has:\n{code}"
