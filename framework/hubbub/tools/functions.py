"""Writing tools as typed ``async`` functions.

:func:`tool` (or :class:`FunctionTool`) turns an annotated ``async`` function into a
:class:`~hubbub.contracts.Tool`: the JSON Schema models are shown comes from its signature
(through msgspec), the arguments a model sends are validated against it before the function
runs (invalid ones go back to the model as an error it can correct), and the return annotation
gives the schema of the result. :func:`function_tools` makes a provider of several::

    class Forecast(msgspec.Struct):
        city: str
        celsius: float

    @tool(timeout=10, concurrency=4)
    async def forecast(city: str, days: int = 1) -> Forecast:
        \"\"\"The weather forecast for a city.\"\"\"
        ...

    @hookimpl
    def register_tools(register):
        register("weather", lambda context: function_tools(forecast))  # weather.forecast

The arguments are either ordinary parameters, or a single parameter annotated with a
:class:`msgspec.Struct` type whose fields are the arguments. A parameter annotated
:class:`~hubbub.contracts.ToolContext` receives the call's context instead. A ``str`` result is
the content as it is; any other result is sent to the model as JSON and kept as the result's
``data``. Raise :class:`hubbub.errors.ToolError` for a failure the model should read.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, get_type_hints, overload

import msgspec

from hubbub.contracts import Tool, ToolContext
from hubbub.models import Health, ToolResult, ToolSpec

__all__ = ["FunctionTool", "StaticToolProvider", "argument_problem", "function_tools", "tool"]

_AT = re.compile(r"^(?P<message>.*?) - at `\$\.?(?P<path>[^`]*)`$", re.S)


def argument_problem(exc: msgspec.ValidationError) -> str:
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


def _schema_of(kind: Any) -> dict[str, Any]:
    """The JSON Schema of ``kind``, with its definitions inlined at the top when it is a
    struct (models want the arguments' object itself, not a ``$ref`` to it)."""
    schema = msgspec.json.schema(kind)
    definitions = schema.pop("$defs", {})
    name = getattr(kind, "__name__", "")
    if name in definitions and schema.get("$ref") == f"#/$defs/{name}":
        schema = definitions.pop(name)
    if definitions:
        schema = {**schema, "$defs": definitions}
    schema.pop("title", None)
    return schema


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


class FunctionTool:
    """A :class:`hubbub.contracts.Tool` backed by an ``async`` function (see the module's
    description for what its signature may be).

    :param name: the tool's name; default: the function's. The registry puts the provider's
        namespace in front of it (``basic.calculator``).
    :param description: what it does, for the model; default: the function's docstring.
    :param timeout: seconds a call may take; default: ``[tools] call_timeout``.
    :param concurrency: calls at once in one process; default: ``[tools] concurrency``.
    :param roles: roles of which a caller must hold one; default: anyone.
    :param scopes: scopes of which a restricted credential must hold one; default: none.
    :param mock: it fakes an outside service (namespace ``mock``, offered only when
        ``[tools] mock = true``; say so in the description too).
    """

    def __init__(
        self,
        func: Callable[..., Awaitable[Any]],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        concurrency: int | None = None,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = (),
        mock: bool = False,
    ) -> None:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"tool {func.__name__!r} must be an async function")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"tool {func.__name__!r}: timeout must be more than 0")
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"tool {func.__name__!r}: concurrency must be at least 1")
        self._func = func
        tool_name = name or func.__name__
        hints = get_type_hints(func, include_extras=True)
        self._context_param: str | None = None
        self._struct_param: str | None = None
        fields: list[Any] = []
        arguments = []
        for param in inspect.signature(func).parameters.values():
            if hints.get(param.name, Any) is ToolContext:
                self._context_param = param.name
            else:
                arguments.append(param)
        if len(arguments) == 1 and _is_struct(hints.get(arguments[0].name)):
            self._struct_param = arguments[0].name
            self._arguments: type[msgspec.Struct] = hints[arguments[0].name]
        else:
            for param in arguments:
                annotation = hints.get(param.name, Any)
                if param.default is inspect.Parameter.empty:
                    fields.append((param.name, annotation))
                else:
                    fields.append((param.name, annotation, param.default))
            self._arguments = msgspec.defstruct(
                f"{tool_name}_arguments", fields, kw_only=True, forbid_unknown_fields=True
            )
        schema = _schema_of(self._arguments)
        schema.setdefault("properties", {})
        returns = hints.get("return", Any)
        output = None if returns in (Any, str, None, type(None)) else _schema_of(returns)
        self._spec = ToolSpec(
            name=tool_name,
            description=description or inspect.getdoc(func) or "",
            parameters=schema,
            output_schema=output,
            timeout=timeout,
            concurrency=concurrency,
            roles=sorted(roles),
            scopes=sorted(scopes),
            mock=mock,
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
                content=f"error: invalid arguments: {argument_problem(exc)}",
            )
        if self._struct_param is not None:
            kwargs: dict[str, Any] = {self._struct_param: parsed}
        else:
            kwargs = {f: getattr(parsed, f) for f in parsed.__struct_fields__}
        if self._context_param:
            kwargs[self._context_param] = context
        value = await self._func(**kwargs)
        if isinstance(value, str):
            return ToolResult(call_id="", name=self._spec.name, content=value)
        data = msgspec.to_builtins(value)
        content = msgspec.json.encode(data).decode()
        return ToolResult(call_id="", name=self._spec.name, content=content, data=data)


@overload
def tool(func: Callable[..., Awaitable[Any]], /) -> FunctionTool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    concurrency: int | None = None,
    roles: Iterable[str] = (),
    scopes: Iterable[str] = (),
    mock: bool = False,
) -> Callable[[Callable[..., Awaitable[Any]]], FunctionTool]: ...


def tool(
    func: Callable[..., Awaitable[Any]] | None = None,
    /,
    **options: Any,
) -> FunctionTool | Callable[[Callable[..., Awaitable[Any]]], FunctionTool]:
    """Make a :class:`FunctionTool` of an ``async`` function: ``@tool`` or
    ``@tool(timeout=10, roles=["admin"])`` (the options of :class:`FunctionTool`)."""
    if func is not None:
        return FunctionTool(func, **options)
    return lambda f: FunctionTool(f, **options)


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


def function_tools(*funcs: Callable[..., Awaitable[Any]] | Tool) -> StaticToolProvider:
    """A tool provider offering each ``async`` function (or ready tool, such as one made with
    :func:`tool`) as a tool; a function's tool is named after it."""
    return StaticToolProvider(
        [FunctionTool(f) if inspect.iscoroutinefunction(f) else f for f in funcs]  # type: ignore[misc]
    )
