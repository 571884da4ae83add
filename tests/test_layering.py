"""The rules of the layout (DESIGN.md): ``hubbub`` imports neither ``hubbub_plugins`` nor
``hubbub_server``; built-in plugins never import the server and use only ``hubbub``'s public
modules; nothing imports the source folders' names. Inside the core, layers: the data modules
import nothing of hubbub, the contracts only those, subsystems never the runtime, the registry
never names the runtime, and no import cycle crosses a package boundary (``TYPE_CHECKING``
imports included)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import hubbub

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


def package_name(path: Path) -> str:
    """The dotted package ``path`` belongs to (``hubbub.runtime`` for runtime/stages.py)."""
    root = next(folder for folder in PACKAGES.values() if folder in path.parents or folder == path)
    parts = list(path.relative_to(root.parent).parent.parts)
    return ".".join(parts)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, relative imports resolved; ``from m import n`` yields
    ``m`` and ``m.n`` (``n`` may be a submodule)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package_name(path).split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, module] if module else base)
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


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


# -- inside the core ------------------------------------------------------------------------

CORE = PACKAGES["hubbub"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def core_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(CORE.rglob("*.py"))}


def core_imports(path: Path) -> set[str]:
    """The hubbub modules ``path`` imports (a ``from pkg import name`` of a submodule counts
    as importing the submodule)."""
    known = core_modules()
    found = set()
    for _, module in imports(path):
        if module.split(".")[0] != "hubbub":
            continue
        # The package root is a lazy facade: ``from hubbub import Runtime`` imports the module
        # that defines Runtime, ``from hubbub import hookspecs`` imports hookspecs, and
        # ``import hubbub`` alone imports nothing that counts.
        parts = module.split(".")
        if len(parts) == 2 and parts[1] in LAZY:
            module = LAZY[parts[1]]
        while module not in known and "." in module:
            module = module.rsplit(".", 1)[0]
        found.add(module)
    found -= {module_name(path), "hubbub"}
    return found


LAZY: dict[str, str] = hubbub._LAZY
"""What the package root re-exports lazily, and from where."""


ALLOWED = {
    # data and leaves: nothing of hubbub
    "hubbub.errors": set(),
    "hubbub.models": set(),
    "hubbub.log": set(),
    "hubbub.sqlite": {"hubbub.errors", "hubbub.resilience"},
    "hubbub.redaction": set(),
    "hubbub.events.types": {"hubbub.models"},
    "hubbub.resilience": {"hubbub.errors", "hubbub.models"},
    # the contracts: only the data they speak of
    "hubbub.contracts": {"hubbub.errors", "hubbub.models", "hubbub.events.types"},
}
"""Modules and everything of hubbub they may import."""

SUBSYSTEMS = [
    "hubbub.config",
    "hubbub.events",
    "hubbub.llm",
    "hubbub.tools",
    "hubbub.auth",
    "hubbub.conversation",
]
BELOW_RUNTIME = [
    *SUBSYSTEMS,
    "hubbub.registry",
    "hubbub.kinds",
    "hubbub.plugins",
    "hubbub.hookspecs",
    "hubbub.services",
    "hubbub.middleware",
    "hubbub.contracts",
]


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def core_violations() -> Iterator[str]:
    modules = core_modules()
    for module, path in modules.items():
        imported = core_imports(path)
        if module in ALLOWED:
            for other in sorted(imported - ALLOWED[module]):
                yield f"{module} imports {other}"
        if any(in_package(module, p) for p in BELOW_RUNTIME):
            for other in sorted(i for i in imported if in_package(i, "hubbub.runtime")):
                yield f"{module} imports {other} (only the runtime builds the runtime)"
        if module == "hubbub.config" or module.startswith("hubbub.config."):
            for other in sorted(imported):
                leaves = ("hubbub.config", "hubbub.errors", "hubbub.redaction")
                if not any(in_package(other, p) for p in leaves):
                    yield f"{module} imports {other} (configuration stands alone)"
    tree = ast.parse((CORE / "registry.py").read_text())
    named = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    named |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    named |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    if "Runtime" in named or any(isinstance(v, str) and v == "Runtime" for v in strings):
        yield "hubbub.registry names Runtime (in code)"


def package_of(module: str) -> str:
    """The package a module belongs to (a top-level module is its own)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def cycles() -> list[list[str]]:
    """Import cycles between modules of different packages."""
    modules = core_modules()
    graph = {
        module: {
            other
            for other in core_imports(path)
            if package_of(other) != package_of(module) and other in modules
        }
        for module, path in modules.items()
    }
    found = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for other in sorted(graph[node]):
            if state.get(other) == 1:
                found.append([*stack[stack.index(other) :], other])
            elif other not in state:
                visit(other)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_core_layers_hold() -> None:
    assert list(core_violations()) == []


def test_no_import_cycle_crosses_packages() -> None:
    assert cycles() == []


def test_the_core_checks_see_imports(tmp_path: Path) -> None:
    assert "hubbub.runtime.runtime" in core_modules()
    # a lazy name of the package root, and a relative import, are seen for what they import
    probe = CORE / "llm" / "_probe.py"
    probe.write_text("from hubbub import Runtime\nfrom ..runtime import stages\n")
    try:
        assert core_imports(probe) >= {"hubbub.runtime", "hubbub.runtime.stages"}
        assert "hubbub.llm._probe imports hubbub.runtime" in " ".join(core_violations())
    finally:
        probe.unlink()
    assert "hubbub.contracts" in core_imports(CORE / "kinds.py")
    assert "hubbub.events.types" in core_imports(CORE / "contracts.py")
    # a cycle is found when there is one
    assert package_of("hubbub.runtime.stages") == "hubbub.runtime"


def test_the_check_sees_imports() -> None:
    found = dict((m, n) for n, m in imports(PACKAGES["hubbub_server"] / "app.py"))
    assert "hubbub.runtime" in found  # the walk really reads import statements
