"""Writing tools as plain functions.

:func:`function_tools` turns annotated ``async`` functions into a :class:`ToolProvider`; the JSON
Schema of each tool's arguments comes from its signature (through msgspec), and arguments are
validated against it before the function runs::

    async def add(a: float, b: float) -> float:
        \"\"\"Add two numbers.\"\"\"
        return a + b

    @hookimpl
    def register_tools(register):
        register("arithmetic", lambda context: function_tools(add))
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, get_type_hints

import msgspec

from hubbub.contracts import Tool, ToolContext
from hubbub.models import Health, ToolResult, ToolSpec

__all__ = ["FunctionTool", "StaticToolProvider", "function_tools"]

_AT = re.compile(r"^(?P<message>.*?) - at `\$\.?(?P<path>[^`]*)`$", re.S)


def _argument_problem(exc: msgspec.ValidationError) -> str:
    """msgspec's message about the arguments, in words a model can act on:
    ``timezone: expected 'str', got 'int'``, ``missing argument 'expression'``."""
    text = str(exc)
    match = _AT.match(text)
    message, path = (match.group("message"), match.group("path")) if match else (text, "")
    message = message.replace("`", "'")
    message = message.replace("Object missing required field ", "missing argument ")
    message = message.replace("Object contains unknown field ", "unknown argument ")
    message = message[:1].lower() + message[1:]
    return f"{path}: {message}" if path else message


class FunctionTool:
    """A :class:`hubbub.contracts.Tool` backed by an ``async`` function.

    Parameters annotated with :class:`ToolContext` receive the call's context instead of model
    arguments. The return value becomes the result's ``content`` (strings as they are, anything
    else as JSON) and ``data``.
    """

    def __init__(
        self,
        func: Callable[..., Awaitable[Any]],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"tool {func.__name__!r} must be an async function")
        self._func = func
        hints = get_type_hints(func)
        self._context_param: str | None = None
        fields: list[Any] = []
        for param in inspect.signature(func).parameters.values():
            annotation = hints.get(param.name, Any)
            if annotation is ToolContext:
                self._context_param = param.name
                continue
            if param.default is inspect.Parameter.empty:
                fields.append((param.name, annotation))
            else:
                fields.append((param.name, annotation, param.default))
        tool_name = name or func.__name__
        self._arguments = msgspec.defstruct(
            f"{tool_name}_arguments", fields, kw_only=True, forbid_unknown_fields=True
        )
        schema = msgspec.json.schema(self._arguments)
        definitions = schema.pop("$defs", {})
        parameters = definitions.get(self._arguments.__name__, schema)
        if definitions and len(definitions) > 1:
            parameters = {
                **parameters,
                "$defs": {k: v for k, v in definitions.items() if k != self._arguments.__name__},
            }
        parameters.pop("title", None)
        parameters.setdefault("properties", {})
        self._spec = ToolSpec(
            name=tool_name,
            description=description or inspect.getdoc(func) or "",
            parameters=parameters,
        )

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        try:
            parsed = msgspec.convert(arguments, self._arguments)
        except msgspec.ValidationError as exc:
            return ToolResult(
                call_id="",
                name=self._spec.name,
                is_error=True,
                content=f"error: invalid arguments: {_argument_problem(exc)}",
            )
        kwargs = msgspec.structs.asdict(parsed)
        if self._context_param:
            kwargs[self._context_param] = context
        value = await self._func(**kwargs)
        content = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        return ToolResult(call_id="", name=self._spec.name, content=content, data=value)


class StaticToolProvider:
    """A :class:`hubbub.contracts.ToolProvider` with a fixed list of tools."""

    def __init__(self, tools: Sequence[Tool]) -> None:
        self._tools = list(tools)

    def tools(self) -> Sequence[Tool]:
        return self._tools

    async def start(self) -> None:
        """Nothing to acquire."""

    async def health(self) -> Health:
        return Health(detail=f"{len(self._tools)} tools")

    async def aclose(self) -> None:
        """Nothing to release."""


def function_tools(*funcs: Callable[..., Awaitable[Any]]) -> StaticToolProvider:
    """A tool provider offering each ``async`` function as a tool named after it."""
    return StaticToolProvider([FunctionTool(func) for func in funcs])
