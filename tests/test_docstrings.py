"""The reference documentation is complete: every field of the structs that cross component
boundaries (models, events, contracts, configuration) has an attribute docstring, and every
method of the extension contracts has a docstring. The site renders both."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from types import ModuleType
from typing import Protocol

import msgspec
import pytest

import hubbub
from hubbub import contracts
from hubbub.config.reference import field_docs
from hubbub.events import types as events

MODULES = [
    importlib.import_module(info.name)
    for info in pkgutil.walk_packages(hubbub.__path__, "hubbub.")
    if info.name != "hubbub.testing"
]


def structs(module: ModuleType) -> list[type[msgspec.Struct]]:
    """The msgspec structs defined in ``module`` (not the ones it imports)."""
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, msgspec.Struct)
        and value.__module__ == module.__name__
    ]


def protocols(module: ModuleType) -> list[type]:
    """The protocols defined in ``module``: classes that list ``Protocol`` among their bases."""
    return [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and value.__module__ == module.__name__
        and typing.Protocol in value.__bases__
    ]


def undocumented_fields(struct_type: type[msgspec.Struct]) -> list[str]:
    """Fields without an attribute docstring, in the class or in the base that declares it
    (:func:`field_docs` follows the MRO)."""
    docs = field_docs(struct_type)
    return [
        f"{struct_type.__qualname__}.{name}"
        for name in struct_type.__struct_fields__
        if not docs.get(name, "").strip()
    ]


def undocumented_methods(protocol: type) -> list[str]:
    """Public methods and properties written in ``protocol``'s body without a docstring of
    their own (a docstring inherited from a base does not count)."""
    missing = []
    for name, value in vars(protocol).items():
        if name.startswith("_"):
            continue
        member = getattr(value, "__func__", value)  # staticmethod, classmethod
        is_method = inspect.isfunction(member) or isinstance(member, property)
        if is_method and not (member.__doc__ or "").strip():
            missing.append(f"{protocol.__qualname__}.{name}")
    return missing


# -- the checks can fail -------------------------------------------------------------------


class _Base(msgspec.Struct, kw_only=True):
    inherited: int = 0
    """Documented in the base."""
    bare_in_base: int = 0


class _Child(_Base, kw_only=True):
    documented: int = 0
    """Documented here."""
    bare: int = 0


class _Contract(Protocol):
    async def documented(self) -> None:
        """Has a docstring."""

    async def bare(self) -> None: ...

    @property
    def bare_property(self) -> int: ...

    def _private(self) -> None: ...


def test_field_check_reports_bare_fields_and_follows_the_mro() -> None:
    assert undocumented_fields(_Child) == ["_Child.bare_in_base", "_Child.bare"]
    assert undocumented_fields(_Base) == ["_Base.bare_in_base"]


def test_method_check_reports_bare_methods() -> None:
    assert undocumented_methods(_Contract) == ["_Contract.bare", "_Contract.bare_property"]


def test_discovery_finds_the_classes() -> None:
    found = {cls.__name__ for module in MODULES for cls in structs(module)}
    assert {"Message", "ChatRequest", "MessageDelta", "Credentials", "ToolContext"} <= found
    assert {"Event", "Config", "ServerConfig"} <= found
    assert "Health" not in {cls.__name__ for cls in structs(events)}, "imported, not defined"
    names = {cls.__name__ for cls in protocols(contracts)}
    assert {"Component", "LLMProvider", "Tool", "RedirectAuthMethod", "EventSink"} <= names
    assert "Credentials" not in names


# -- the documentation -----------------------------------------------------------------------


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.__name__)
def test_every_struct_field_has_a_docstring(module: ModuleType) -> None:
    missing = [name for cls in structs(module) for name in undocumented_fields(cls)]
    assert missing == [], f"{module.__name__}: fields without a docstring: " + ", ".join(missing)


def test_every_contract_method_has_a_docstring() -> None:
    missing = [name for cls in protocols(contracts) for name in undocumented_methods(cls)]
    assert missing == [], "contract methods without a docstring: " + ", ".join(missing)
