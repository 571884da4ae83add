"""Tools: the registry the runtime builds from tool providers, and helpers to write tools.

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

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, get_type_hints

import msgspec

from hubbub.contracts import Tool, ToolContext, ToolProvider
from hubbub.models import Health, ToolCall, ToolResult, ToolSpec

__all__ = ["FunctionTool", "StaticToolProvider", "ToolRegistry", "function_tools"]

logger = logging.getLogger("hubbub.tools")


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
                call_id="", name=self._spec.name, is_error=True, content=f"invalid arguments: {exc}"
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


class ToolRegistry:
    """Every tool of the started providers, by name.

    Providers' tool lists are read again whenever tools are listed (and when a call names a
    tool not seen yet), so a provider whose tools change (an MCP server) needs no restart. Two
    providers offering one name is a conflict: the first provider (in configuration order)
    keeps the name, the conflict is logged and health says ``degraded``.
    """

    def __init__(self, providers: Mapping[str, ToolProvider], *, timeout: float) -> None:
        self.providers = dict(providers)
        self.timeout = timeout
        self._tools: dict[str, tuple[str, Tool]] = {}
        self.conflicts: list[str] = []
        """Tool names offered twice, explained."""

    async def start(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Read every provider's tools again."""
        tools: dict[str, tuple[str, Tool]] = {}
        conflicts = []
        for provider_name, provider in self.providers.items():
            for tool in provider.tools():
                name = tool.spec.name
                if name in tools:
                    conflicts.append(
                        f"tool {name!r} is offered by both tool provider {tools[name][0]!r} "
                        f"and {provider_name!r}; {tools[name][0]!r} keeps it"
                    )
                    continue
                tools[name] = (provider_name, tool)
        for conflict in set(conflicts) - set(self.conflicts):
            logger.error("%s", conflict)
        self._tools, self.conflicts = tools, conflicts

    async def health(self) -> Health:
        detail = f"{len(self._tools)} tools"
        if self.conflicts:
            return Health(status="degraded", detail=f"{detail}; " + "; ".join(self.conflicts))
        return Health(detail=detail)

    async def aclose(self) -> None:
        """The providers are components of their own; nothing to release here."""

    def specs(self) -> list[ToolSpec]:
        """Every tool's spec (with ``source`` set to its provider), sorted by name."""
        self.refresh()
        return [
            msgspec.structs.replace(tool.spec, source=provider)
            for _, (provider, tool) in sorted(self._tools.items())
        ]

    async def call(self, call: ToolCall, context: ToolContext) -> ToolResult:
        """Run ``call``. Every failure (unknown tool, bad JSON, exception, timeout) comes back as
        a result with ``is_error=True`` that the model can read; it is never raised."""
        started = time.perf_counter()

        def failed(message: str) -> ToolResult:
            return ToolResult(call_id=call.id, name=call.name, content=message, is_error=True)

        found = self._tools.get(call.name)
        if found is None:
            self.refresh()
            found = self._tools.get(call.name)
        if found is None:
            return failed(f"error: no tool named {call.name!r}")
        try:
            arguments = msgspec.json.decode(call.arguments or "{}")
        except msgspec.DecodeError as exc:
            return failed(f"error: arguments are not valid JSON: {exc}")
        if not isinstance(arguments, dict):
            return failed("error: arguments must be a JSON object")
        try:
            async with asyncio.timeout(self.timeout):
                result = await found[1].call(arguments, context)
        except TimeoutError:
            return failed(f"error: tool {call.name!r} did not finish within {self.timeout:g} s")
        except Exception as exc:
            logger.exception("tool %s failed", call.name, extra={"tool": call.name})
            return failed(f"error: tool {call.name!r} failed: {type(exc).__name__}: {exc}")
        logger.debug("tool %s ran in %.1f ms", call.name, (time.perf_counter() - started) * 1000)
        return msgspec.structs.replace(result, call_id=call.id, name=call.name)
