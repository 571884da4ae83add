"""The kinds of component a plugin can provide, declared once.

Each :class:`KindSpec` says everything hubbub needs to know about one kind: the registration hook
that collects it, the :class:`typing.Protocol` its components satisfy (the methods checked at
build time are read from the Protocol itself), where the configuration selects it, whether one or
many are used, whether a failure stops startup, when it starts, and whether it may fall back.
Registration checks, configuration checks, selection, start order, health and ``hubbub plugins``
are all derived from :data:`KINDS`; adding a kind is one entry here plus its Protocol (and, when
the configuration selects it, its ``[section]`` struct).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from hubbub.contracts import (
    AccountStore,
    AuthMethod,
    BudgetLedger,
    CacheBackend,
    EventLog,
    EventSink,
    LLMMiddleware,
    LLMProvider,
    MemoryStore,
    RedirectAuthMethod,
    ToolMiddleware,
    ToolProvider,
)

__all__ = ["KINDS", "KindSpec", "Member", "Selection", "kinds_by_name", "protocol_members"]

Selection = Literal["one", "listed", "all_unless_listed", "all"]
"""How the configuration chooses among the registered names of a kind:

* ``one``: ``[section] <key> = "name"`` (plus ``fallback = "name"`` when the kind allows one);
* ``listed``: ``[section] <key> = ["a", "b"]``, in that order;
* ``all_unless_listed``: like ``listed``, but every registered name when the key is unset;
* ``all``: every registered name, always.
"""


@dataclass(frozen=True)
class Member:
    """One member a Protocol requires of a component."""

    name: str
    """The attribute's name."""
    form: Literal["coroutine", "callable", "attribute"]
    """``coroutine`` (an ``async def`` method), ``callable`` (a plain method or an async
    generator) or ``attribute`` (a property or a plain attribute)."""


def protocol_members(protocol: type) -> list[Member]:
    """The members ``protocol`` declares, its Protocol bases' included, in declaration order."""
    members: dict[str, Member] = {}
    for cls in reversed(protocol.__mro__):
        if cls in (object, Protocol) or not getattr(cls, "_is_protocol", False):
            continue
        for name in getattr(cls, "__annotations__", {}):
            if not name.startswith("_"):
                members[name] = Member(name, "attribute")
        for name, value in vars(cls).items():
            if name.startswith("_"):
                continue
            if inspect.iscoroutinefunction(value):
                members[name] = Member(name, "coroutine")
            elif inspect.isfunction(value):
                members[name] = Member(name, "callable")
            elif isinstance(value, property):
                members[name] = Member(name, "attribute")
    return list(members.values())


@dataclass(frozen=True)
class KindSpec:
    """Everything hubbub knows about one kind of component."""

    name: str
    """The kind's name: registry key, health label prefix, ``hubbub plugins`` label."""
    hook: str
    """The registration hook that collects it, e.g. ``register_cache_backends``."""
    protocol: type | None
    """The Protocol its components satisfy; ``None`` when factories return something the
    runtime does not manage (route handlers)."""
    title: str
    """What one of them is called in messages, e.g. ``cache backend``."""
    selection: Selection
    """How the configuration chooses among the registered names."""
    section: str | None = None
    """The configuration table that selects it (``cache`` for ``[cache]``)."""
    key: str | None = None
    """The key in that table: ``backend``, ``methods``, ``providers``, ``sinks``..."""
    critical: bool = True
    """Whether a failure to build or start stops startup (else it is reported ``down``)."""
    fallback: bool = False
    """Whether ``[section] fallback = "name"`` may name a stand-in for a primary that fails."""
    stage: int = 50
    """Start order: kinds start in increasing stage, between the runtime's own stages
    (the event bus at 10, the authenticator at 41, the LLM client at 51, the tool registry at
    61, the conversation engine at 70)."""
    variants: tuple[type, ...] = ()
    """Richer Protocols a component may also satisfy: one that has any member of a variant
    must have all of them (an auth method with ``login_url`` must be a full
    :class:`~hubbub.contracts.RedirectAuthMethod`)."""
    description: str = field(default="", compare=False)
    """One line for documentation and ``hubbub plugins``."""
    live_fallback: Callable[[Any, Any, str, str, Any], Any] | None = field(
        default=None, compare=False
    )
    """For kinds whose fallback also stands in while running:
    ``live_fallback(primary, fallback, primary_name, fallback_name, config)`` builds the
    component that serves (both backends started). ``None``: the fallback serves only when
    the primary cannot start."""

    default: Callable[[Any, Sequence[str]], Any] | None = field(default=None, compare=False)
    """For kinds whose ``[section] key`` may be left unset: ``default(config, registered)``
    picks the name then, or ``None`` for none (the account store follows ``[memory]
    backend``)."""

    @property
    def managed(self) -> bool:
        """Whether the runtime starts, health-checks and stops these components."""
        return self.protocol is not None

    def configured(self, config: Any) -> Any:
        """The value of ``[section] key`` in ``config`` (``None`` when the kind has none)."""
        if self.section is None or self.key is None:
            return None
        return getattr(getattr(config, self.section), self.key)

    def fallback_name(self, config: Any) -> str | None:
        """The configured fallback, for kinds that allow one."""
        if not self.fallback or self.section is None:
            return None
        value: str | None = getattr(getattr(config, self.section), "fallback", None)
        return value

    def selected(self, config: Any, registered: Iterable[str]) -> list[str]:
        """The names ``config`` selects, primary before fallback, valid or not."""
        value = self.configured(config)
        if value is None and self.default is not None:
            value = self.default(config, list(registered))
        if self.selection == "all" or (self.selection == "all_unless_listed" and value is None):
            return sorted(registered)
        if self.selection == "one":
            return [n for n in (value, self.fallback_name(config)) if n is not None]
        return list(value or ())

    def config_paths(self, config: Any) -> list[tuple[str, str]]:
        """``(dotted path, name)`` for every name the configuration gives explicitly."""
        if self.section is None or self.key is None:
            return []
        value = self.configured(config)
        if self.selection == "one":
            paths = [(f"{self.section}.{self.key}", value)] if value is not None else []
            fallback = self.fallback_name(config)
            if fallback:
                paths.append((f"{self.section}.fallback", fallback))
            return paths
        return [(f"{self.section}.{self.key}[{i}]", name) for i, name in enumerate(value or ())]


def _live_cache(
    primary: Any, fallback: Any, primary_name: str, fallback_name: str, config: Any
) -> Any:
    from hubbub.cache import FallbackCache

    return FallbackCache(
        primary,
        fallback,
        primary_name=primary_name,
        fallback_name=fallback_name,
        timeout=config.cache.timeout,
    )


def _default_accounts(config: Any, registered: Sequence[str]) -> str | None:
    for name in (config.memory.backend, "sqlite"):
        if name in registered:
            return str(name)
    return None


DEFAULT_AUTH_METHODS = ("api_key", "local")
"""The auth methods enabled when ``[auth] methods`` is unset (those registered)."""


def _default_auth(config: Any, registered: Sequence[str]) -> list[str]:
    return [name for name in DEFAULT_AUTH_METHODS if name in registered]


def _default_budget_ledger(config: Any, registered: Sequence[str]) -> str | None:
    # Budgets shared like the cache: Redis when the cache is, else this process's memory.
    for name in ("redis" if config.cache.backend == "redis" else "memory", "memory"):
        if name in registered:
            return name
    return None


KINDS: tuple[KindSpec, ...] = (
    KindSpec(
        "event_log",
        "register_event_logs",
        EventLog,
        "event log",
        "one",
        section="events",
        key="backend",
        stage=5,
        description="The ordered log events go through (one process, or shared by several).",
    ),
    KindSpec(
        "events",
        "register_event_sinks",
        EventSink,
        "event sink",
        "listed",
        section="events",
        key="sinks",
        critical=False,
        stage=11,
        description="Receive every published event (logs, fan-out, metrics).",
    ),
    KindSpec(
        "cache",
        "register_cache_backends",
        CacheBackend,
        "cache backend",
        "one",
        section="cache",
        key="backend",
        fallback=True,
        stage=20,
        live_fallback=_live_cache,
        description="Key-value cache with expiry.",
    ),
    KindSpec(
        "memory",
        "register_memory_stores",
        MemoryStore,
        "memory store",
        "one",
        section="memory",
        key="backend",
        fallback=True,
        stage=30,
        description="Durable conversations and messages.",
    ),
    KindSpec(
        "accounts",
        "register_account_stores",
        AccountStore,
        "account store",
        "one",
        section="accounts",
        key="backend",
        stage=35,
        default=_default_accounts,
        description="Users, login sessions and API keys, shared by every process.",
    ),
    KindSpec(
        "auth",
        "register_auth_methods",
        AuthMethod,
        "auth method",
        "listed",
        section="auth",
        key="methods",
        stage=40,
        variants=(RedirectAuthMethod,),
        default=_default_auth,
        description="Ways for callers to prove who they are, tried in order.",
    ),
    KindSpec(
        "budget_ledger",
        "register_budget_ledgers",
        BudgetLedger,
        "budget ledger",
        "one",
        section="budgets",
        key="backend",
        critical=False,
        stage=44,
        default=_default_budget_ledger,
        description="Where token and cost budgets are reserved and counted.",
    ),
    KindSpec(
        "llm_middleware",
        "register_llm_middleware",
        LLMMiddleware,
        "LLM middleware",
        "all",
        stage=45,
        description="Around every LLM request, ordered by priority.",
    ),
    KindSpec(
        "llm",
        "register_llm_providers",
        LLMProvider,
        "LLM provider",
        "all_unless_listed",
        section="llm",
        key="providers",
        stage=50,
        description="Sources of chat completions, routed by model id.",
    ),
    KindSpec(
        "tool_middleware",
        "register_tool_middleware",
        ToolMiddleware,
        "tool middleware",
        "all",
        stage=55,
        description="Around every tool call, ordered by priority.",
    ),
    KindSpec(
        "tools",
        "register_tools",
        ToolProvider,
        "tool provider",
        "all_unless_listed",
        section="tools",
        key="providers",
        critical=False,
        stage=60,
        description="Tools models may call.",
    ),
    KindSpec(
        "routes",
        "register_routes",
        None,
        "route set",
        "all",
        description="HTTP routes the reference server mounts.",
    ),
)
"""Every kind hubbub knows, in start order."""


def kinds_by_name(kinds: Sequence[KindSpec] = KINDS) -> Mapping[str, KindSpec]:
    """``kinds`` by name."""
    return {spec.name: spec for spec in kinds}
