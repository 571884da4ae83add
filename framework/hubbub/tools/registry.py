"""The tool registry: every tool of the started tool providers, by name, and the one place tool
calls run (with their timeout)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import msgspec

from hubbub.contracts import Tool, ToolContext, ToolProvider
from hubbub.models import Health, ToolCall, ToolResult, ToolSpec

__all__ = ["ToolRegistry"]

logger = logging.getLogger("hubbub.tools")


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
