"""The documentation's Python examples as data, and what both example tests share.

:func:`collect` finds every fenced ``python`` block of ``README.md`` and ``docs/**/*.md``.
A block runs as a test unless a marker says otherwise: an HTML comment (the rendered site does not
show it) on the last non-blank line before the fence::

    <!-- example: excerpt (a method of the class above) -->

Its words, before any parenthesised comment, are among :data:`MARKERS`:

* ``excerpt``: part of something bigger (a method out of its class, a signature); not run.
* ``server``: talks to a reference server at ``http://127.0.0.1:8000``; run against a real one.
* ``continues``: goes on from the page's previous Python block; both run as one program.
* ``register-only``: a plugin whose factories use a class defined elsewhere: it is loaded and a
  runtime starts with it, but the components it registers are not selected.

Lines after the first, up to ``-->``, are TOML added to the configuration the example runs with.
An example plugin is registered under the name :data:`PLUGIN` (its table is ``[plugins.example]``).
"""

from __future__ import annotations

import ast
import contextlib
import copy
import functools
import io
import os
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKERS = frozenset({"excerpt", "server", "continues", "register-only"})
PLUGIN = "example"
"""The name an example plugin is registered under."""

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
_MARKER = re.compile(r"<!--\s*example:(?P<body>.*?)-->", re.S)


@dataclass(frozen=True)
class Example:
    """One fenced Python block of a page."""

    page: str
    """The page, relative to the repository root."""
    line: int
    """The line of the opening fence (1-based)."""
    code: str
    markers: frozenset[str] = frozenset()
    toml: str = ""
    """Configuration from the marker."""
    problem: str | None = None
    """What is wrong with the marker, if anything."""
    previous: Example | None = None
    """The page's Python block before this one."""

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def first_line(self) -> str:
        return next((line.strip() for line in self.code.splitlines() if line.strip()), "")

    def chain(self) -> list[Example]:
        """The blocks that run as one program, this one last."""
        if "continues" in self.markers and self.previous is not None:
            return [*self.previous.chain(), self]
        return [self]

    def source(self) -> str:
        """The chain's code, each line at its line number in the page (so tracebacks point
        into the page)."""
        lines: list[str] = []
        for example in self.chain():
            lines.extend([""] * (example.line - len(lines)))
            lines.extend(example.code.splitlines())
        return "\n".join(lines) + "\n"

    def tree(self) -> ast.Module:
        return ast.parse(self.source(), filename=self.page)

    def markers_of_chain(self) -> frozenset[str]:
        return frozenset().union(*(example.markers for example in self.chain()))

    def toml_of_chain(self) -> str:
        return "\n".join(example.toml for example in self.chain() if example.toml)


def pages(root: Path = ROOT) -> list[Path]:
    """README.md and every page of the site."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def _marker(lines: Sequence[str], fence: int) -> tuple[frozenset[str], str, str | None]:
    """The marker ending on the last non-blank line before line index ``fence``."""
    end = fence - 1
    while end >= 0 and not lines[end].strip():
        end -= 1
    if end < 0 or not lines[end].rstrip().endswith("-->"):
        return frozenset(), "", None
    start = end
    while start > 0 and "<!--" not in lines[start]:
        start -= 1
    match = _MARKER.search("\n".join(lines[start : end + 1]))
    if match is None:
        return frozenset(), "", None
    head, _, toml = match.group("body").partition("\n")
    words = frozenset(head.split("(", 1)[0].split())
    unknown = sorted(words - MARKERS)
    problem = None
    if unknown or not (words or toml.strip()):
        problem = f"unknown example marker {unknown or head!r}; use some of {sorted(MARKERS)}"
    return words, textwrap.dedent(toml).strip(), problem


def parse(text: str, page: str) -> list[Example]:
    """The Python blocks of one page's markdown."""
    lines = text.splitlines()
    examples: list[Example] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = index + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        language = (opening["info"].split() or [""])[0].lstrip(".{").lower()
        if language in ("python", "py"):
            markers, toml, problem = _marker(lines, index)
            previous = examples[-1] if examples else None
            if "continues" in markers and previous is None:
                problem = "marked 'continues' but no Python block comes before it"
            code = "\n".join(line[indent:] for line in lines[index + 1 : end])
            examples.append(
                Example(page, index + 1, code, markers, toml, problem, previous=previous)
            )
        index = end + 1
    return examples


def collect(root: Path = ROOT) -> list[Example]:
    """Every Python block of README.md and the site, page by page."""
    return [
        example
        for path in pages(root)
        for example in parse(path.read_text(encoding="utf-8"), path.relative_to(root).as_posix())
    ]


# -- what code implements ---------------------------------------------------------------------


def _is_hookimpl(node: ast.expr) -> bool:
    """``hookimpl``, ``hubbub.hookimpl``, or either called (``hookimpl(tryfirst=True)``)."""
    if isinstance(node, ast.Call):
        node = node.func
    return (isinstance(node, ast.Name) and node.id == "hookimpl") or (
        isinstance(node, ast.Attribute) and node.attr == "hookimpl"
    )


def _specname(node: ast.expr) -> str | None:
    """The ``specname=`` given to ``hookimpl(...)``, if any."""
    if isinstance(node, ast.Call):
        for keyword in node.keywords:
            if keyword.arg == "specname" and isinstance(keyword.value, ast.Constant):
                return str(keyword.value.value)
    return None


def implemented_hooks(tree: ast.AST) -> set[str]:
    """The hooks ``tree`` implements: functions decorated with ``hookimpl`` (named like the
    hook, or ``specname=``), and ``plugin.<hook> = hookimpl(function)`` assignments."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                if _is_hookimpl(decorator):
                    found.add(_specname(decorator) or node.name)
        elif (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and _is_hookimpl(node.value.func)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found.add(target.id)
                elif isinstance(target, ast.Attribute):
                    found.add(target.attr)
    return found


# -- running things in this process, away from the user's files --------------------------------


def isolate(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """No ``HUBBUB_*`` variable but ``HUBBUB_HOME=home``, and the working directory in ``home``
    (so no ``./hubbub.toml`` is read)."""
    for name in list(os.environ):
        if name.startswith("HUBBUB_"):
            monkeypatch.delenv(name)
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HUBBUB_HOME", str(home))
    monkeypatch.chdir(home)


@dataclass
class Ran:
    """What a ``hubbub`` command did."""

    code: int
    """Its exit status."""
    output: str
    """stdout and stderr."""
    added: list[str]
    """The commands plugins (installed or given) added to the group."""


def run_hubbub(argv: Sequence[str], plugins: Iterable[object]) -> Ran:
    """Run the ``hubbub`` command (:func:`hubbub.cli.main`) in this process with ``plugins``
    registered besides the installed ones. Commands that plugins add go to a copy of the command
    group, never to the real one."""
    import hubbub.cli
    from hubbub.plugins import load_plugins

    original = hubbub.cli.cli
    group = copy.copy(original)
    group.commands = dict(original.commands)
    output = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hubbub.cli, "cli", group)
        patch.setattr(
            hubbub.cli, "load_plugins", functools.partial(load_plugins, extra=list(plugins))
        )
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            try:
                hubbub.cli.main(list(argv))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            else:  # pragma: no cover - click exits in standalone mode
                code = 0
    return Ran(code, output.getvalue(), sorted(set(group.commands) - set(original.commands)))
