"""The tool registry: every tool of the started tool providers, by name, and the one place tool
calls run: through the tool middleware (:mod:`hubbub.middleware`), then with their timeout."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

import msgspec

from hubbub.contracts import Tool, ToolContext, ToolMiddleware, ToolProvider
from hubbub.errors import HubbubError
from hubbub.middleware import chain_tool
from hubbub.models import Health, ToolCall, ToolResult, ToolSpec
from hubbub.redaction import describe_error

__all__ = ["ToolRegistry"]

logger = logging.getLogger("hubbub.tools")


class ToolRegistry:
    """Every tool of the started providers, by name.

    Providers' tool lists are read again whenever tools are listed (and when a call names a
    tool not seen yet), so a provider whose tools change (an MCP server) needs no restart. Two
    providers offering one name is a conflict: the first provider (in configuration order)
    keeps the name, the conflict is logged and health says ``degraded``.

    :param providers: the started tool providers, by registered name, in configuration order.
    :param timeout: seconds a tool may run.
    :param middleware: the tool middleware, in registration order (the chain orders them by
        ``priority``; ties keep this order). The registry only calls them: they are components
        their owner starts and stops.
    """

    def __init__(
        self,
        providers: Mapping[str, ToolProvider],
        *,
        timeout: float,
        middleware: Sequence[ToolMiddleware] = (),
    ) -> None:
        self.providers = dict(providers)
        self.timeout = timeout
        self.middleware: tuple[ToolMiddleware, ...] = tuple(
            sorted(middleware, key=lambda m: m.priority)
        )
        """The middleware every call goes through, in chain order: outermost first."""
        self._call = chain_tool(self.middleware, self._run)
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
        """Run ``call`` through the middleware. Every failure (unknown tool, bad JSON,
        exception, timeout, a middleware's refusal) comes back as a result with
        ``is_error=True`` that the model can read; it is never raised."""
        try:
            return await self._call(call, context)
        except HubbubError as exc:  # a middleware refused the call
            return _failed(call, f"error: {exc}")
        except Exception as exc:
            logger.exception("tool middleware failed on %s", call.name, extra={"tool": call.name})
            return _failed(call, f"error: tool {call.name!r} failed: {describe_error(exc)}")

    async def _run(self, call: ToolCall, context: ToolContext) -> ToolResult:
        """The innermost handler: find the tool, decode the arguments, run it in time."""
        started = time.perf_counter()

        found = self._tools.get(call.name)
        if found is None:
            self.refresh()
            found = self._tools.get(call.name)
        if found is None:
            return _failed(call, f"error: no tool named {call.name!r}")
        try:
            arguments = msgspec.json.decode(call.arguments or "{}")
        except (msgspec.DecodeError, RecursionError, ValueError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            return _failed(call, f"error: arguments are not valid JSON: {reason}")
        if not isinstance(arguments, dict):
            return _failed(call, "error: arguments must be a JSON object")
        try:
            async with asyncio.timeout(self.timeout):
                result = await found[1].call(arguments, context)
        except TimeoutError:
            return _failed(
                call, f"error: tool {call.name!r} did not finish within {self.timeout:g} s"
            )
        except Exception as exc:
            logger.exception("tool %s failed", call.name, extra={"tool": call.name})
            return _failed(call, f"error: tool {call.name!r} failed: {describe_error(exc)}")
        logger.debug("tool %s ran in %.1f ms", call.name, (time.perf_counter() - started) * 1000)
        return msgspec.structs.replace(result, call_id=call.id, name=call.name)


def _failed(call: ToolCall, message: str) -> ToolResult:
    return ToolResult(call_id=call.id, name=call.name, content=message, is_error=True)
