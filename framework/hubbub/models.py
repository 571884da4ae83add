"""The data that crosses component boundaries, defined once.

Every struct here is a :class:`msgspec.Struct`: cheap to build, validated when decoded, and encoded
to JSON without a conversion layer. Components, the conversation engine and the reference server
all exchange these types; nothing else redefines them.
"""

from __future__ import annotations

import os
import time
from typing import Any, Literal

import msgspec

__all__ = [
    "ChatChunk",
    "ChatRequest",
    "ChatResponse",
    "ComponentHealth",
    "Conversation",
    "Health",
    "HealthStatus",
    "Message",
    "ModelInfo",
    "Page",
    "Principal",
    "Role",
    "RuntimeHealth",
    "Session",
    "ToolCall",
    "ToolResult",
    "ToolSpec",
    "Usage",
    "new_id",
    "now",
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
    """How a tool presents itself to models and clients."""

    name: str
    """Unique name (letters, digits, ``_`` and ``-``), used in tool calls."""
    description: str = ""
    """What the tool does, written for the model."""
    parameters: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    """JSON Schema of the arguments object."""
    source: str = ""
    """The registration (plugin component) that provides the tool."""


class Usage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Tokens consumed by one LLM request, and their cost when known."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float | None = None
    """Estimated cost in US dollars; ``None`` when the price is unknown (0.0 means free)."""

    def __add__(self, other: Usage) -> Usage:
        cost: float | None
        if self.cost_usd is None and other.cost_usd is None:
            cost = None
        else:
            cost = (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cost_usd=cost,
        )


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message of a conversation, as stored and as sent to a model."""

    role: Role
    content: str = ""
    id: str = msgspec.field(default_factory=lambda: new_id("msg_"))
    conversation_id: str | None = None
    created_at: float = msgspec.field(default_factory=now)
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


class Conversation(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A conversation: an owned, titled sequence of messages."""

    owner: str
    """The :attr:`Principal.id` that created it; nobody else can see it."""
    id: str = msgspec.field(default_factory=lambda: new_id("conv_"))
    title: str = ""
    model: str | None = None
    """Model used for replies when a request names none."""
    created_at: float = msgspec.field(default_factory=now)
    updated_at: float = msgspec.field(default_factory=now)
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class Page(msgspec.Struct, kw_only=True):
    """One page of a listing, with the cursor that fetches the next one."""

    items: list[Any]
    next_cursor: str | None = None
    """Pass back as ``cursor`` to get the next page; ``None`` on the last page."""


class Principal(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """An authenticated caller."""

    id: str
    """Stable identifier; owns conversations and API keys."""
    name: str = ""
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
    expires_at: float | None = None
    """When the credentials stop being valid (Unix seconds), if they expire."""


class Session(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A login session of a principal, listed to its owner and revocable."""

    principal_id: str
    id: str = msgspec.field(default_factory=lambda: new_id("ses_"))
    auth_method: str = ""
    created_at: float = msgspec.field(default_factory=now)
    expires_at: float | None = None
    last_seen_at: float | None = None
    user_agent: str | None = None
    ip: str | None = None
    revoked: bool = False


class ModelInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A model an LLM provider serves."""

    id: str
    """The name clients use, e.g. ``offline/echo`` or ``openai/gpt-4o-mini``."""
    provider: str
    """The registered provider that serves it."""
    description: str = ""
    context_window: int | None = None
    supports_tools: bool = False


class ChatRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A request to an LLM provider. Interception hooks may change it before it is sent."""

    model: str
    messages: list[Message]
    tools: list[ToolSpec] | None = None
    tool_choice: str | dict[str, Any] | None = None
    """``auto``, ``none``, ``required`` or ``{"type": "function", "function": {"name": ...}}``."""
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    user: str | None = None
    """The principal the request is made for; used for budgets and auditing."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    """Free-form context for plugins (conversation id, request id...); never sent to the model."""


class ChatChunk(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One piece of a streamed reply. Text arrives as ``delta``; the last chunk has
    ``finish_reason`` and, when known, ``usage``."""

    delta: str = ""
    tool_calls: list[ToolCall] | None = None
    """Complete tool calls; providers assemble partial calls before yielding them."""
    finish_reason: str | None = None
    """``stop``, ``length``, ``tool_calls`` or ``error`` on the final chunk."""
    usage: Usage | None = None


class ChatResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A complete reply from an LLM provider."""

    model: str
    message: Message
    finish_reason: str = "stop"
    usage: Usage = msgspec.field(default_factory=Usage)
    id: str = msgspec.field(default_factory=lambda: new_id("chatcmpl-"))


class Health(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a component says about itself when asked."""

    status: HealthStatus = "ok"
    detail: str = ""


class ComponentHealth(msgspec.Struct, kw_only=True):
    """A component's health as the runtime reports it (``/health/ready`` shows these)."""

    status: HealthStatus
    backend: str
    """The registered name of the backend serving now (the fallback's, when it serves)."""
    detail: str = ""
    latency_ms: float | None = None
    """How long the health check took."""


class RuntimeHealth(msgspec.Struct, kw_only=True):
    """The runtime's health: the worst that matters of its components' (``/health/ready``)."""

    status: HealthStatus
    components: dict[str, ComponentHealth]
