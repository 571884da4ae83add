"""The runtime's start stages, declared in dependency order.

A stage is a small named step with an order number. The runtime's own stages (the data directory,
the event bus, the aggregates it builds over plugin components, the conversation engine, the
``on_startup`` hooks) are fixed here; every managed kind of :data:`hubbub.kinds.KINDS` adds one
stage that starts its selected components, at the kind's :attr:`~hubbub.kinds.KindSpec.stage`.
The runtime's aggregates follow their kind wherever the kinds table puts it. The whole order, by
default::

     0  data directory            41  authenticator
     5  event_log components      45  llm_middleware components
    10  event bus                 50  llm components
    11  events components (sinks) 51  LLM client
    20  cache components          55  tool_middleware components
    30  memory components         60  tools components
    30.5 memory sweeper
    40  auth components           61  tool registry
                                  70  conversation engine
                                 100  on_startup hooks

Stopping runs in the reverse order of what actually started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from hubbub.auth import Authenticator, ProvisioningMarker
from hubbub.auth.apikeys import ApiKeys
from hubbub.auth.keyfiles import KeyringSource
from hubbub.auth.keylimits import KeyRateLimiter
from hubbub.auth.limits import LoginLimiter
from hubbub.auth.login import Logins
from hubbub.auth.passwords import Passwords
from hubbub.auth.sessions import SessionManager
from hubbub.auth.users import Users
from hubbub.conversation import ConversationEngine
from hubbub.conversation.context import ContextBuilder
from hubbub.events.sinks import SinkRunner
from hubbub.kinds import KindSpec
from hubbub.llm import LLMClient
from hubbub.llm.routing import RoutePolicy
from hubbub.llm.tokens import TokenCounter
from hubbub.memory import LongTermMemory, Quotas, Sweeper
from hubbub.registry import ComponentContext
from hubbub.tools import ToolRegistry

if TYPE_CHECKING:
    from hubbub.runtime.runtime import Runtime

__all__ = ["CORE_STAGES", "Stage", "stages"]


@dataclass(frozen=True)
class Stage:
    """One step of starting a runtime."""

    order: float
    """Stages run in increasing order (ties keep declaration order)."""
    name: str
    """Logged with the stage's duration."""
    run: Callable[[Runtime], Awaitable[None]]
    """The step itself."""
    after: str | None = None
    """A kind this stage follows at once (its ``order`` is then the kind's stage plus this
    ``order``): the aggregate built over a kind's components starts right after them, wherever
    the kinds table puts the kind."""


async def _data_dir(runtime: Runtime) -> None:
    path = runtime.config.data_dir
    await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)


async def _event_bus(runtime: Runtime) -> None:
    await runtime.start_core("events", "blinker", runtime.events)


async def _accounts(runtime: Runtime) -> None:
    if not runtime.has_accounts:
        return
    config = runtime.config
    store = runtime.accounts
    plugins = runtime.plugins

    async def screen(password: str, user: str) -> str | None:
        reason = await plugins.acall_first("check_new_password", password=password, user=user)
        return None if reason is None else str(reason)

    hooked = plugins.has_implementations("check_new_password")
    users = Users(store, Passwords(config.passwords), screen if hooked else None)
    await runtime.start_core("users", "accounts", users)
    registered = runtime.plugins.registries()["accounts"].names()
    [account_store, *_] = runtime.kinds["accounts"].selected(config, registered)
    keys = KeyringSource(config, account_store=account_store)
    keyring = await asyncio.to_thread(keys.load)
    sessions = SessionManager(
        store,
        keyring,
        config.sessions,
        runtime.events,
        keys=keys,
        spawn=lambda coro, name: runtime.spawn(coro, name=name),
    )
    await runtime.start_core("sessions", "accounts", sessions)
    api_keys = ApiKeys(
        store,
        runtime.events,
        check_interval=config.sessions.check_interval,
        limiter=KeyRateLimiter(runtime.cache, config.auth.requests_per_minute_per_key),
        marker=ProvisioningMarker(config.data_dir),
        spawn=lambda coro, name: runtime.spawn(coro, name=name),
    )
    await runtime.start_core("api_keys", "accounts", api_keys)


async def _authenticator(runtime: Runtime) -> None:
    # Local mode stays off until the host decides (the server: only when bound to loopback).
    # The marker keeps a lost credential store from re-opening local mode (hubbub.auth).
    marker = ProvisioningMarker(runtime.config.data_dir)
    sessions = runtime.sessions if runtime.has_accounts else None
    api_keys = runtime.api_keys if runtime.has_accounts else None
    authenticator = Authenticator(
        runtime.auth_methods, marker=marker, sessions=sessions, api_keys=api_keys
    )
    await runtime.start_core("auth", "authenticator", authenticator)
    if sessions is None:
        return
    limiter = LoginLimiter(runtime.cache, runtime.config.auth)
    logins = Logins(authenticator, sessions, runtime.cache, limiter, runtime.users)
    await runtime.start_core("logins", "accounts", logins)


async def _llm_client(runtime: Runtime) -> None:
    config = runtime.config
    middleware = list(runtime.components("llm_middleware").values())
    hooks = runtime.plugins
    if hooks.has_implementations("before_llm_request") or hooks.has_implementations(
        "after_llm_response"
    ):
        middleware.append(runtime.hook_middleware())
    client = LLMClient(
        runtime.components("llm"),
        default_model=config.llm.default_model,
        timeout=config.llm.request_timeout,
        middleware=middleware,
        events=runtime.events,
        policy=RoutePolicy(
            attempt_timeout=config.llm.request_timeout,
            deadline=config.llm.deadline,
            retries=config.llm.retries,
            retry_delay=config.llm.retry_delay,
            retry_max_delay=config.llm.retry_max_delay,
            breaker_failures=config.llm.breaker_failures,
            breaker_reset=config.llm.breaker_reset,
        ),
        fallbacks=config.llm.fallbacks,
    )
    await runtime.start_core("llm", "client", client)


async def _tool_registry(runtime: Runtime) -> None:
    registry = ToolRegistry(
        runtime.components("tools"),
        config=runtime.config.tools,
        middleware=list(runtime.components("tool_middleware").values()),
    )
    await runtime.start_core("tools", "registry", registry, critical=False)


async def _sweeper(runtime: Runtime) -> None:
    sweeper = Sweeper(runtime.memory, runtime.cache, runtime.config.retention)
    await runtime.start_core("sweeper", "memory", sweeper, critical=False)


async def _conversations(runtime: Runtime) -> None:
    config = runtime.config
    store, llm, cache = runtime.memory, runtime.llm, runtime.cache
    quotas = Quotas(store, cache, config.quotas)
    context = ContextBuilder(
        store,
        llm,
        TokenCounter(),
        config.context,
        LongTermMemory(store, quotas, config.retention),
        history_limit=config.llm.history_messages,
        cache=cache,
        spawn=lambda coro, name: runtime.spawn(coro, name=name),
    )
    engine = ConversationEngine(
        store,
        llm,
        runtime.tools,
        runtime.events,
        cache=cache,
        context=context,
        quotas=quotas,
        max_tool_rounds=config.llm.max_tool_rounds,
        spawn=lambda coro, name: runtime.spawn(coro, name=name, drain=True),
    )
    await runtime.start_core("conversations", "engine", engine)


async def _on_startup(runtime: Runtime) -> None:
    await runtime.plugins.acall_each("on_startup", runtime=runtime)


CORE_STAGES: tuple[Stage, ...] = (
    Stage(0, "data directory", _data_dir),
    Stage(10, "event bus", _event_bus),
    Stage(0.5, "users and sessions", _accounts, after="accounts"),
    Stage(0.5, "authenticator", _authenticator, after="auth"),
    Stage(0.5, "LLM client", _llm_client, after="llm"),
    Stage(0.5, "tool registry", _tool_registry, after="tools"),
    Stage(0.5, "memory sweeper", _sweeper, after="memory"),
    Stage(70, "conversation engine", _conversations),
    Stage(100, "on_startup hooks", _on_startup),
)
"""The runtime's own stages."""


def _kind_stage(spec: KindSpec) -> Stage:
    async def run(runtime: Runtime) -> None:
        await runtime.start_kind(spec)

    return Stage(spec.stage, f"{spec.name} components", run)


def stages(kinds: Sequence[KindSpec]) -> list[Stage]:
    """Every stage for these kinds, in start order."""
    by_name = {spec.name: spec for spec in kinds}
    declared = [_kind_stage(spec) for spec in kinds if spec.managed]
    for stage in CORE_STAGES:
        if stage.after is not None:
            stage = replace(stage, order=by_name[stage.after].stage + stage.order)
        declared.append(stage)
    return sorted(declared, key=lambda stage: stage.order)


def _run_sink(runtime: Runtime, context: ComponentContext[Any], sink: Any) -> SinkRunner:
    # Half the stop timeout to drain, so the sink's own aclose() still has time.
    drain = runtime.config.runtime.stop_timeout / 2
    return SinkRunner(context.name, sink, runtime.events, drain=drain)


def _use_log(runtime: Runtime, context: ComponentContext[Any], log: Any) -> Any:
    runtime.events.use(log)
    return log


WRAPPERS: dict[str, Callable[[Runtime, ComponentContext[Any], Any], Any]] = {
    "events": _run_sink,
    "event_log": _use_log,
}
"""How the runtime runs the components of a kind, where it does more than start them: each
event sink gets its own bounded subscription of the bus, and the event log becomes the bus's."""
