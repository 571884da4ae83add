"""The configuration's shape: one msgspec struct per ``hubbub.toml`` table, each rejecting unknown
keys, plus :class:`Secret` for values that must not be echoed and :class:`ConfigOrigin`, the frozen
snapshot of where a configuration came from (file, text, environment).

Every struct is frozen: a configuration is loaded once (:func:`hubbub.config.load_config`) and
never changed afterwards; to vary it, load another (command-line options are overrides at load).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

import msgspec

from hubbub.config.issues import make_issue
from hubbub.errors import ConfigError, ConfigIssue
from hubbub.redaction import REDACTED

__all__ = [
    "AccountsConfig",
    "AuthConfig",
    "BudgetConfig",
    "BudgetsConfig",
    "CacheConfig",
    "Config",
    "ConfigOrigin",
    "ContextConfig",
    "EventsConfig",
    "LLMConfig",
    "LoggingConfig",
    "McpConfig",
    "McpOAuthConfig",
    "McpServerConfig",
    "MemoryConfig",
    "PasswordsConfig",
    "PluginsConfig",
    "QuotasConfig",
    "RedisConfig",
    "RetentionConfig",
    "RuntimeConfig",
    "Secret",
    "ServerConfig",
    "SessionsConfig",
    "ToolFilter",
    "ToolRule",
    "ToolsConfig",
    "default_home",
]


class Secret:
    """A configuration value that must not be echoed: ``str(secret)`` and ``repr`` are redacted.

    Call :meth:`reveal` where the clear value is needed (an HTTP header, a connection string).
    """

    __slots__ = ("_origin", "_value")

    def __init__(self, value: str, origin: str = "literal") -> None:
        self._value = value
        self._origin = origin

    def reveal(self) -> str:
        """The clear value."""
        return self._value

    @property
    def origin(self) -> str:
        """Where the value came from (``env:NAME``, ``file:PATH`` or ``literal``)."""
        return self._origin

    def __repr__(self) -> str:
        return f"Secret({REDACTED}, origin={self._origin!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Base of every configuration table: unknown keys are errors."""


class LoggingConfig(_Section, frozen=True):
    """How hubbub logs."""

    level: Literal[
        "DEBUG",
        "INFO",
        "WARNING",
        "ERROR",
        "CRITICAL",
        "debug",
        "info",
        "warning",
        "error",
        "critical",
    ] = "INFO"
    """Lowest level logged, in upper or lower case (``HUBBUB_LOGGING__LEVEL=debug``)."""
    format: Literal["text", "json"] = "text"
    """``text`` for people, ``json`` (one object per line) for log collectors."""


class ServerConfig(_Section, frozen=True):
    """The reference server (``hubbub serve``)."""

    host: Annotated[str, msgspec.Meta(min_length=1)] = "127.0.0.1"
    """Address to bind. Anything but loopback requires authentication to be configured."""
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    """TCP port to listen on (0: any free port)."""
    workers: Annotated[int, msgspec.Meta(ge=1, le=256)] = 1
    """Worker processes (1 to 256). Each has its own runtime; more than one needs a shared event
    log and cache (``[events] backend = "redis"``, ``[cache] backend = "redis"``) so every stream
    sees every worker's events and one conversation never has two replies at once, and is refused
    without them."""
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1_073_741_824)] = 1_048_576
    """Largest request body accepted (1 KiB to 1 GiB); larger ones get 413."""
    grace_period: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    """Seconds from SIGTERM/SIGINT to the end of the whole stop (0 to 3600). Requests in flight
    and replies in progress may finish until its last quarter (at most ``[runtime]
    stop_timeout``), which is kept for stopping the runtime; streamed completions still running
    then end with a final chunk and ``[DONE]``, replies are stopped and keep their text."""
    heartbeat_interval: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 15.0
    """Seconds between SSE heartbeat comments on idle streams (0.1 to 3600: shorter would keep
    a process busy writing comments)."""
    header_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    """Seconds a connection may take to send a complete request head (request line and
    headers); a connection that has not is closed."""
    keepalive_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    """Seconds an idle keep-alive connection stays open between requests."""
    body_min_rate: Annotated[int, msgspec.Meta(ge=0)] = 1024
    """Bytes per second a request body must arrive at, on average after its first second;
    a slower body is cut off (0: no minimum)."""
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 4096
    """Open connections this process serves at once; past it, new requests get 503."""
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1_048_576)] = 65_536
    """Largest request head (request line plus headers) accepted; larger ones get 431."""
    allowed_hosts: list[str] = msgspec.field(default_factory=list)
    """Host names (``Host`` header) the server answers besides the bound address and, on
    loopback, ``localhost``, ``127.0.0.1`` and ``[::1]``: what blocks DNS rebinding. Add the
    names clients use to reach a server behind a proxy or on a public address."""
    cors_origins: list[str] = msgspec.field(default_factory=list)
    """Web origins (``https://app.example``) allowed to call the API from a browser with CORS;
    none by default."""
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    """Addresses (or networks, ``10.0.0.0/8``) of the reverse proxies in front of the server:
    only their ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed (the client's
    address for login limits and sessions, https for sign-in cookies). None by default: every
    client is its connection's address, whatever headers it sends."""


class RuntimeConfig(_Section, frozen=True):
    """Component lifecycle."""

    start_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    """Seconds a component may take to start before it counts as failed (more than 0, at most
    3600)."""
    stop_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 5.0
    """Seconds a component may take to stop before it is abandoned and reported (more than 0,
    at most 3600)."""
    health_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 2.0
    """Seconds a health check may take before the component counts as down (more than 0, at
    most 300)."""
    drain_timeout: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 10.0
    """Seconds background work that should finish (replies being written) may take when the
    runtime stops, before it is cancelled (0 to 3600). Under ``hubbub serve`` a cap within
    ``[server] grace_period``, not added to it."""


class RedisConfig(_Section, frozen=True):
    """The Redis server that processes share (events, cache, leases): one client per URL."""

    url: Secret | None = None
    """``redis://[user:password@]host:port/db``, ``rediss://`` (TLS) or ``unix:///path.sock``
    (a secret: it may carry a password). Needed by every setting that names ``redis``."""
    timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    """Seconds to wait for a connection or a reply before Redis counts as unreachable."""
    cluster: bool = False
    """``url`` names a node of a Redis Cluster: the client finds the others and follows the
    slots (hubbub keeps each stream and each key on one slot)."""


class EventsConfig(_Section, frozen=True):
    """The event bus and where events go."""

    backend: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    """The event log: ``memory`` (this process only; what an unset backend means too) or
    ``redis`` (a Redis stream shared by every process on ``[redis] url``: events reach streams
    on any process, and a client may resume on any process)."""
    retention_events: Annotated[int, msgspec.Meta(ge=100, le=100_000_000)] = 10_000
    """Newest events the log keeps for clients resuming with ``Last-Event-ID`` (100 to
    100,000,000); a client asking for older ones gets a ``reset`` event."""
    retention_seconds: Annotated[float, msgspec.Meta(ge=10, le=2_592_000)] = 1800.0
    """Seconds the log keeps events (10 s to 30 days), whichever of the two limits comes
    first."""
    publish_buffer: Annotated[int, msgspec.Meta(ge=100, le=10_000_000)] = 100_000
    """Events waiting to be written to a shared log that is unreachable (100 to 10,000,000);
    past it the oldest are dropped, counted and logged (local streams still get them)."""
    sinks: list[str] = msgspec.field(default_factory=lambda: ["log"])
    """Event sinks to deliver every event to, by registered name."""
    queue_size: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1000
    """Events buffered per subscriber before the oldest are dropped (1 to 1,000,000)."""
    max_streams_per_caller: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 64
    """Event streams one caller may hold open at once in this process; past it, 429."""
    max_streams: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 20_000
    """Event streams this process holds open at once, all callers together; past it, 429."""
    trace: bool = False
    """Log every event delivered (type, id, conversation, owner, how many subscriptions got
    it) at DEBUG on ``hubbub.events.trace``; run with ``[logging] level = "DEBUG"`` to see it."""


class CacheConfig(_Section, frozen=True):
    """The cache."""

    backend: str = "memory"
    """Registered cache backend to use."""
    fallback: str | None = None
    """Backend that serves when ``backend`` cannot start, and, while running, every call
    ``backend`` fails or answers too late, until it is back (health then reports
    ``degraded``, naming the backend serving)."""
    timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.25
    """Seconds a call to ``backend`` may take before ``fallback`` serves it (more than 0, at
    most 60); only with a ``fallback``."""


class MemoryConfig(_Section, frozen=True):
    """Where conversations and messages are stored."""

    backend: str = "sqlite"
    """Registered memory store to use."""
    fallback: str | None = None
    """Store to use when ``backend`` cannot start (health then reports ``degraded``)."""


class RetentionConfig(_Section, frozen=True):
    """What the memory store's sweeper deletes, and how often it looks."""

    sweep_interval: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 60.0
    """Seconds between two sweeps (1 to 86400). Only one process sweeps at a time when several
    share a store (a lease in the cache), so a sweep's cost does not grow with processes."""
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 500
    """Most items one delete removes (1 to 100,000): each batch is one short transaction, and
    the sweeper yields to the event loop between batches."""
    conversation_idle_days: Annotated[float, msgspec.Meta(gt=0, le=36500)] | None = None
    """Delete conversations nobody has written to for this many days, with their messages;
    ``None`` (the default): keep them until deleted. Conversations and memories with their own
    ``expires_at`` are deleted when it passes either way."""
    memory_days: Annotated[float, msgspec.Meta(gt=0, le=36500)] | None = None
    """How long a long-term memory added without an expiry is kept, in days; ``None``: until
    its owner deletes it."""


class QuotasConfig(_Section, frozen=True):
    """Per-user limits on what callers may store. Each applies to one user (a principal) across
    every process sharing the store; ``0`` turns a limit off."""

    max_message_bytes: Annotated[int, msgspec.Meta(ge=0, le=1_073_741_824)] = 262_144
    """Largest message a user may send, in UTF-8 bytes; larger ones get 413."""
    max_stored_bytes: Annotated[int, msgspec.Meta(ge=0)] = 104_857_600
    """Most bytes one user's conversations, messages and memories may take in the store
    (100 MiB); past it, writes get 429 with code ``quota_exceeded`` until they delete some."""
    max_conversations: Annotated[int, msgspec.Meta(ge=0)] = 10_000
    """Most conversations one user may keep; past it, creating one gets 429."""
    conversations_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 60
    """Most conversations one user may create in a minute (counted in the cache); past it,
    429 with ``Retry-After``."""


class ContextConfig(_Section, frozen=True):
    """What a model is shown of a conversation: summaries of older messages, long-term
    memories, and the token budget that keeps a reply inside the model's context window."""

    summarize_at: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.75
    """Summarize older messages once the context a model is shown exceeds this share of its
    context window (more than 0, at most 1)."""
    keep_messages: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 6
    """Latest messages always shown verbatim, never summarized (1 to 1000)."""
    summary_model: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    """Model that writes summaries; default: the conversation's own model."""
    summary_tokens: Annotated[int, msgspec.Meta(ge=16, le=100_000)] = 512
    """Most tokens a summary may take (what the summarizer is asked for)."""
    context_window: Annotated[int, msgspec.Meta(ge=256, le=10_000_000)] = 8192
    """Context window, in tokens, of a model whose provider does not say."""
    reply_tokens: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 1024
    """Tokens kept free for the reply: the context shown is at most the window minus this."""
    memories: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 20
    """Most long-term memories of the user shown to the model, newest first (0: none)."""


class PasswordsConfig(_Section, frozen=True):
    """How passwords are hashed (argon2id) and what they must be. Raising a cost reaches every
    stored hash: each is rehashed at its user's next login."""

    time_cost: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    """argon2id passes over memory (1 to 100)."""
    memory_cost: Annotated[int, msgspec.Meta(ge=8, le=4_194_304)] = 65_536
    """argon2id memory per hash, in KiB (8 KiB to 4 GiB; default 64 MiB)."""
    parallelism: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    """argon2id lanes per hash (1 to 64)."""
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4
    """Hashes computed at once per process (each holds ``memory_cost``); more wait their
    turn (1 to 256)."""
    min_length: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 12
    """Shortest password accepted, in characters (1 to 1024)."""
    max_length: Annotated[int, msgspec.Meta(ge=8, le=65_536)] = 1024
    """Longest password accepted, in characters (8 to 65,536): a longer one is refused
    before any hashing."""


class AccountsConfig(_Section, frozen=True):
    """Where users, login sessions and API keys are kept."""

    backend: str | None = None
    """Registered account store to use; unset: the one named like ``[memory] backend``
    (``sqlite``, ``redis`` or ``postgres``), so one setting moves both. Processes that should
    agree on sessions and keys must share it."""


class AuthConfig(_Section, frozen=True):
    """Authentication."""

    methods: list[str] | None = None
    """Auth methods to enable, tried in this order; unset: ``api_key`` and ``local`` (those
    of them a loaded plugin registers)."""
    local_mode: bool = True
    """While no enabled method is provisioned (no API key, user or identity provider yet),
    serve callers without credentials as a local user. The server allows this only when bound
    to loopback, and warns; bound elsewhere it refuses to start instead."""
    login_attempts: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 10
    """Failed logins allowed per account in ``login_window`` before further attempts get 429
    with ``Retry-After`` (0: no limit)."""
    login_attempts_per_address: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 50
    """Failed logins allowed per client address in ``login_window`` (0: no limit)."""
    login_window: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 900.0
    """Seconds over which failed logins are counted (1 to 86400)."""
    requests_per_minute_per_key: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    """Requests one API key may make per minute, counted in the cache (shared by every process
    when it is Redis); past it, 429 with ``Retry-After``. 0 to 1,000,000; 0: no limit."""


class SessionsConfig(_Section, frozen=True):
    """Login sessions and the access and refresh tokens they issue."""

    access_token_ttl: Annotated[float, msgspec.Meta(ge=30, le=86400)] = 900.0
    """Seconds an access token (a JWT) is valid (30 to 86400); refresh tokens get new ones."""
    idle_timeout: Annotated[float, msgspec.Meta(ge=60, le=31_536_000)] = 604_800.0
    """A session unused this long ends (seconds, 60 to a year; default 7 days)."""
    absolute_timeout: Annotated[float, msgspec.Meta(ge=60, le=31_536_000)] = 2_592_000.0
    """A session ends this long after login however much it is used (seconds, 60 to a year;
    default 30 days)."""
    max_per_user: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    """Sessions one user may hold; a new login ends their least recently used one beyond it."""
    check_interval: Annotated[float, msgspec.Meta(ge=0, le=60)] = 1.0
    """Seconds a process trusts that a session is still valid before reading the store again
    (0 to 60). Revocation also reaches every process at once through the event log; this
    bounds how late it can be when that fails."""
    touch_interval: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 60.0
    """Seconds between two writes of a session's ``last_seen_at`` (1 to 86400)."""
    cleanup_interval: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 300.0
    """Seconds between two purges of ended sessions and other expired account records."""
    issuer: Annotated[str, msgspec.Meta(min_length=1, max_length=512)] = "hubbub"
    """The ``iss`` of access tokens; processes sharing sessions must agree on it."""
    audience: Annotated[str, msgspec.Meta(min_length=1, max_length=512)] = "hubbub"
    """The ``aud`` of access tokens."""
    leeway: Annotated[float, msgspec.Meta(ge=0, le=300)] = 30.0
    """Clock skew allowed when checking ``exp`` and ``iat``, in seconds (0 to 300)."""
    signing_keys: str | None = None
    """A keyring file (``hubbub keys rotate-signing`` writes one) holding the keys that sign
    and verify access tokens; relative to the configuration file. Or set
    ``HUBBUB_SIGNING_KEYS`` to the file's contents. Neither: a keyring is generated in the
    data directory (``signing-keys.json``), which only suits one host."""
    algorithm: Literal["EdDSA", "RS256", "HS256"] = "EdDSA"
    """The algorithm of keys hubbub generates. ``HS256`` shares one secret between signing
    and checking; use it only when every verifier is hubbub itself."""

    def __post_init__(self) -> None:
        if self.idle_timeout > self.absolute_timeout:
            raise ValueError("idle_timeout must not exceed absolute_timeout")
        if self.touch_interval >= self.idle_timeout:
            raise ValueError(
                "touch_interval must be shorter than idle_timeout (sessions in use would end)"
            )


class LLMConfig(_Section, frozen=True):
    """LLM providers and models."""

    default_model: Annotated[str, msgspec.Meta(min_length=1)] = "offline/echo"
    """Model used when a request names none; a configured provider must serve it."""
    providers: list[str] | None = None
    """Providers to start, by registered name; all registered ones when unset."""
    request_timeout: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 60.0
    """Seconds one try may take for a whole reply, or until a stream's first chunk and then
    between two chunks (more than 0, at most 86400)."""
    deadline: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 120.0
    """Seconds a request may take in all, retries and fallbacks included (for a stream: until
    its first chunk); more than 0, at most 86400."""
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    """Tries of a model after its first, on retryable failures only (timeouts, connection
    errors, 429, 5xx); 0 to 10."""
    retry_delay: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    """The longest wait, in seconds, before the first retry; it doubles for each next one and
    the actual wait is a random share of it (more than 0, at most 60)."""
    retry_max_delay: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    """The longest wait between two tries; an upstream asking (``Retry-After``) for longer is
    not waited for: the next model of the chain is tried (more than 0, at most 600)."""
    fallbacks: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Models to try, in order, when a model fails: ``{ "up-gpt" = ["model-b",
    "offline/echo"] }``. Every name must be served by a provider; a fallback's own fallbacks
    are not followed."""
    breaker_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    """Consecutive failures of a model's upstream that open its circuit breaker: the model is
    then skipped (its fallbacks serve) and reported ``degraded`` in health (1 to 1000)."""
    breaker_reset: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    """Seconds an open breaker waits before letting one probe request through (more than 0,
    at most 3600)."""
    max_tool_rounds: Annotated[int, msgspec.Meta(ge=0, le=100)] = 5
    """Most times one reply may call tools before it must answer (0: tools are never offered;
    at most 100)."""
    history_messages: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 200
    """How many of a conversation's latest messages a model is shown (1 to 100,000)."""


class BudgetConfig(_Section, frozen=True):
    """One budget (``[budgets.user]``, ``[budgets.key]`` or ``[budgets.global]``): the most
    tokens and/or US dollars its scope may use in a period."""

    tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """Most tokens (prompt and reply) in a period; unset: not limited."""
    cost: Decimal | None = None
    """Most US dollars in a period, as a decimal string (``"5.00"``); unset: not limited."""
    period: Literal["day", "month"] = "day"
    """``day`` or ``month``, in UTC: the budget starts again at midnight (UTC) or on the
    first of the month."""

    def __post_init__(self) -> None:
        if self.tokens is None and self.cost is None:
            raise ValueError("a budget needs tokens, cost or both")
        if self.cost is not None and (not self.cost.is_finite() or self.cost < 0):
            raise ValueError('cost must be a non-negative number of US dollars, like "5.00"')


class BudgetsConfig(_Section, frozen=True):
    """Budgets of tokens and cost for LLM calls, and per-key rate limits. A call that could
    exceed a budget is refused (402) before any provider is called; see the budgets page."""

    backend: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    """The budget ledger: ``memory`` (this process only) or ``redis`` (shared by every process
    on ``[redis] url``); unset: ``redis`` when ``[cache] backend`` is ``redis``, else
    ``memory``."""
    user: BudgetConfig | None = None
    """Each user's budget (``[budgets.user]``); unset: none."""
    key: BudgetConfig | None = None
    """Each API key's budget (``[budgets.key]``), for calls made with a key; unset: none."""
    global_: BudgetConfig | None = msgspec.field(default=None, name="global")
    """One budget for every call of the deployment (``[budgets.global]``); unset: none."""
    key_requests_per_minute: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    """LLM calls one API key may make per minute (0 to 1,000,000; 0: no limit); past it, 429
    with ``Retry-After``. Counted in the cache, so shared when the cache is."""
    key_tokens_per_minute: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)] = 0
    """Tokens one API key may use per minute (0 to 1,000,000,000; 0: no limit), counted as
    reserved before each call and corrected to its real use after; past it, 429 with
    ``Retry-After``."""
    lease_seconds: Annotated[float, msgspec.Meta(ge=1, le=86400)] = 900.0
    """Seconds a call's reservation holds its budget (1 to 86400) unless settled first: a
    process that crashed holding one frees it then. Keep it above the longest reply."""


TOOL_PATTERN = r"^[A-Za-z0-9_.*-]{1,160}$"
"""What a tool name or pattern of names may be: letters, digits, ``_``, ``-``, ``.`` and ``*``,
at most 160 characters."""

ToolPattern = Annotated[str, msgspec.Meta(pattern=TOOL_PATTERN)]
"""A tool name, or a pattern of names where ``*`` stands for any characters (``time.*``,
``*.search``, ``*``)."""

ToolNamespace = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
"""The first part of a tool's name (``time`` in ``time.get_current_time``): letters, digits,
``_`` and ``-``, at most 32 characters."""


class ToolFilter(_Section, frozen=True):
    """Which tools one user may use (``[tools.users.<id>]``): those matching ``allow`` and
    neither ``deny`` nor ``[tools] deny``."""

    allow: list[ToolPattern] | None = None
    """Tools allowed, by name or pattern (``["basic.*", "time.get_current_time"]``), in place
    of ``[tools] allow``; a tool matching none is refused. Unset: ``[tools] allow``."""
    deny: list[ToolPattern] = msgspec.field(default_factory=list)
    """Tools refused to this user even when ``allow`` matches them."""


class ToolRule(_Section, frozen=True):
    """Limits and permissions of the tools whose names match ``match`` (``[[tools.rules]]``);
    the first rule matching a tool applies, and each of its fields set replaces what the tool
    declares itself."""

    match: ToolPattern
    """The tools this rule is about: a name or a pattern (``web.*``)."""
    timeout: Annotated[float, msgspec.Meta(gt=0, le=86400)] | None = None
    """Seconds one call may take, waiting for a free slot included (more than 0, at most
    86400); unset: the tool's own, else ``[tools] call_timeout``."""
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None
    """Calls of one tool that may run at once in this process (1 to 10,000); more wait for a
    slot. Unset: the tool's own, else ``[tools] concurrency``."""
    roles: list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]] | None = None
    """Only callers holding one of these roles may use the tools (``["admin"]``); ``[]``:
    anyone; unset: what the tool declares."""
    scopes: list[Annotated[str, msgspec.Meta(min_length=1, max_length=128)]] | None = None
    """Scopes a restricted credential (an API key or token that names scopes) must hold one
    of to use the tools; unrestricted credentials pass. ``[]``: none needed; unset: what the
    tool declares."""


class ToolsConfig(_Section, frozen=True):
    """Tools models may call, their limits, and who may use them."""

    providers: list[str] | None = None
    """Tool providers to start, by registered name; all registered ones when unset."""
    call_timeout: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 30.0
    """Seconds a tool call may take before it fails (more than 0, at most 86400), unless the
    tool or a rule says otherwise."""
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64
    """Calls of one tool that may run at once in this process (1 to 10,000), unless the tool
    or a rule says otherwise; more wait for a slot within their timeout."""
    parallel_calls: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8
    """Tool calls of one model reply run at once (1 to 64); the rest wait their turn."""
    max_argument_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    """The largest arguments (JSON text, in bytes) a tool call may carry (1 KiB to 16 MiB);
    larger ones are refused with an error the model can read, before they are decoded."""
    allow: list[ToolPattern] = msgspec.field(default_factory=lambda: ["*"])
    """Tools every user may use, by name or pattern; a tool matching none is refused to
    everybody without a filter of their own in ``[tools.users]``."""
    deny: list[ToolPattern] = msgspec.field(default_factory=list)
    """Tools refused to everybody, whatever else allows them."""
    users: dict[str, ToolFilter] = msgspec.field(default_factory=dict)
    """Filters for particular users, by user id (the account name for local accounts and API
    keys: ``[tools.users.alice] allow = ["basic.*"]``): its ``allow`` replaces ``[tools]
    allow`` for that user; ``[tools] deny`` still applies."""
    rules: list[ToolRule] = msgspec.field(default_factory=list)
    """Limits and permissions by tool name (``[[tools.rules]]``), first match wins."""
    mock: bool = False
    """Offer the demonstration tools that fake an outside service (names in ``mock.``, their
    descriptions say so). Off by default: a model must never mistake them for real ones."""


McpServerName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")]
"""An MCP server's name in the configuration: its tools' namespace."""


class McpOAuthConfig(_Section, frozen=True):
    """OAuth 2 client credentials for an HTTP MCP server that requires a token
    (``[mcp.servers.oauth]``). The token is fetched from ``token_url``, refreshed when it
    expires, and sent to this server only."""

    token_url: Annotated[str, msgspec.Meta(pattern=r"^https?://")]
    """The authorization server's token endpoint."""
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    """This client's id at the authorization server."""
    client_secret: Secret | None = None
    """This client's secret (``{ env = "NAME" }`` or ``{ file = "PATH" }``)."""
    scope: str | None = None
    """Scopes asked for, separated by spaces."""
    audience: str | None = None
    """The ``audience`` (or resource) asked for, when the authorization server needs one."""


class McpServerConfig(_Section, frozen=True):
    """One MCP server whose tools hubbub offers (``[[mcp.servers]]``).

    stdio servers are programs hubbub starts and talks to over their standard streams: that is
    running code on this host, so only this file can declare them, never an API call."""

    name: McpServerName
    """Unique name; its tools are offered as ``<name>.<tool>`` (``time.get_current_time``)."""
    transport: Literal["stdio", "http"]
    """``stdio``: hubbub starts ``command``; ``http``: hubbub connects to ``url`` (MCP's
    streamable HTTP transport)."""
    command: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    """stdio: the program to run (looked up on ``PATH`` when not a path)."""
    args: list[str] = msgspec.field(default_factory=list)
    """stdio: its arguments."""
    env: dict[str, Secret] = msgspec.field(default_factory=dict)
    """stdio: variables added to a minimal environment (``PATH``, ``HOME``, locale); values are
    strings or secrets (``{ env = "NAME" }``). hubbub's own environment is not passed on."""
    cwd: str | None = None
    """stdio: the directory it runs in; default: hubbub's."""
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://")] | None = None
    """http: the server's MCP endpoint (``https://tools.example.com/mcp``)."""
    headers: dict[str, Secret] = msgspec.field(default_factory=dict)
    """http: headers sent with every request (values are strings or secrets:
    ``{ Authorization = { env = "TOOLS_TOKEN" } }``); sent to this server only."""
    oauth: McpOAuthConfig | None = None
    """http: get a bearer token with OAuth 2 client credentials."""
    tools: list[ToolPattern] | None = None
    """Which of its tools to offer, by their name on the server or a pattern; all when
    unset."""
    call_timeout: Annotated[float, msgspec.Meta(gt=0, le=86400)] | None = None
    """Seconds one call may take; default ``[tools] call_timeout``."""
    connect_timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = 10.0
    """Seconds to start (or reach) the server and list its tools before it counts as down."""
    enabled: bool = True
    """``false`` keeps the entry without starting the server."""

    def __post_init__(self) -> None:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError(f"MCP server {self.name!r}: a stdio server needs a command")
            if self.url or self.headers or self.oauth:
                raise ValueError(
                    f"MCP server {self.name!r}: url, headers and oauth are for http servers"
                )
        else:
            if not self.url:
                raise ValueError(f"MCP server {self.name!r}: an http server needs a url")
            if self.command or self.args or self.env or self.cwd:
                raise ValueError(
                    f"MCP server {self.name!r}: command, args, env and cwd are for stdio servers"
                )


class McpConfig(_Section, frozen=True):
    """MCP: servers whose tools hubbub offers, and hubbub's own tools served at ``/mcp``."""

    servers: list[McpServerConfig] = msgspec.field(default_factory=list)
    """The ``[[mcp.servers]]`` entries."""
    serve: bool = True
    """Serve hubbub's tools (and a ``chat`` tool) over MCP at ``/mcp``, to callers with the
    same credentials and tool permissions as the rest of the API."""
    reconnect_delay: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    """Seconds before reconnecting to a server that went down; doubles on each failure up to
    ``reconnect_max_delay`` (more than 0, at most 60)."""
    reconnect_max_delay: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    """The longest wait between two reconnection attempts (more than 0, at most 3600)."""
    ping_interval: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 15.0
    """Seconds between liveness pings to each connected server; one that does not answer
    within ``connect_timeout`` is down and reconnected. 0: no pings."""

    def __post_init__(self) -> None:
        names = [server.name for server in self.servers]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"MCP server names must be unique: {', '.join(twice)}")
        if self.reconnect_delay > self.reconnect_max_delay:
            raise ValueError("reconnect_delay must not exceed reconnect_max_delay")


class PluginsConfig(_Section, frozen=True):
    """Which plugins load, and their settings (``[plugins.<name>]`` tables)."""

    disabled: list[str] = msgspec.field(default_factory=list)
    """Plugins not to load, by name (as ``hubbub plugins`` lists them)."""
    settings: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    """Each ``[plugins.<name>]`` table, decoded later into the struct that plugin declared."""


class ConfigOrigin:
    """Where a configuration came from: one frozen snapshot taken when it was loaded.

    Deliberately not a struct: msgspec refuses to encode it, so a configuration serialised by
    accident (a debug endpoint, a log line) fails loudly instead of carrying the environment's
    secrets; :func:`hubbub.config.encode_config` is the way to show a configuration.
    """

    __slots__ = ("env", "overrides", "path", "text")

    def __init__(
        self,
        path: str | None = None,
        text: str | None = None,
        env: Mapping[str, str] | None = None,
        overrides: tuple[str, ...] = (),
    ) -> None:
        self.path = path
        """The file the configuration was read from, if any."""
        self.text = text
        """That file's text, used to point errors at lines."""
        self.env: Mapping[str, str] = MappingProxyType(dict(env or {}))
        """A read-only copy of the environment at load time: overrides, ``{ env = "NAME" }``
        secrets and the default data directory are read from it, never from the live process
        environment."""
        self.overrides = overrides
        """Dotted paths set by ``HUBBUB_*`` environment variables or command-line options."""

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, name):
            raise AttributeError(f"ConfigOrigin is frozen: cannot set {name!r}")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"ConfigOrigin(path={self.path!r}, overrides={self.overrides!r})"

    def __eq__(self, other: object) -> bool:
        # Two configurations that say the same are equal, wherever they came from.
        return isinstance(other, ConfigOrigin)

    def __hash__(self) -> int:
        return 0


class Config(_Section, frozen=True):
    """The whole configuration."""

    home: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    """Data directory (databases, keys). Default: ``$HUBBUB_HOME``, else
    ``$XDG_DATA_HOME/hubbub``, else ``~/.local/share/hubbub``. It must be a directory, or a
    path where one can be created: checked when the configuration is loaded."""
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    """The ``[logging]`` table."""
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    """The ``[server]`` table."""
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    """The ``[runtime]`` table."""
    redis: RedisConfig = msgspec.field(default_factory=RedisConfig)
    """The ``[redis]`` table."""
    events: EventsConfig = msgspec.field(default_factory=EventsConfig)
    """The ``[events]`` table."""
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    """The ``[cache]`` table."""
    memory: MemoryConfig = msgspec.field(default_factory=MemoryConfig)
    """The ``[memory]`` table."""
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    """The ``[retention]`` table."""
    quotas: QuotasConfig = msgspec.field(default_factory=QuotasConfig)
    """The ``[quotas]`` table."""
    context: ContextConfig = msgspec.field(default_factory=ContextConfig)
    """The ``[context]`` table."""
    accounts: AccountsConfig = msgspec.field(default_factory=AccountsConfig)
    """The ``[accounts]`` table."""
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    """The ``[auth]`` table."""
    sessions: SessionsConfig = msgspec.field(default_factory=SessionsConfig)
    """The ``[sessions]`` table."""
    passwords: PasswordsConfig = msgspec.field(default_factory=PasswordsConfig)
    """The ``[passwords]`` table."""
    llm: LLMConfig = msgspec.field(default_factory=LLMConfig)
    """The ``[llm]`` table."""
    budgets: BudgetsConfig = msgspec.field(default_factory=BudgetsConfig)
    """The ``[budgets]`` table and its ``[budgets.user|key|global]`` tables."""
    tools: ToolsConfig = msgspec.field(default_factory=ToolsConfig)
    """The ``[tools]`` table."""
    mcp: McpConfig = msgspec.field(default_factory=McpConfig)
    """The ``[mcp]`` table."""
    plugins: PluginsConfig = msgspec.field(default_factory=PluginsConfig)
    """The ``[plugins]`` table and its ``[plugins.<name>]`` tables."""

    origin: ConfigOrigin = msgspec.field(default_factory=ConfigOrigin)
    """Where this configuration came from (set by the loader; not a TOML key)."""

    @property
    def source(self) -> str | None:
        """The file the configuration was read from, if any."""
        return self.origin.path

    @property
    def text(self) -> str | None:
        """That file's text."""
        return self.origin.text

    @property
    def env(self) -> Mapping[str, str]:
        """The environment snapshot the configuration was loaded with."""
        return self.origin.env

    @property
    def overrides(self) -> tuple[str, ...]:
        """Dotted paths set by environment variables or command-line options."""
        return self.origin.overrides

    @property
    def data_dir(self) -> Path:
        """The resolved data directory."""
        return Path(self.home or default_home(self.origin.env)).expanduser()

    def issue(self, path: str, message: str) -> ConfigIssue:
        """A :class:`ConfigIssue` at ``path``, naming where the value came from: the environment
        variable that set it, or the file and line."""
        return make_issue(path, message, self.text, self.source, self.overrides)

    def locate(self, error: ConfigError) -> ConfigError:
        """``error`` with every issue that does not say where it is yet (one raised by a
        component as it starts) pointed at its file and line, or its environment variable."""
        issues = [
            self.issue(issue.path, issue.message) if issue.source is None and issue.path else issue
            for issue in error.issues
        ]
        return ConfigError(issues)


def default_home(env: Mapping[str, str] | None = None) -> str:
    """The data directory when ``home`` is not configured."""
    environ = os.environ if env is None else env
    if environ.get("HUBBUB_HOME"):
        return environ["HUBBUB_HOME"]
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "hubbub")
