"""The one rule of the layout (DESIGN.md): ``hubbub`` imports neither ``hubbub_plugins`` nor
``hubbub_server``; built-in plugins never import the server and use only ``hubbub``'s public
modules; nothing imports the source folders' names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "hubbub": ROOT / "framework" / "hubbub",
    "hubbub_plugins": ROOT / "plugins" / "hubbub_plugins",
    "hubbub_server": ROOT / "reference_server" / "hubbub_server",
}
FORBIDDEN = {
    "hubbub": {"hubbub_plugins", "hubbub_server"},
    "hubbub_plugins": {"hubbub_server"},
    "hubbub_server": {"hubbub_plugins"},
}
FOLDERS = {"framework", "plugins", "reference_server"}


def imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


def violations() -> Iterator[str]:
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            where = path.relative_to(ROOT)
            for line, module in imports(path):
                top = module.split(".")[0]
                if top in FORBIDDEN[package] or top in FOLDERS:
                    yield f"{where}:{line} imports {module}"
                parts = module.split(".")
                if (
                    package == "hubbub_plugins"
                    and top == "hubbub"
                    and any(p.startswith("_") for p in parts[1:])
                ):
                    yield f"{where}:{line} imports private {module}"


def test_layering_rule_holds() -> None:
    assert list(violations()) == []


def test_the_check_sees_imports() -> None:
    found = dict((m, n) for n, m in imports(PACKAGES["hubbub_server"] / "app.py"))
    assert "hubbub.runtime" in found  # the walk really reads import statements
