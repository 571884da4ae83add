"""Tool names: ``<namespace>.<name>``, patterns of names, and the names models are shown.

A tool's full name starts with its namespace (``time`` in ``time.get_current_time``): the
registration of the provider that offers it, or the MCP server it comes from, so that two sources
never collide. Patterns (``time.*``, ``*.search``) use ``*`` for any characters.

Model APIs allow fewer characters in a function's name than hubbub does (OpenAI: letters, digits,
``_`` and ``-``, at most 64): :class:`WireNames` maps names to such names and back, one request
at a time, so that a provider adapts names without anyone else noticing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable
from typing import Any

import msgspec

from hubbub.models import ChatRequest, Message, ToolCall

__all__ = [
    "MAX_NAME",
    "WireNames",
    "matches",
    "name_problem",
    "namespace_of",
    "qualify",
]

MAX_NAME = 128
"""The longest full tool name."""

_NAMESPACE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_LOCAL = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_WIRE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
WIRE_SEPARATOR = "__"
"""What stands for the first ``.`` of a name in the names models see."""


def qualify(namespace: str, name: str) -> str:
    """``name`` with ``namespace`` in front, unless it names one already."""
    return name if "." in name else f"{namespace}.{name}"


def namespace_of(name: str) -> str:
    """The namespace of the full name ``name`` (what comes before its first ``.``)."""
    return name.partition(".")[0]


def name_problem(name: str) -> str | None:
    """What is wrong with ``name`` as a full tool name, or ``None``."""
    if len(name) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    namespace, dot, local = name.partition(".")
    if not dot:
        return "it has no namespace (expected '<namespace>.<name>')"
    if not _NAMESPACE.fullmatch(namespace):
        return "its namespace must be 1 to 32 letters, digits, '_' or '-'"
    if not _LOCAL.fullmatch(local):
        return "its name must be letters, digits, '_', '-' or '.', not starting with '.'"
    return None


def matches(patterns: Iterable[str], name: str) -> bool:
    """Whether ``name`` matches one of ``patterns`` (``*`` for any characters, case
    sensitive)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


class WireNames:
    """Names for one request's tools that model APIs accept, and back.

    ``time.get_current_time`` becomes ``time__get_current_time``; a name that would still not
    fit (other characters, too long, or the same as another's) gets a short hash of the full
    name instead of its tail. Names that are fine as they are (a ``/v1`` client's own tools)
    stay as they are."""

    __slots__ = ("_back", "_to")

    def __init__(self, names: Iterable[str]) -> None:
        self._to: dict[str, str] = {}
        self._back: dict[str, str] = {}
        for name in names:
            if name in self._to:
                continue
            wire = self._wire(name)
            salt = 0
            while wire in self._back:  # two names met on one wire name
                wire = self._hashed(f"{name}#{salt}" if salt else name)
                salt += 1
            self._to[name] = wire
            self._back[wire] = name

    @staticmethod
    def _hashed(name: str) -> str:
        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        head = _UNSAFE.sub("_", name.replace(".", WIRE_SEPARATOR, 1))[: 64 - 11]
        return f"{head}_{digest}"

    def _wire(self, name: str) -> str:
        if _WIRE.fullmatch(name):
            return name
        wire = name.replace(".", WIRE_SEPARATOR, 1)
        if _WIRE.fullmatch(wire):
            return wire
        return self._hashed(name)

    @classmethod
    def of_request(cls, request: ChatRequest) -> WireNames:
        """The names of the tools ``request`` offers and of those its messages called."""
        names = [spec.name for spec in request.tools or ()]
        for message in request.messages:
            names.extend(call.name for call in message.tool_calls or ())
        return cls(names)

    def messages_to_wire(self, messages: list[Message]) -> list[Message]:
        """``messages`` with the tool names they hold (calls, results) as the model sees
        them; the same list when no name changes."""
        if not self.changed:
            return messages
        shown = []
        for message in messages:
            if message.tool_calls:
                calls = [
                    ToolCall(id=c.id, name=self.to_wire(c.name), arguments=c.arguments)
                    for c in message.tool_calls
                ]
                message = msgspec.structs.replace(message, tool_calls=calls)
            elif message.role == "tool" and message.name:
                message = msgspec.structs.replace(message, name=self.to_wire(message.name))
            shown.append(message)
        return shown

    def calls_from_wire(self, calls: list[ToolCall]) -> list[ToolCall]:
        """``calls`` a model made, with the tools' own names."""
        if not self.changed:
            return calls
        return [
            ToolCall(id=c.id, name=self.from_wire(c.name), arguments=c.arguments) for c in calls
        ]

    def choice_to_wire(self, choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        """A request's ``tool_choice`` with the function it names (if any) as the model knows
        it."""
        if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            function = choice["function"]
            if isinstance(function.get("name"), str):
                wire = self.to_wire(function["name"])
                return {**choice, "function": {**function, "name": wire}}
        return choice

    def to_wire(self, name: str) -> str:
        """The name to show the model for ``name`` (``name`` itself when unknown)."""
        return self._to.get(name, name)

    def from_wire(self, wire: str) -> str:
        """The tool name the model meant by ``wire`` (``wire`` itself when unknown: the tool
        registry then answers that no such tool exists)."""
        return self._back.get(wire, wire)

    @property
    def changed(self) -> bool:
        """Whether any name is shown differently."""
        return any(name != wire for name, wire in self._to.items())
