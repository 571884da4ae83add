"""The extension contracts: one :class:`typing.Protocol` per kind of component a plugin can provide.

Every component shares the :class:`Component` lifecycle: the runtime calls ``start()`` once before
use, ``health()`` whenever it is asked, and ``aclose()`` once on shutdown (even when ``start()``
failed part-way, so ``aclose()`` must be safe to call on a half-started object). All methods are
coroutines; blocking work (files, sqlite, hashing) belongs in a thread, never on the event loop.

Plugins hand factories for these objects to the ``register_*`` hooks (see :mod:`hubbub.hookspecs`);
the runtime checks each built object with :func:`hubbub.registry.check_component`, which names the
missing methods instead of failing later.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import msgspec

from hubbub.events.types import Event
from hubbub.models import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Conversation,
    Health,
    Message,
    ModelInfo,
    Page,
    Principal,
    ToolResult,
    ToolSpec,
)

__all__ = [
    "AuthMethod",
    "CacheBackend",
    "Component",
    "Credentials",
    "EventSink",
    "LLMProvider",
    "MemoryStore",
    "RedirectAuthMethod",
    "Tool",
    "ToolContext",
    "ToolProvider",
]


class Component(Protocol):
    """The lifecycle every component shares."""

    async def start(self) -> None:
        """Acquire resources (connections, files, schema). Called once, before any other use."""

    async def health(self) -> Health:
        """Report whether the component can serve now. Keep it cheap: it backs readiness probes."""

    async def aclose(self) -> None:
        """Release every resource. Called once on shutdown, also after a failed ``start()``."""


class CacheBackend(Component, Protocol):
    """A key-value cache with expiry. Values are bytes so every backend stores them the same way."""

    async def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``, or ``None`` when absent or expired."""

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl`` seconds (never when ``None``)."""

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to the integer under ``key`` (0 when absent) and return the new value.

        ``ttl`` applies only when the key is created, which makes fixed-window counters simple."""


class MemoryStore(Component, Protocol):
    """Durable storage of conversations and their messages.

    Listings are newest-first for conversations and oldest-first for messages, paged by an opaque
    cursor the store chooses.
    """

    async def create_conversation(self, conversation: Conversation) -> Conversation:
        """Store a new conversation and return it."""

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """Return the conversation, or ``None`` when it does not exist."""

    async def list_conversations(
        self, owner: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Conversation]:
        """List ``owner``'s conversations, most recently updated first."""

    async def update_conversation(self, conversation: Conversation) -> Conversation:
        """Replace the stored conversation's title, model and metadata; bump ``updated_at``."""

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete the conversation and all its messages; return whether it existed."""

    async def append_message(self, message: Message) -> Message:
        """Append ``message`` to its ``conversation_id`` and bump the conversation's
        ``updated_at``. Raises :class:`hubbub.errors.NotFoundError` for an unknown conversation."""

    async def list_messages(
        self, conversation_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Message]:
        """List the conversation's messages in the order they were appended."""

    async def recent_messages(self, conversation_id: str, *, limit: int) -> list[Message]:
        """The conversation's last ``limit`` messages, oldest first: what a model is shown."""


class Credentials(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a caller presented to prove who they are; auth methods pick what they understand."""

    bearer: str | None = None
    """The token from ``Authorization: Bearer ...``."""
    username: str | None = None
    """A user name, for methods that check passwords; ``None`` when none was given (the
    reference server passes only ``bearer`` and ``headers``)."""
    password: str | None = None
    """The password that goes with ``username``; ``None`` when none was given."""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    """Request headers, lower-cased, for methods that read their own."""


class AuthMethod(Component, Protocol):
    """A way for callers to authenticate (API keys, local passwords, OIDC, ...)."""

    async def authenticate(self, credentials: Credentials) -> Principal | None:
        """Return the principal these credentials prove, or ``None`` if this method does not
        recognise them. Raise :class:`hubbub.errors.AuthenticationError` for credentials it
        recognises but rejects (expired, revoked, forged), so no other method is tried."""

    async def is_provisioned(self) -> bool:
        """Whether this method can authenticate anyone yet (at least one API key, user or
        identity provider is set up). While no enabled method is, a server bound to loopback
        serves a local user without credentials; any other server refuses to start."""


class RedirectAuthMethod(AuthMethod, Protocol):
    """An auth method that signs people in through another site (OIDC, Entra ID): the server
    sends the browser to :meth:`login_url` (``GET /api/auth/{method}/login``) and hands what
    comes back to :meth:`complete_login` (``GET /api/auth/{method}/callback``)."""

    async def login_url(self, *, redirect_uri: str, state: str) -> str:
        """Where to send the browser; ``state`` must come back unchanged."""

    async def complete_login(self, *, params: dict[str, str], redirect_uri: str) -> Principal:
        """Turn the callback's query parameters into a principal, or raise
        :class:`hubbub.errors.AuthenticationError`."""


class LLMProvider(Component, Protocol):
    """A source of chat completions (a local model, an API through litellm, the offline model)."""

    async def list_models(self) -> Sequence[ModelInfo]:
        """The models this provider serves; called after ``start()``."""

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Produce a whole reply."""

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Produce a reply piece by piece; the last chunk carries ``finish_reason``."""


class ToolContext(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Who a tool runs for and where."""

    principal: Principal | None = None
    """Who the tool runs for (the conversation's owner); ``None`` when the caller named
    nobody."""
    conversation_id: str | None = None
    """The conversation whose reply called the tool; ``None`` outside a conversation."""
    request_id: str | None = None
    """The HTTP request that started the reply (the ``X-Request-ID`` the server answers
    with), for logs; ``None`` when no request did."""


class Tool(Protocol):
    """One callable tool."""

    @property
    def spec(self) -> ToolSpec:
        """Name, description and JSON Schema of the arguments."""

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        """Run the tool. Arguments were validated against ``spec.parameters``' shape by the
        caller only as far as being a JSON object; validate the rest and report problems as a
        result with ``is_error=True`` rather than raising."""


class ToolProvider(Component, Protocol):
    """A set of tools from one registration: a few Python functions, or everything an MCP server
    offers. ``tools()`` may change over time (an MCP server can add tools)."""

    def tools(self) -> Sequence[Tool]:
        """The tools available now; called after ``start()``."""


class EventSink(Component, Protocol):
    """A consumer of every published event: a log, an SSE broker, a Redis fan-out, metrics.

    Each sink gets its own bounded queue; a sink that falls behind loses the oldest events (and the
    loss is counted and logged), it never slows publishers or grows memory. A sink that forwards
    events to other processes forwards only those whose ``origin`` is its own bus's
    (``runtime.events.origin``); the other side hands them to its bus with
    :meth:`hubbub.events.EventBus.deliver`."""

    async def handle(self, event: Event) -> None:
        """Consume one event. Exceptions are logged and do not stop delivery."""
