"""Every command README.md shows works as printed, for a new user who has just run its first two
(``make serve``, ``make test``) in a fresh clone.

The shell commands of README.md's fenced ``sh`` blocks after the first run one after another,
as a user would type them into one shell: from a copy of the repository's top directory (links to
its files, so that files a command writes, such as ``hubbub.toml``, land in the copy), with a
temporary ``HUBBUB_HOME``, and a PATH without ``.venv/bin`` (a command that needs it must say how
it gets there: the README's ``. .venv/bin/activate``). Commands that change the shell
(``.``, ``source``, ``export``, ``cd``) carry over to the later ones. Servers (``make serve ...``,
``hubbub serve ...``) are started on a free port, must answer ``/health/live``, and are stopped
with Ctrl-C. The long-running ``make`` targets are skipped by name (:data:`SKIPPED`); anything
else that exits non-zero fails the test.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

FIRST_BLOCK = ["make serve", "make test"]
"""What the README starts with, in this order."""

SKIPPED = {
    "make serve": "runs until stopped on port 8000; 'make serve PORT=...' is run instead",
    "make test": "the whole suite, this test included",
    "make lint": "ruff and mypy over the project: minutes of CPU, run by CI's lint step",
    "make docs": "the site build, run by tests/test_docs.py::test_docs_build_strict",
    "make bench": "minutes of load on the machine",
}
"""Commands not run, by their exact text, and why."""

SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
STATEFUL = re.compile(r"^(\.|source|export|cd)\s")
SERVER = re.compile(r"\b(make\s+serve|hubbub\s+serve)\b")
PORT = re.compile(r"(?<=PORT=)\d+|(?<=--port[ =])\d+")
LEFT_OUT = {".git", ".venv", "hubbub.toml", "site", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
COMMAND_TIMEOUT = 120.0
SERVER_TIMEOUT = 90.0


# -- reading the README ------------------------------------------------------------------------


def shell_blocks(text: str) -> list[list[str]]:
    """The commands of each fenced shell block, comments and prompts (``$ ``) removed,
    continuation lines joined."""
    blocks: list[list[str]] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = re.match(r"^(`{3,}|~{3,})\s*(\S*)", lines[index])
        if opening is None:
            index += 1
            continue
        fence, language = opening.group(1), opening.group(2).lower()
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if language in SHELL_LANGUAGES:
            blocks.append(_commands(lines[index + 1 : end]))
        index = end + 1
    return blocks


def _commands(lines: list[str]) -> list[str]:
    commands: list[str] = []
    pending = ""
    for raw in lines:
        line = raw.rstrip()
        if line.startswith("$ "):
            line = line[2:]
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        command = " ".join(strip_comment(pending + line).split())
        pending = ""
        if command:
            commands.append(command)
    return commands


def strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` after blank space, outside quotes)."""
    quote = ""
    for position, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"`":
            quote = char
        elif char == "#" and (position == 0 or line[position - 1].isspace()):
            return line[:position]
    return line


def later_commands(text: str) -> list[str]:
    """The commands of every shell block after the first."""
    return [command for block in shell_blocks(text)[1:] for command in block]


# -- a fresh clone and a fresh shell -----------------------------------------------------------


def fresh_clone(target: Path) -> Path:
    """A directory that looks like the repository after ``make test``: links to its files, and a
    ``.venv`` of links to the real one whose ``.synced`` stamp is new (so ``make`` does not set
    it up again)."""
    target.mkdir(parents=True)
    for entry in ROOT.iterdir():
        if entry.name not in LEFT_OUT:
            (target / entry.name).symlink_to(entry)
    venv = target / ".venv"
    venv.mkdir()
    for entry in (ROOT / ".venv").iterdir():
        if entry.name != ".synced":
            (venv / entry.name).symlink_to(entry)
    (venv / ".synced").touch()
    return target


def fresh_env(home: Path) -> dict[str, str]:
    """This process's environment as a new shell would have it: no virtualenv on PATH, no
    ``HUBBUB_*`` variables, not inside ``make``; data in ``home``."""
    venvs = {str(ROOT / ".venv"), os.environ.get("VIRTUAL_ENV", str(ROOT / ".venv"))}
    path = [
        entry
        for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and not any(entry.startswith(venv) for venv in venvs)
    ]
    dropped = {"VIRTUAL_ENV", "PYTHONPATH", "LITELLM_LOCAL_MODEL_COST_MAP", "NO_MKDOCS_2_WARNING"}
    dropped |= {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"}
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in dropped and not name.startswith(("HUBBUB_", "PYTEST_"))
    }
    env.update(PATH=os.pathsep.join(path or ["/usr/bin", "/bin"]), HUBBUB_HOME=str(home))
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Shell:
    """Runs commands the way a user's shell would, one after another."""

    cwd: Path
    env: dict[str, str]
    log: Path
    prelude: tuple[str, ...] = ()
    """Earlier commands that changed the shell (activation, ``export``, ``cd``)."""

    def script(self, command: str) -> str:
        return "\n".join(["set -e", *self.prelude, command])

    def run(self, command: str) -> str | None:
        """Run ``command``; ``None`` if it worked, else what went wrong."""
        if command in SKIPPED:
            return None
        if SERVER.search(command) and "--help" not in command:
            problem = self.serve(command)
        else:
            problem = self.once(command)
        if problem is None and STATEFUL.match(command):
            self.prelude = (*self.prelude, command)
        return problem

    def once(self, command: str) -> str | None:
        try:
            done = subprocess.run(
                ["bash", "-c", self.script(command)],
                cwd=self.cwd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"{command!r} did not finish in {COMMAND_TIMEOUT} s"
        output = done.stdout + done.stderr
        if done.returncode != 0:
            return f"{command!r} exited with {done.returncode}:\n{output}"
        if "Traceback (most recent call last)" in output:
            return f"{command!r} printed a traceback:\n{output}"
        return None

    def serve(self, command: str) -> str | None:
        """Start a server command on a free port, wait for ``/health/live``, stop it."""
        port = free_port()
        env = dict(self.env)
        if PORT.search(command):
            command = PORT.sub(str(port), command)
        else:
            env["HUBBUB_SERVER__PORT"] = str(port)
        with self.log.open("wb") as log:
            process = subprocess.Popen(
                ["bash", "-c", self.script(command)],
                cwd=self.cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: make, hubbub and workers
            )
            try:
                healthy = _wait_live(process, f"http://127.0.0.1:{port}/health/live")
            finally:
                _stop_group(process)
        if not healthy:
            return f"{command!r} did not serve /health/live:\n{self.log.read_text()}"
        return None


def _wait_live(process: subprocess.Popen[bytes], url: str) -> bool:
    deadline = time.monotonic() + SERVER_TIMEOUT
    with httpx.Client(trust_env=False, timeout=2) as client:
        while time.monotonic() < deadline and process.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if client.get(url).status_code == 200:
                    return True
            time.sleep(0.2)
    return False


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C to the command's process group, then SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


@pytest.fixture
def shell(tmp_path: Path) -> Shell:
    clone = fresh_clone(tmp_path / "clone")
    return Shell(cwd=clone, env=fresh_env(tmp_path / "home"), log=tmp_path / "server.log")


# -- the tests ---------------------------------------------------------------------------------


def test_the_readme_starts_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    first_fence = text.index("```")
    assert text[:first_fence].strip() == "# Hubbub"
    assert shell_blocks(text)[0] == FIRST_BLOCK


def test_commands_are_read_from_the_readme() -> None:
    commands = later_commands(README.read_text(encoding="utf-8"))
    assert any(SERVER.search(c) and PORT.search(c) for c in commands), "no server on a port"
    assert any(c.startswith("hubbub keys create") for c in commands)
    assert set(SKIPPED) - set(FIRST_BLOCK) <= set(commands), "stale skip list"


def test_reading_handles_comments_prompts_and_continuations() -> None:
    text = (
        "```sh\nmake serve\n```\n\n"
        "```console\n$ hubbub keys create \\\n    --user me   # the key\n# a note\n"
        "echo 'a # b'  # c\n```\n\n```python\nprint('not shell')\n```\n"
    )
    assert later_commands(text) == ["hubbub keys create --user me", "echo 'a # b'"]


@pytest.mark.timeout(600)
def test_every_readme_command_works_as_printed(shell: Shell) -> None:
    commands = later_commands(README.read_text(encoding="utf-8"))
    problems = [problem for command in commands if (problem := shell.run(command))]
    assert problems == [], "\n\n".join(problems)


@pytest.mark.timeout(120)
def test_a_command_that_does_not_work_as_printed_is_caught(shell: Shell) -> None:
    # What the README used to show: hubbub is not on a new shell's PATH after `make test`.
    assert "command not found" in (shell.run("hubbub keys create --user me") or "")
    assert shell.run(". .venv/bin/activate") is None
    assert shell.run("hubbub keys create --user me") is None
    synopsis = shell.run("hubbub serve [--config F] [--port P]") or ""
    assert "did not serve /health/live" in synopsis
    assert "Usage: hubbub serve" in synopsis
