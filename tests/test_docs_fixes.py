"""The documentation's claims that tests/test_docs_examples.py cannot run on its own: the plugin
testing examples of docs/plugins/writing.md pass in a plugin project set up as the page says
(pytest's configuration included), litellm's ``mock_response`` configuration answers offline,
plugin settings are documented as TOML, and the configuration page's example is exactly what
``hubbub config init`` writes."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import msgspec
import pytest
from support import install_distribution

from hubbub.config import load_config
from hubbub.config.reference import render_plugin_settings
from hubbub.models import ChatRequest, Message
from hubbub.plugins import load_plugins
from hubbub.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
HUBBUB = str(Path(sys.executable).parent / "hubbub")

_FENCE = re.compile(r'^```(?P<language>\w+)(?:\s+title="(?P<title>[^"]+)")?\s*$')


def titled_blocks(page: Path) -> list[tuple[str, str, str]]:
    """``(title, language, code)`` of each fenced block of ``page`` that has a title."""
    blocks = []
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if opening["title"]:
            code = "\n".join(lines[index + 1 : end]) + "\n"
            blocks.append((opening["title"], opening["language"], code))
        index = end + 1
    return blocks


def section(page: Path, heading: str) -> str:
    """The Markdown of ``page`` from ``heading`` to the next heading of the same level."""
    text = page.read_text(encoding="utf-8")
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n")
    end = text.find(f"\n{level} ", start + 1)
    return text[start : end if end != -1 else len(text)]


def docs_hooks() -> ModuleType:
    """docs/hooks.py, the mkdocs hooks that fill the generated parts of pages in."""
    spec = importlib.util.spec_from_file_location("hubbub_docs_hooks", DOCS / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("HUBBUB_", "PYTEST_", "LITELLM_"))
    }
    env.update(extra)
    return env


# -- writing.md: testing a plugin -------------------------------------------------------------


@pytest.mark.timeout(300)
def test_the_plugin_testing_examples_pass_as_written(tmp_path: Path) -> None:
    page = DOCS / "plugins" / "writing.md"
    blocks = titled_blocks(page)
    pyproject = "".join(code for title, _, code in blocks if title == "pyproject.toml")
    project_toml = tomllib.loads(pyproject)  # the page's pyproject.toml blocks, as one file
    assert project_toml["tool"]["pytest"]["ini_options"]["asyncio_mode"] == "auto"
    ((entry_point, module),) = project_toml["project"]["entry-points"]["hubbub"].items()
    sources = {title: code for title, language, code in blocks if language == "python"}
    tests = {title: code for title, code in sources.items() if title.startswith("tests/")}
    assert set(tests) >= {"tests/test_arithmetic.py", "tests/test_with_litellm.py"}

    site = install_distribution(
        tmp_path / "dist",
        project_toml["project"]["name"],
        project_toml["project"]["version"],
        {module: sources[f"{module}/__init__.py"]},
        {entry_point: module},
    )
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "pyproject.toml").write_text(pyproject)
    for title, code in tests.items():
        (project / title).write_text(code)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        env=clean_env(PYTHONPATH=str(site)),
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"{len(tests)} passed" in output, output


# -- builtin.md: a litellm model without a provider -------------------------------------------


async def test_the_mock_response_configuration_answers_offline(tmp_path: Path) -> None:
    page = DOCS / "plugins" / "builtin.md"
    text = section(page, "### Without a provider: `mock_response`")
    toml = text.split('```toml title="hubbub.toml"\n', 1)[1].split("```", 1)[0]
    settings = tomllib.loads(toml)
    (model,) = settings["plugins"]["litellm_provider"]["models"]
    canned = model["options"]["mock_response"]
    assert f"answers\n`{canned}`" in text  # what the page says it answers

    config = load_config(text=toml, env={"HUBBUB_HOME": str(tmp_path)})
    async with Runtime.from_config(config, plugins=load_plugins(env={})) as runtime:
        assert config.llm.default_model == model["name"]
        request = ChatRequest(model=model["name"], messages=[Message(role="user", content="Hi")])
        whole = await runtime.llm.complete(request)
        assert whole.message.content == canned
        assert whole.usage.cost is not None  # litellm's bundled price table, offline
        streamed = [chunk async for chunk in runtime.llm.stream(request)]
        assert "".join(chunk.delta for chunk in streamed) == canned


# -- plugin settings as TOML ------------------------------------------------------------------


class _Entry(msgspec.Struct, kw_only=True):
    """One entry."""

    name: str
    """Its name."""


class _Settings(msgspec.Struct, kw_only=True):
    """Settings of a sample plugin."""

    entries: list[_Entry] = msgspec.field(default_factory=list)
    """The entries."""
    options: dict[str, str] = msgspec.field(default_factory=dict)
    """Options."""
    ratio: float = 0.5
    """A ratio."""


def test_plugin_settings_render_their_defaults_as_toml() -> None:
    text = render_plugin_settings("sample", _Settings)
    assert "msgspec" not in text
    assert "default_factory" not in text
    assert "| `entries` | array of tables | `[]` | The entries. |" in text
    assert "| `options` | table | `{}` | Options. |" in text
    assert "| `ratio` | float | `0.5` | A ratio. |" in text
    assert "#### `[[plugins.sample.entries]]`" in text
    assert "| `name` | string | unset | Its name. |" in text


def test_the_builtin_plugins_page_documents_settings_as_toml() -> None:
    hooks = docs_hooks()
    page = hooks.on_page_markdown((DOCS / "plugins" / "builtin.md").read_text(encoding="utf-8"))
    assert ":::" not in page  # no API rendering of the structs, whose defaults are Python
    assert "msgspec" not in page
    for name in hooks.builtin_settings():
        assert f"### `[plugins.{name}]`" in page, name
    assert "| `models` | array of tables | `[]` |" in page
    assert "#### `[[plugins.litellm_provider.models]]`" in page
    assert "| `api_key` | secret (optional) | unset |" in page


# -- configuration.md -------------------------------------------------------------------------


def test_the_configuration_page_shows_what_config_init_writes(tmp_path: Path) -> None:
    source = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert "Reading this file on GitHub" not in source
    page = docs_hooks().on_page_markdown(source)
    assert "<!--" not in page.replace("<!-- Generated", "")  # every marker filled in
    example = page.split("## A complete example", 1)[1].split("```toml\n", 1)[1]
    example = example.split("```", 1)[0]

    target = tmp_path / "hubbub.toml"
    done = subprocess.run(
        [HUBBUB, "config", "init", str(target)],
        cwd=tmp_path,
        env=clean_env(HUBBUB_HOME=str(tmp_path / "home")),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert example == target.read_text()
    assert "# [plugins.sqlite_store]" in example
    assert "# [[plugins.litellm_provider.models]]" in example
    assert "### `[plugins.sqlite_store]`" in page  # and the reference lists the plugins' keys
