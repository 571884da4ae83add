"""The data that crosses component boundaries, defined once.

Every struct here is a :class:`msgspec.Struct`: cheap to build, validated when decoded, and encoded
to JSON without a conversion layer. Components, the conversation engine and the reference server
all exchange these types; nothing else redefines them.
"""

from __future__ import annotations

import os
import time
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar

import msgspec

__all__ = [
    "ChatChunk",
    "ChatRequest",
    "ChatResponse",
    "ComponentHealth",
    "Conversation",
    "Health",
    "HealthStatus",
    "MemoryItem",
    "Message",
    "ModelInfo",
    "Page",
    "Principal",
    "Role",
    "RuntimeHealth",
    "Session",
    "StoreUsage",
    "Summary",
    "ToolCall",
    "ToolResult",
    "ToolSpec",
    "Usage",
    "new_id",
    "now",
    "stored_size",
]

Role = Literal["system", "user", "assistant", "tool"]
"""Who wrote a message. ``tool`` messages carry a tool's result back to the model."""

HealthStatus = Literal["ok", "degraded", "down"]
"""``ok``: working as configured. ``degraded``: serving, but a fallback is in use or a non-critical
part is down. ``down``: not serving."""


def new_id(prefix: str = "") -> str:
    """Return a new random identifier, optionally prefixed (``msg_``, ``conv_``, ...)."""
    return f"{prefix}{os.urandom(16).hex()}"  # 128 random bits, like uuid4, at a quarter the cost


def now() -> float:
    """Return the current time as a Unix timestamp in seconds (the unit of every ``*_at`` field)."""
    return time.time()


class ToolCall(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A model's request to run one tool."""

    id: str
    """Identifier chosen by the provider; the tool's result refers back to it."""
    name: str
    """Name of the tool to run, as listed in :class:`ToolSpec`."""
    arguments: str = "{}"
    """Arguments as a JSON text, exactly as the model produced them (it may be invalid JSON)."""


class ToolResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What running a tool produced."""

    call_id: str
    """The :attr:`ToolCall.id` this result answers."""
    name: str
    """The tool that ran."""
    content: str
    """The result as text, which is what the model reads."""
    is_error: bool = False
    """True when the tool failed; ``content`` then explains why."""
    data: Any = None
    """Optional structured result for clients; the model sees ``content`` only."""


class ToolSpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    """How a tool presents itself to models and clients, and the limits it runs under."""

    name: str
    """Unique name, ``<namespace>.<name>`` (``time.get_current_time``): the namespace names
    where the tool comes from (its provider's registration, an MCP server), so sources never
    collide. Letters, digits, ``_`` and ``-`` in the namespace; also ``.`` after it; at most
    128 characters."""
    description: str = ""
    """What the tool does, written for the model."""
    parameters: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    """JSON Schema of the arguments object; arguments are validated against it before the
    tool runs."""
    source: str = ""
    """The registration (plugin component) that provides the tool."""
    output_schema: dict[str, Any] | None = None
    """JSON Schema of the result's ``data``, when the tool declares one."""
    timeout: float | None = None
    """Seconds one call may take (waiting for a free slot included); ``None``: ``[tools]
    call_timeout``. ``[[tools.rules]]`` may replace it."""
    concurrency: int | None = None
    """Calls of this tool that may run at once in one process; ``None``: ``[tools]
    concurrency``."""
    roles: list[str] = msgspec.field(default_factory=list)
    """Roles of which a caller must hold one to use the tool; empty: anyone."""
    scopes: list[str] = msgspec.field(default_factory=list)
    """Scopes of which a restricted credential (one that names scopes) must hold one to use
    the tool; unrestricted credentials pass. Empty: none needed."""
    mock: bool = False
    """The tool fakes an outside service (demonstrations, tests): its namespace is ``mock``,
    and it is offered only when ``[tools] mock = true``."""


class Usage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Tokens consumed by one LLM request, and their cost when known."""

    prompt_tokens: int = 0
    """Tokens the model read (the prompt), as the provider counts them; 0 when not
    reported."""
    completion_tokens: int = 0
    """Tokens the model wrote (text and tool calls); 0 when not reported."""
    total_tokens: int = 0
    """Tokens in all, as the provider reports them (normally the sum of the two); 0 when not
    reported."""
    cost: Decimal | None = None
    """Cost in US dollars, exact (a :class:`~decimal.Decimal`, carried in JSON as a string such
    as ``"0.000135"``), priced by the LLM client from the price table
    (:class:`hubbub.llm.pricing.PriceTable`) or the model's own prices; ``None`` when the price
    is unknown (``Decimal(0)`` means free)."""


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message of a conversation, as stored and as sent to a model."""

    role: Role
    """Who wrote it; see :data:`Role`."""
    content: str = ""
    """The text. Empty for an ``assistant`` message that only calls tools, and in the
    ``message.created`` snapshot that starts a reply."""
    id: str = msgspec.field(default_factory=lambda: new_id("msg_"))
    """Unique identifier (``msg_`` and random hex), made when the message is built."""
    conversation_id: str | None = None
    """The conversation it belongs to. A memory store requires it; ``None`` for messages
    that are never stored (OpenAI-compatible requests, providers' replies)."""
    created_at: float = msgspec.field(default_factory=now)
    """When it was written (Unix seconds); for a reply, when the model finished it."""
    name: str | None = None
    """Optional author name (for ``user``) or tool name (for ``tool``)."""
    tool_calls: list[ToolCall] | None = None
    """For ``assistant`` messages: the tools the model asked to run."""
    tool_call_id: str | None = None
    """For ``tool`` messages: the :attr:`ToolCall.id` this message answers."""
    model: str | None = None
    """For ``assistant`` messages: the model that wrote it."""
    usage: Usage | None = None
    """For ``assistant`` messages: what producing it cost."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    """Free-form data stored with the message, not meant for models. The engine sets
    ``is_error: true`` on the result of a failed tool."""
    interrupted: str | None = None
    """For a reply that stopped before its end, why: ``cancelled`` (someone cancelled it),
    ``shutdown`` (the server stopped), ``disconnected`` (its client left) or ``error``; its
    ``content`` is what was produced until then. ``None`` for a finished message."""


class Conversation(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A conversation: an owned, titled sequence of messages."""

    owner: str
    """The :attr:`Principal.id` that created it; nobody else can see it."""
    id: str = msgspec.field(default_factory=lambda: new_id("conv_"))
    """Unique identifier (``conv_`` and random hex), made when the conversation is built."""
    title: str = ""
    """Display title (whitespace collapsed, at most 200 characters); empty when untitled."""
    model: str | None = None
    """Model used for replies when a request names none."""
    created_at: float = msgspec.field(default_factory=now)
    """When it was created (Unix seconds)."""
    updated_at: float = msgspec.field(default_factory=now)
    """When it last changed (Unix seconds). The memory store bumps it on every update and
    appended message; listings are ordered by it, newest first."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    """Free-form data for plugins, stored with the conversation; hubbub itself sets none."""
    tools: list[str] | None = None
    """The tools its replies may use, by name or pattern (``["basic.*"]``), within what its
    owner may use; ``None``: all of those; ``[]``: none."""
    expires_at: float | None = None
    """When the store's sweeper deletes it with its messages (Unix seconds); ``None``: kept
    until deleted or idle past ``[retention] conversation_idle_days``."""


class MemoryItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A long-term memory: something about its owner kept across conversations and shown to the
    model in every conversation of theirs. Listed and deleted by the owner at ``/api/memory``."""

    owner: str
    """The :attr:`Principal.id` it is about; nobody else can see it."""
    content: str
    """The fact, in plain words (``prefers metric units``)."""
    id: str = msgspec.field(default_factory=lambda: new_id("mem_"))
    """Unique identifier (``mem_`` and random hex)."""
    source_conversation_id: str | None = None
    """The conversation it was learned in, if any (it outlives that conversation)."""
    created_at: float = msgspec.field(default_factory=now)
    """When it was stored (Unix seconds)."""
    expires_at: float | None = None
    """When it is forgotten (Unix seconds): never listed after, deleted by the sweeper."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    """Free-form data for plugins."""


class Summary(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A conversation's older messages summarized: shown to the model in their place. The
    messages themselves stay stored and listed."""

    conversation_id: str
    """The conversation summarized."""
    content: str
    """The summary text, written by :attr:`model`."""
    through_message_id: str
    """The last message it covers: it stands for every message up to and including this one."""
    covered: int
    """How many messages it covers."""
    tokens: int = 0
    """Its length in tokens (as counted for :attr:`model`)."""
    model: str = ""
    """The model that wrote it."""
    created_at: float = msgspec.field(default_factory=now)
    """When it was written (Unix seconds)."""


class StoreUsage(msgspec.Struct, kw_only=True):
    """What one owner keeps in a memory store: what per-user quotas are checked against."""

    conversations: int = 0
    """How many conversations they own."""
    bytes: int = 0
    """Bytes their conversations, messages and memories take, counted as the length of each
    item's JSON encoding (:func:`stored_size`), whatever the store's own encoding."""


def stored_size(item: msgspec.Struct) -> int:
    """The bytes an item counts for in :attr:`StoreUsage.bytes`: its JSON encoding's length."""
    return len(msgspec.json.encode(item))


PageItem = TypeVar("PageItem")


class Page(msgspec.Struct, Generic[PageItem], kw_only=True):
    """One page of a listing, with the cursor that fetches the next one."""

    items: list[PageItem]
    """This page's items, in the listing's order."""
    next_cursor: str | None = None
    """Pass back as ``cursor`` to get the next page; ``None`` on the last page."""


class Principal(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """An authenticated caller."""

    id: str
    """Stable identifier; owns conversations and API keys."""
    name: str = ""
    """Display name, used as the author name of their messages; may be empty."""
    roles: frozenset[str] = frozenset()
    """Roles such as ``admin``; plugins may define their own."""
    auth_method: str = ""
    """The auth method that authenticated this caller (``api_key``, ``local``, ``oidc``...)."""
    scopes: frozenset[str] = frozenset()
    """What the credentials allow (from a token's ``scope``, or a key's restrictions); empty
    means no restriction beyond the roles."""
    session_id: str | None = None
    """The login session the credentials belong to, when they belong to one (so revoking the
    session ends the streams it opened)."""
    credential_id: str | None = None
    """The credential that authenticated this caller: an API key's id, or the session's id.
    A ``session.revoked`` event naming it ends the streams it opened, on every process."""
    expires_at: float | None = None
    """When the credentials stop being valid (Unix seconds), if they expire."""


class Session(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A login session of a principal, listed to its owner and revocable."""

    principal_id: str
    """The :attr:`Principal.id` the session signed in."""
    id: str = msgspec.field(default_factory=lambda: new_id("ses_"))
    """Unique identifier (``ses_`` and random hex); :attr:`Principal.session_id` refers to it."""
    auth_method: str = ""
    """The auth method that opened the session (``local``, ``oidc``...)."""
    created_at: float = msgspec.field(default_factory=now)
    """When the session began (Unix seconds)."""
    expires_at: float | None = None
    """When the session ends (Unix seconds); ``None`` if it does not expire on its own."""
    last_seen_at: float | None = None
    """When a request last used the session (Unix seconds); ``None`` when not known."""
    user_agent: str | None = None
    """The ``User-Agent`` of the client that opened the session, if it sent one."""
    ip: str | None = None
    """The address of the client that opened the session, if known."""
    revoked: bool = False
    """True once the session is revoked; its credentials are then refused (see
    :class:`hubbub.events.SessionRevoked`)."""


class Record(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """One item of an :class:`~hubbub.contracts.AccountStore`: a user, a login session, an API
    key... The store keeps ``data`` opaque; the framework encodes a typed Struct into it."""

    kind: str
    """What it is (``user``, ``session``, ``api_key``...): ids, lookups and listings are per
    kind."""
    id: str
    """Unique within its kind."""
    data: bytes
    """The item itself (msgspec JSON written by the framework)."""
    owner: str = ""
    """The principal it belongs to, for listing one owner's items; empty for none."""
    lookup: str | None = None
    """A second key, unique within the kind when set (a folded user name, a credential's
    digest): :meth:`~hubbub.contracts.AccountStore.find` reads by it."""
    version: int = 0
    """How many times it was written; the store sets it (1 on create) and
    :meth:`~hubbub.contracts.AccountStore.replace` compares it."""
    expires_at: float | None = None
    """When it may be purged (Unix seconds); ``None``: never on its own."""


class ModelInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A model an LLM provider serves."""

    id: str
    """The name clients use, e.g. ``offline/echo`` or ``openai/gpt-4o-mini``."""
    provider: str
    """The registered provider that serves it."""
    description: str = ""
    """A short description for people choosing a model; may be empty."""
    context_window: int | None = None
    """How many tokens the model accepts in one request; ``None`` when unknown."""
    supports_tools: bool = False
    """Whether the model can call tools. The engine offers tools either way; the built-in
    providers drop them for a model that cannot."""
    upstream_model: str | None = None
    """The model id the provider sends upstream (``gpt-4o-mini`` for a model clients call
    ``up-gpt``; a litellm id such as ``anthropic/claude-sonnet-4-5``): prices, limits and the
    tokenizer are looked up by it. ``None``: the same as :attr:`id`."""
    upstream: str | None = None
    """Where the provider sends the model's requests, as operators know it (a base URL without
    credentials, such as ``https://api.openai.com/v1``): models with the same upstream share
    one circuit breaker. ``None``: the model has a breaker of its own."""
    max_output_tokens: int | None = None
    """The most tokens the model writes in one reply; ``None``: the price table's figure, if it
    knows the model."""
    input_cost_per_token: Decimal | None = None
    """US dollars per prompt token, overriding the price table (``Decimal(0)``: free); ``None``:
    the price table's."""
    output_cost_per_token: Decimal | None = None
    """US dollars per completion token, overriding the price table; ``None``: the price
    table's."""

    @property
    def pricing_id(self) -> str:
        """The id prices, limits and the tokenizer are looked up by: :attr:`upstream_model`,
        else :attr:`id`."""
        return self.upstream_model or self.id


class ChatRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A request to an LLM provider. Interception hooks may change it before it is sent."""

    model: str
    """The :attr:`ModelInfo.id` to ask. When empty, the LLM client uses ``[llm] default_model``;
    it routes the request after the LLM middleware, which may change it."""
    messages: list[Message]
    """The conversation so far, oldest first, as the model should see it."""
    tools: list[ToolSpec] | None = None
    """Tools the model may call; ``None`` offers none (the engine offers none in the last
    round it allows)."""
    tool_choice: str | dict[str, Any] | None = None
    """``auto``, ``none``, ``required`` or ``{"type": "function", "function": {"name": ...}}``."""
    temperature: float | None = None
    """Sampling temperature (0 to 2 through the OpenAI API); ``None`` for the provider's
    default."""
    max_tokens: int | None = None
    """The most tokens the reply may have; ``None`` for the provider's default."""
    stop: list[str] | None = None
    """Sequences that end the reply when the model writes one; ``None`` for none."""
    user: str | None = None
    """The principal the request is made for; used for budgets and auditing."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    """Free-form context for plugins (conversation id, request id...); never sent to the model."""


class ChatChunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One piece of a streamed reply. Text arrives as ``delta``; the last chunk has
    ``finish_reason`` and, when known, ``usage``."""

    delta: str = ""
    """The next piece of the reply's text; empty in chunks that carry only tool calls or the
    finish."""
    tool_calls: list[ToolCall] | None = None
    """Complete tool calls; providers assemble partial calls before yielding them."""
    finish_reason: str | None = None
    """``stop``, ``length``, ``tool_calls`` or ``error`` on the final chunk."""
    usage: Usage | None = None
    """Tokens and cost of the whole reply, on the final chunk when the provider reports them;
    ``None`` otherwise."""


class ChatResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A complete reply from an LLM provider."""

    model: str
    """The model that answered (the request's :attr:`ChatRequest.model`)."""
    message: Message
    """The reply: an ``assistant`` message, with ``tool_calls`` when the model asks for tools."""
    finish_reason: str = "stop"
    """Why the reply ended: ``stop``, ``length`` or ``tool_calls``. For a streamed reply, what
    ``after_llm_response`` sees may also be ``error``, or ``cancelled`` when the reader left."""
    usage: Usage = msgspec.field(default_factory=Usage)
    """Tokens and cost of producing the reply."""
    id: str = msgspec.field(default_factory=lambda: new_id("chatcmpl-"))
    """Completion identifier (``chatcmpl-`` and random hex): the OpenAI API's ``id``."""

    @classmethod
    def of(
        cls,
        model: str,
        text: str,
        tool_calls: list[ToolCall] | None,
        usage: Usage,
        finish_reason: str | None = None,
    ) -> ChatResponse:
        """A reply from its parts; ``finish_reason`` defaults to ``tool_calls`` when there are
        tool calls, else ``stop``."""
        message = Message(
            role="assistant", content=text, tool_calls=tool_calls or None, model=model, usage=usage
        )
        reason = finish_reason or ("tool_calls" if tool_calls else "stop")
        return cls(model=model, message=message, finish_reason=reason, usage=usage)


class Health(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a component says about itself when asked."""

    status: HealthStatus = "ok"
    """How the component is doing; see :data:`HealthStatus`."""
    detail: str = ""
    """A short explanation for operators (counts, a path, what failed); may be empty."""
    backend: str | None = None
    """The backend serving now, when the component knows better than the runtime: a component
    that falls back while running (a Redis cache serving from memory while Redis is down)
    reports the stand-in here; ``None``: the backend the runtime started."""
    parts: dict[str, Health] = msgspec.field(default_factory=dict)
    """Parts of the component that fail separately (each MCP server of the MCP tool provider),
    by name: ``/health/ready`` shows each as a line of its own, ``<component>.<part>``."""


class ComponentHealth(msgspec.Struct, kw_only=True):
    """A component's health as the runtime reports it (``/health/ready`` shows these)."""

    status: HealthStatus
    """The component's status. A fallback serving in place of its primary is at best
    ``degraded``; a component that failed to start, or whose check failed or timed out, is
    ``down``."""
    backend: str
    """The backend serving now: the component's own :attr:`Health.backend` when it reports
    one, else the registered name the runtime started (the fallback's, when it serves)."""
    detail: str = ""
    """The component's own :attr:`Health.detail`, preceded by why a fallback serves, or the
    error that stopped it from starting."""
    latency_ms: float | None = None
    """How long the health check took, in milliseconds; ``None`` when none ran (the component
    failed to start)."""


class RuntimeHealth(msgspec.Struct, kw_only=True):
    """The runtime's health: the worst that matters of its components' (``/health/ready``)."""

    status: HealthStatus
    """``down`` while the runtime is not running or a critical component is down (then
    ``/health/ready`` answers 503), ``degraded`` when any component is not ``ok``, else ``ok``."""
    components: dict[str, ComponentHealth]
    """Each component's health, by label (``memory``, ``llm.offline``, ``auth.api_key``...)."""
