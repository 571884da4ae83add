"""The tool registry: every tool of the started tool providers, by full name, and the one place
tool calls run.

A call goes: the tool middleware (:mod:`hubbub.middleware`), then innermost the registry's own
path: find the tool, check the caller may use it (:mod:`hubbub.tools.access`), decode and
validate the arguments (every problem goes back to the model as an error result it can read),
wait for a free slot of the tool (its concurrency) and run it, both within its timeout. A call
never raises.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from hubbub.config import ToolRule, ToolsConfig
from hubbub.contracts import Tool, ToolContext, ToolMiddleware, ToolProvider
from hubbub.errors import HubbubError, ToolError
from hubbub.middleware import chain_tool
from hubbub.models import Conversation, Health, Principal, ToolCall, ToolResult, ToolSpec
from hubbub.redaction import describe_error
from hubbub.tools.access import ToolAccess
from hubbub.tools.functions import FunctionTool
from hubbub.tools.names import matches, name_problem, namespace_of, qualify
from hubbub.tools.validation import SchemaValidator

__all__ = ["ToolRegistry", "ToolSet"]

logger = logging.getLogger("hubbub.tools")

MOCK = "mock"
"""The namespace of tools that fake an outside service."""

MAX_CONTENT = 1_000_000
"""The most characters of a result's content kept (and shown to the model); the rest is cut
with a note saying so. Structured ``data`` larger than this once encoded is dropped."""

OFF_LOOP_ARGUMENTS = 32 * 1024
"""Arguments larger than this (bytes of JSON) are checked against their schema on a worker
thread, off the event loop."""


@dataclass(slots=True)
class _Entry:
    """One tool as the registry runs it."""

    provider: str
    tool: Tool
    spec: ToolSpec
    """The effective spec: full name, source, ``[[tools.rules]]`` applied."""
    check: Callable[[dict[str, Any]], str | None]
    """What is wrong with some arguments, or ``None``."""
    slots: asyncio.Semaphore
    timeout: float


def _effective(spec: ToolSpec, source: str, rule: ToolRule | None) -> ToolSpec:
    changes: dict[str, Any] = {"source": source}
    if rule is not None:
        for field in ("timeout", "concurrency", "roles", "scopes"):
            value = getattr(rule, field)
            if value is not None:
                changes[field] = value
    return msgspec.structs.replace(spec, **changes)


def _unchecked(arguments: dict[str, Any]) -> str | None:
    return None


def _checker(tool: Tool) -> Callable[[dict[str, Any]], str | None]:
    if isinstance(tool, FunctionTool):  # converts them to its own type first thing: once is enough
        return _unchecked
    validator = SchemaValidator(tool.spec.parameters)
    if validator.schema_problem:
        logger.warning(
            "tool %s has an invalid argument schema (%s): its arguments are not checked",
            tool.spec.name,
            validator.schema_problem,
        )
    return validator.problem


class ToolRegistry:
    """Every tool of the started providers, by full name (``<namespace>.<name>``).

    Providers' tool lists are read again whenever tools are listed (and when a call names a
    tool not seen yet), so a provider whose tools change (an MCP server) needs no restart;
    tools that did not change keep their state (their concurrency slots). A namespace belongs
    to the first provider (in configuration order) offering it: another provider's tools in it
    are a conflict, logged and reported ``degraded`` in health; so are invalid names.

    :param providers: the started tool providers, by registered name, in configuration order.
    :param config: the ``[tools]`` table (timeouts, limits, filters, rules, mock tools).
    :param middleware: the tool middleware, in registration order (the chain orders them by
        ``priority``; ties keep this order). The registry only calls them: they are components
        their owner starts and stops.
    """

    def __init__(
        self,
        providers: Mapping[str, ToolProvider],
        *,
        config: ToolsConfig | None = None,
        middleware: Sequence[ToolMiddleware] = (),
    ) -> None:
        self.providers = dict(providers)
        self.config = config or ToolsConfig()
        self.middleware: tuple[ToolMiddleware, ...] = tuple(
            sorted(middleware, key=lambda m: m.priority)
        )
        """The middleware every call goes through, in chain order: outermost first."""
        self._entries: dict[str, _Entry] = {}
        self._seen: dict[str, tuple[Tool, ...]] = {}
        self.conflicts: list[str] = []
        """Tools hidden because of their name (a namespace offered twice, an invalid name),
        explained."""

    async def start(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Read every provider's tools again."""
        tools = {name: tuple(provider.tools()) for name, provider in self.providers.items()}
        if all(
            len(tools[name]) == len(self._seen.get(name, ()))
            and all(a is b for a, b in zip(tools[name], self._seen.get(name, ()), strict=True))
            for name in tools
        ):
            return  # nothing changed: the common case, kept cheap
        entries: dict[str, _Entry] = {}
        owners: dict[str, str] = {}
        conflicts = []
        for provider_name, offered in tools.items():
            for tool in offered:
                name = qualify(provider_name, tool.spec.name)
                problem = name_problem(name)
                namespace = namespace_of(name)
                owner = owners.setdefault(namespace, provider_name)
                if problem is None and tool.spec.mock != (namespace == MOCK):
                    problem = (
                        "a tool that fakes an outside service must be in the 'mock' namespace"
                        if tool.spec.mock
                        else "the 'mock' namespace is for tools that fake an outside service"
                    )
                if problem is None and owner != provider_name:
                    problem = f"its namespace {namespace!r} belongs to tool provider {owner!r}"
                if problem is None and name in entries:
                    problem = "the provider offers this name twice"
                if problem is not None:
                    conflicts.append(
                        f"tool {name!r} of tool provider {provider_name!r} is hidden: {problem}"
                    )
                    continue
                entries[name] = self._entry(provider_name, tool, name)
        for conflict in set(conflicts) - set(self.conflicts):
            logger.error("%s", conflict)
        self._entries, self.conflicts, self._seen = entries, conflicts, tools

    def _entry(self, provider: str, tool: Tool, name: str) -> _Entry:
        old = self._entries.get(name)
        if old is not None and old.tool is tool:
            return old
        spec = self.with_rules(msgspec.structs.replace(tool.spec, name=name), provider)
        return _Entry(
            provider=provider,
            tool=tool,
            spec=spec,
            check=_checker(tool),
            slots=asyncio.Semaphore(spec.concurrency or self.config.concurrency),
            timeout=spec.timeout or self.config.call_timeout,
        )

    def with_rules(self, spec: ToolSpec, source: str = "") -> ToolSpec:
        """``spec`` (of a tool named in full) as the registry runs it: from ``source``, with
        the first ``[[tools.rules]]`` entry matching its name applied. Tools served apart from
        the registry (``/mcp``'s ``chat``) are judged by it too."""
        rule = next((r for r in self.config.rules if matches((r.match,), spec.name)), None)
        return _effective(spec, source, rule)

    def _offered(self, entry: _Entry) -> bool:
        return self.config.mock or not entry.spec.mock

    async def health(self) -> Health:
        offered = sum(1 for entry in self._entries.values() if self._offered(entry))
        hidden = len(self._entries) - offered
        detail = f"{offered} tools" + (f" ({hidden} mock tools hidden)" if hidden else "")
        if self.conflicts:
            return Health(status="degraded", detail=f"{detail}; " + "; ".join(self.conflicts))
        return Health(detail=detail)

    async def aclose(self) -> None:
        """The providers are components of their own; nothing to release here."""

    def specs(self) -> list[ToolSpec]:
        """Every tool offered (those faking a service only when ``[tools] mock = true``),
        sorted by name, whoever asks: :meth:`for_caller` filters them for a caller."""
        self.refresh()
        return [e.spec for _, e in sorted(self._entries.items()) if self._offered(e)]

    def for_caller(
        self, principal: Principal | None, *, conversation: Conversation | None = None
    ) -> ToolSet:
        """The tools ``principal`` may use, in ``conversation`` when given (see
        :mod:`hubbub.tools.access`)."""
        return ToolSet(self, ToolAccess.of(principal, self.config, conversation), principal)

    async def call(self, call: ToolCall, context: ToolContext) -> ToolResult:
        """Run ``call`` for ``context.principal`` (outside any conversation's own filter):
        ``for_caller(context.principal).call(call, context)``."""
        return await self.for_caller(context.principal).call(call, context)

    def _find(self, name: str) -> _Entry | None:
        entry = self._entries.get(name)
        if entry is None:
            self.refresh()
            entry = self._entries.get(name)
        return entry if entry is not None and self._offered(entry) else None

    async def _run(self, access: ToolAccess, call: ToolCall, context: ToolContext) -> ToolResult:
        """The innermost handler: find the tool, check access and arguments, run it in time."""
        entry = self._find(call.name)
        if entry is None or not access.allows(entry.spec):
            return _failed(call, f"error: no tool named {call.name!r} is available")
        size = len(call.arguments.encode()) if call.arguments else 0
        if size > self.config.max_argument_bytes:
            return _failed(
                call,
                f"error: arguments of {size} bytes are more than the "
                f"{self.config.max_argument_bytes} a tool call may carry",
            )
        try:
            arguments = msgspec.json.decode(call.arguments or "{}")
        except (msgspec.DecodeError, RecursionError, ValueError) as exc:
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            return _failed(call, f"error: arguments are not valid JSON: {reason}")
        if not isinstance(arguments, dict):
            return _failed(call, "error: arguments must be a JSON object")
        if size > OFF_LOOP_ARGUMENTS:
            problem = await asyncio.to_thread(entry.check, arguments)
        else:
            problem = entry.check(arguments)
        if problem is not None:
            return _failed(call, f"error: invalid arguments: {problem}")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(entry.timeout), entry.slots:
                result = await entry.tool.call(arguments, context)
        except TimeoutError:
            return _failed(
                call, f"error: tool {call.name!r} did not finish within {entry.timeout:g} s"
            )
        except ToolError as exc:
            return _failed(call, f"error: {exc}")
        except Exception as exc:
            logger.exception("tool %s failed", call.name, extra={"tool": call.name})
            return _failed(call, f"error: tool {call.name!r} failed: {describe_error(exc)}")
        logger.debug("tool %s ran in %.1f ms", call.name, (time.perf_counter() - started) * 1000)
        return _bounded(result, call)


class ToolSet:
    """The tools one caller may use in one place, and the way to call them
    (:meth:`ToolRegistry.for_caller`)."""

    __slots__ = ("_access", "_call", "_principal", "_registry")

    def __init__(
        self, registry: ToolRegistry, access: ToolAccess, principal: Principal | None
    ) -> None:
        self._registry = registry
        self._access = access
        self._principal = principal
        self._call = chain_tool(
            registry.middleware, lambda call, context: registry._run(access, call, context)
        )

    def specs(self) -> list[ToolSpec]:
        """The tools the caller may use, sorted by name."""
        return [spec for spec in self._registry.specs() if self._access.allows(spec)]

    def allows(self, name: str) -> bool:
        """Whether the caller may use the tool ``name`` (which exists now)."""
        entry = self._registry._find(name)
        return entry is not None and self._access.allows(entry.spec)

    async def call(self, call: ToolCall, context: ToolContext) -> ToolResult:
        """Run ``call`` through the middleware. Every failure (unknown or forbidden tool, bad
        JSON, invalid arguments, exception, timeout, a middleware's refusal) comes back as a
        result with ``is_error=True`` that the model can read; it is never raised. The tool
        runs for the caller the set was made for, whoever ``context`` names."""
        if context.principal is not self._principal:
            context = msgspec.structs.replace(context, principal=self._principal)
        try:
            return await self._call(call, context)
        except HubbubError as exc:  # a middleware refused the call
            return _failed(call, f"error: {exc}")
        except Exception as exc:
            logger.exception("tool middleware failed on %s", call.name, extra={"tool": call.name})
            return _failed(call, f"error: tool {call.name!r} failed: {describe_error(exc)}")


def _bounded(result: ToolResult, call: ToolCall) -> ToolResult:
    """``result`` answering ``call``, its content cut at :data:`MAX_CONTENT` characters and
    its ``data`` dropped when larger than that."""
    content, data = result.content, result.data
    if len(content) > MAX_CONTENT:
        cut = len(content) - MAX_CONTENT
        content = f"{content[:MAX_CONTENT]}\n[{cut} more characters cut]"
    if data is not None and not isinstance(data, bool | int | float):
        try:
            too_large = len(msgspec.json.encode(data)) > MAX_CONTENT
        except (TypeError, ValueError, OverflowError):  # not JSON: clients could not read it
            too_large = True
        if too_large:
            data = None
    return msgspec.structs.replace(
        result, call_id=call.id, name=call.name, content=content, data=data
    )


def _failed(call: ToolCall, message: str) -> ToolResult:
    return ToolResult(call_id=call.id, name=call.name, content=message, is_error=True)
