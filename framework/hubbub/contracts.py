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

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, Literal, Protocol, TypeAlias

import msgspec

from hubbub.events.types import Event
from hubbub.models import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Conversation,
    Health,
    MemoryItem,
    Message,
    ModelInfo,
    Page,
    Principal,
    Record,
    StoreUsage,
    Summary,
    ToolCall,
    ToolResult,
    ToolSpec,
)

__all__ = [
    "AccountStore",
    "AuthMethod",
    "BudgetCounter",
    "BudgetLedger",
    "BudgetRefusal",
    "BudgetReservation",
    "BudgetTotals",
    "CacheBackend",
    "CompleteNext",
    "Component",
    "Credentials",
    "EventLog",
    "EventSink",
    "LLMMiddleware",
    "LLMProvider",
    "LoginAttempt",
    "MemoryStore",
    "RedirectAuthMethod",
    "StreamNext",
    "Tool",
    "ToolContext",
    "ToolMiddleware",
    "ToolNext",
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
    """A key-value cache with expiry. Values are bytes so every backend stores them the same way.

    :meth:`incr`, :meth:`add` and :meth:`compare_and_set` are atomic: whatever other callers
    (other tasks, other processes sharing the backend) do at the same time, each happens whole
    or not at all. They are what counters and leases (one reply at a time per conversation,
    across processes) are built on; :meth:`get`, :meth:`set` and :meth:`delete` are plain.
    A backend that cannot reach its store raises a :class:`hubbub.errors.HubbubError` saying
    which store, never a raw client exception."""

    async def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``, or ``None`` when absent or expired."""

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, expiring after ``ttl`` seconds (never when ``None``)."""

    async def delete(self, key: str) -> bool:
        """Remove ``key``; return whether it existed."""

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to the integer under ``key`` (0 when absent) and return the new value.

        ``ttl`` applies only when the key is created, which makes fixed-window counters simple."""

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store ``value`` under ``key`` only if ``key`` is absent (or expired), expiring after
        ``ttl`` seconds; return whether it was stored. Of several callers adding the same key at
        once, exactly one gets ``True``: take a lease with it."""

    async def compare_and_set(
        self, key: str, expected: bytes, value: bytes | None, ttl: float | None = None
    ) -> bool:
        """If ``key`` holds ``expected`` now, replace it with ``value`` expiring after ``ttl``
        seconds (never when ``None``), or delete it when ``value`` is ``None``; return whether
        it did. Renew a lease with ``compare_and_set(key, token, token, ttl)`` and release it
        with ``compare_and_set(key, token, None)``: neither touches a lease someone else took
        after yours expired."""


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
        """Replace the stored conversation's title, model, metadata and ``expires_at``; bump
        ``updated_at``. Raises :class:`hubbub.errors.NotFoundError` for an unknown conversation."""

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete the conversation and all its messages; return whether it existed."""

    async def append_message(self, message: Message) -> Message:
        """Append ``message`` to its ``conversation_id`` and bump the conversation's
        ``updated_at``. Raises :class:`hubbub.errors.NotFoundError` for an unknown conversation
        and :class:`hubbub.errors.ConflictError` when a message with its id is stored already
        (a retried append is never stored twice), changing nothing."""

    async def list_messages(
        self, conversation_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Message]:
        """List the conversation's messages in the order they were appended."""

    async def recent_messages(self, conversation_id: str, *, limit: int) -> list[Message]:
        """The conversation's last ``limit`` messages, oldest first: what a model is shown."""

    async def usage(self, owner: str) -> StoreUsage:
        """What ``owner`` keeps here: their conversation count and the bytes their
        conversations, messages and memories take (each item's :func:`hubbub.models.stored_size`,
        its metadata included). Cheap enough to call before every write: per-user quotas are
        checked against it."""

    async def purge(self, *, now: float, idle_before: float | None = None, limit: int) -> int:
        """Delete at most ``limit`` items that are due, in one short transaction: conversations
        whose ``expires_at`` is at or before ``now`` or (when ``idle_before`` is given) whose
        ``updated_at`` is before it, with their messages and summary, and memories whose
        ``expires_at`` is at or before ``now``. Return how many items went; the sweeper calls
        again while the answer is ``limit``."""

    async def add_memory(self, item: MemoryItem) -> MemoryItem:
        """Store a long-term memory and return it."""

    async def list_memories(
        self, owner: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[MemoryItem]:
        """List ``owner``'s memories that have not expired, newest first."""

    async def delete_memory(self, owner: str, memory_id: str) -> bool:
        """Delete ``owner``'s memory ``memory_id``; ``False`` when there is none (another owner's
        memory is none)."""

    async def delete_memories(self, owner: str) -> int:
        """Delete all of ``owner``'s memories; return how many there were."""

    async def save_summary(self, summary: Summary) -> None:
        """Store ``summary`` as its conversation's summary, replacing any earlier one. Raises
        :class:`hubbub.errors.NotFoundError` for an unknown conversation."""

    async def get_summary(self, conversation_id: str) -> Summary | None:
        """The conversation's latest summary, or ``None``."""

    async def list_owners(self, *, limit: int = 100, cursor: str | None = None) -> Page[str]:
        """Every owner who has a conversation or a memory here, once each, in ascending order
        (the store's own order of strings, the same from page to page), paged: how
        ``hubbub store copy`` walks a whole store. Cursors as in the other listings (a
        malformed one is an :class:`~hubbub.errors.InvalidRequestError`)."""

    async def import_conversation(
        self, conversation: Conversation, messages: Sequence[Message]
    ) -> int:
        """Take in a conversation copied from another store, as it was there, in one
        transaction: store ``conversation`` exactly as given (``updated_at`` and
        ``expires_at`` included; a conversation already stored with its id is replaced only
        when ``conversation.updated_at`` is later than its own, else kept untouched), then
        append those of ``messages`` (this conversation's, oldest first) whose ids are not
        stored yet, after the ones already stored, without bumping ``updated_at``. Return how
        many messages were stored. ``hubbub store copy`` calls it once per batch of a
        conversation's messages (once with none for a conversation without messages), so a
        copy run twice stores nothing new, and a copy run again brings over what changed.
        Raises :class:`~hubbub.errors.InvalidRequestError` for a message of another
        conversation and :class:`~hubbub.errors.ConflictError` for an id stored for another
        owner."""


class AccountStore(Component, Protocol):
    """Durable records of who may sign in and how: users, login sessions, API keys. Several
    server processes sharing one store agree on them. Every operation is atomic on its own;
    :meth:`replace` compares versions so two processes never both rotate one refresh token.

    Listings are in ascending ``id`` order (the store's own string order), paged with ``after``
    (the last id of the previous page). Expired records may still be returned until
    :meth:`purge` removes them: callers check ``expires_at`` themselves.
    """

    async def create(self, record: Record) -> Record:
        """Store a new record and return it with ``version`` 1. Raises
        :class:`hubbub.errors.ConflictError`, storing nothing, when its kind already has a
        record with its ``id`` or its ``lookup``."""

    async def get(self, kind: str, record_id: str) -> Record | None:
        """The record of ``kind`` with ``record_id``, or ``None``."""

    async def find(self, kind: str, lookup: str) -> Record | None:
        """The record of ``kind`` whose ``lookup`` is ``lookup``, or ``None``."""

    async def list_records(
        self, kind: str, *, owner: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[Record]:
        """At most ``limit`` records of ``kind`` (only ``owner``'s when given) with ids after
        ``after``, in ascending id order."""

    async def replace(self, record: Record) -> Record:
        """Overwrite the stored record with the same kind and id if its version is still
        ``record.version``; return it with the version incremented. Raises
        :class:`hubbub.errors.ConflictError` (changing nothing) when the stored version differs
        or another record of the kind has the new ``lookup``, and
        :class:`hubbub.errors.NotFoundError` when there is no such record."""

    async def delete(self, kind: str, record_id: str) -> bool:
        """Delete the record; return whether it existed."""

    async def purge(self, *, now: float, limit: int) -> int:
        """Delete at most ``limit`` records (of any kind) whose ``expires_at`` is at or before
        ``now``; return how many went (callers call again while the answer is ``limit``)."""


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


class LoginAttempt(msgspec.Struct, kw_only=True, frozen=True):
    """One sign-in through another site, between ``GET /api/auth/{method}/login`` and its
    callback. The server creates it (fresh random ``state``, ``nonce`` and PKCE
    ``code_verifier``), keeps it for a few minutes under ``state`` (single use, bound to the
    browser by a cookie) and hands it to the method at both ends."""

    method: str
    """The auth method's registered name."""
    provider: str = ""
    """Which of the method's identity providers (``?provider=NAME``); empty: its first."""
    state: str
    """Sent to the provider and checked on the way back (CSRF protection)."""
    nonce: str
    """Must come back inside the ID token (replay protection)."""
    code_verifier: str
    """The PKCE secret; the provider gets its S256 challenge."""
    redirect_uri: str
    """The callback URL the provider sends the browser back to."""


class RedirectAuthMethod(AuthMethod, Protocol):
    """An auth method that signs people in through another site (OIDC, Entra ID): the server
    sends the browser to :meth:`login_url` (``GET /api/auth/{method}/login``) and hands what
    comes back to :meth:`complete_login` (``GET /api/auth/{method}/callback``); the principal it
    returns gets a hubbub session like any other login."""

    async def login_url(self, attempt: LoginAttempt) -> str:
        """Where to send the browser for ``attempt`` (the authorization request, with its
        state, nonce and code challenge). Raises :class:`hubbub.errors.NotFoundError` for an
        unknown ``attempt.provider``."""

    async def complete_login(self, attempt: LoginAttempt, params: dict[str, str]) -> Principal:
        """Turn the callback's query ``params`` into a principal (exchange the code, validate
        the ID token against the provider's keys, issuer, audience and ``attempt.nonce``), or
        raise :class:`hubbub.errors.AuthenticationError` with a reason for the log."""


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
        """Run the tool. The registry has validated ``arguments`` against ``spec.parameters``
        (a :class:`~hubbub.tools.FunctionTool` against its own type) before calling. Report an
        expected failure by raising :class:`hubbub.errors.ToolError` (or returning a result with
        ``is_error=True``); any other exception is reported to the model as a failure of the
        tool."""


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


class EventLog(Component, Protocol):
    """The ordered log every published event goes through, chosen by ``[events] backend``.

    The bus hands each event to :meth:`append` and receives it back, with its id, through the
    callback given to :meth:`attach`: at once for a log of one process (``memory``), or from a
    reader loop for a shared one (``redis``), which also hands over every other process's events,
    so every process sees one order. Ids are ``<milliseconds>-<sequence>`` and increase along the
    log, which is what lets a client resume after an id on any process that shares the log.
    """

    def attach(self, deliver: Callable[[Event], object]) -> None:
        """Hand every event of the log, in log order and stamped with its id, to ``deliver``
        (the bus's :meth:`~hubbub.events.EventBus.deliver`). Called once, before ``start()``."""

    def append(self, event: Event) -> None:
        """Add ``event`` (stamped with ``ts`` and ``origin``, without an id) to the log. Never
        blocks and never raises for an unreachable backend: it buffers (bounded, the loss
        counted and logged) and events still reach this process's subscribers."""

    async def read_after(
        self,
        event_id: str,
        *,
        owner: str | None = None,
        conversation_id: str | None = None,
        limit: int = 10_000,
    ) -> list[Event] | None:
        """The events after ``event_id`` still in the log (of ``owner``, and of its
        ``conversation_id``, when given), oldest first, at most ``limit``. ``None`` when the log
        cannot tell what followed that id (older than its retention, from another log, or
        malformed): the client must reload instead of resuming."""

    @property
    def last_id(self) -> str | None:
        """The id of the newest event delivered to this process (``None`` before any)."""


class BudgetCounter(msgspec.Struct, kw_only=True, frozen=True):
    """One counter a reservation draws on: a scope's spending in one period, and its limits."""

    key: str
    """Names the counter where the ledger keeps it, period included: ``user:alice:d20261130``."""
    scope: str
    """The budget's scope: ``user``, ``key`` or ``global``."""
    period: Literal["day", "month"]
    """The period the counter covers (UTC)."""
    period_end: float
    """When the period ends (Unix seconds): the counter is not needed after it."""
    tokens: int | None = None
    """Most tokens the period may use; ``None``: tokens are counted, not limited."""
    cost: Decimal | None = None
    """Most US dollars the period may cost; ``None``: cost is counted, not limited."""


class BudgetReservation(msgspec.Struct, kw_only=True, frozen=True):
    """What :meth:`BudgetLedger.reserve` granted: a lease on some tokens and cost in every
    counter it names, until it is settled, released, or it expires."""

    id: str
    """Unique among the ledger's reservations."""
    counters: tuple[BudgetCounter, ...]
    """The counters it draws on."""
    tokens: int
    """Tokens held in each counter."""
    cost: Decimal
    """US dollars held in each counter."""
    expires_at: float
    """When the lease ends (Unix seconds) if nobody settles or releases it: a crashed
    process's reservation stops counting then."""


class BudgetRefusal(msgspec.Struct, kw_only=True, frozen=True):
    """Why :meth:`BudgetLedger.reserve` granted nothing: the first counter that would be
    exceeded."""

    counter: BudgetCounter
    """The counter that has no room."""
    unit: Literal["tokens", "cost"]
    """Which of its limits would be exceeded."""
    used: str
    """What the period has used and holds in live reservations, in ``unit`` (a decimal string
    for a cost)."""
    limit: str
    """The limit, in ``unit``."""


class BudgetTotals(msgspec.Struct, kw_only=True, frozen=True):
    """One counter as it stands."""

    key: str
    """The counter's key (:attr:`BudgetCounter.key`)."""
    tokens: int = 0
    """Tokens settled (spent) in the period."""
    cost: Decimal = Decimal(0)
    """US dollars settled in the period."""
    reserved_tokens: int = 0
    """Tokens held by live reservations."""
    reserved_cost: Decimal = Decimal(0)
    """US dollars held by live reservations."""


class BudgetLedger(Component, Protocol):
    """Where budgets are counted (``[budgets] backend``): counters of tokens and cost, reserved
    before an LLM call and settled after it, atomic over several counters at once, shared by
    every process that shares the ledger.

    A reservation is a lease: it counts against its counters until it is settled, released or
    expires, so a process that crashed holding one cannot keep the budget it held. Costs are
    exact :class:`decimal.Decimal` US dollars (a backend that stores integers keeps at least
    nanodollars, rounding a reservation up)."""

    async def reserve(
        self,
        counters: Sequence[BudgetCounter],
        tokens: int,
        cost: Decimal,
        lease_seconds: float,
    ) -> BudgetReservation | BudgetRefusal:
        """Hold ``tokens`` and ``cost`` in every counter, all or nothing, in one atomic step:
        a counter has room when what it settled plus what live reservations hold plus this
        request stays within each of its limits. Return the reservation, or the refusal of the
        first counter without room (holding nothing). Expired leases are not counted."""

    async def settle(self, reservation: BudgetReservation, tokens: int, cost: Decimal) -> None:
        """End ``reservation`` and add what the call really used to every counter it named
        (also when the lease has expired already: the spending happened)."""

    async def release(self, reservation: BudgetReservation) -> None:
        """End ``reservation`` without spending anything (the call failed before using any)."""

    async def totals(self, keys: Sequence[str]) -> list[BudgetTotals]:
        """Each counter in ``keys`` as it stands now, in that order (zeros for a counter never
        used)."""


CompleteNext: TypeAlias = Callable[[ChatRequest], Awaitable[ChatResponse]]
"""The rest of the chain for a whole reply: the next middleware, or finally the client's own
handler, which routes ``request.model`` to its provider (see :class:`LLMMiddleware`)."""

StreamNext: TypeAlias = Callable[[ChatRequest], AsyncIterator[ChatChunk]]
"""The rest of the chain for a streamed reply. Calling it never raises: it returns the chunks,
and refusals and failures of the inner layers come out of iterating them."""

ToolNext: TypeAlias = Callable[[ToolCall, ToolContext], Awaitable[ToolResult]]
"""The rest of the chain for a tool call: the next middleware, or finally the tool registry's
own call path (lookup, argument decoding, timeout, errors as results)."""


class LLMMiddleware(Component, Protocol):
    """Code around every LLM request: budgets, redaction, tracing, guardrails.

    Middleware form an onion ordered by :attr:`priority`: the lowest is outermost, first to see
    the request and last to see the reply or the failure; equal priorities keep registration
    order. Each layer receives the request and ``call_next``, the rest of the chain. It may
    change the request (in place or by passing another one on, even with another ``model``:
    routing happens innermost, after every middleware), refuse it by raising a
    :class:`hubbub.errors.HubbubError` without calling ``call_next``, call ``call_next`` more
    than once (a retry, a fallback model), and see or change what comes back. Provider failures
    arrive as :class:`hubbub.errors.ProviderError` (``ProviderTimeoutError`` when too slow).

    Both methods must be implemented, since a request is either whole or streamed;
    :class:`hubbub.middleware.LLMMiddlewareBase` passes both through, so a subclass overrides
    only what it needs, and :class:`hubbub.middleware.LLMCallbacks` turns plain ``before`` /
    ``after`` / ``on_error`` callbacks into both.
    """

    @property
    def priority(self) -> int:
        """Position in the chain: lower runs first on the way in and last on the way out.
        Read once, when the chain is built."""

    async def complete(self, request: ChatRequest, call_next: CompleteNext) -> ChatResponse:
        """Handle a request for a whole reply: usually ``return await call_next(request)``,
        with work before and after. Raise a :class:`hubbub.errors.HubbubError` to refuse."""

    def stream(self, request: ChatRequest, call_next: StreamNext) -> AsyncIterator[ChatChunk]:
        """Handle a request for a streamed reply, as an async generator: inspect, change or
        refuse the request, then ``async for chunk in call_next(request)`` and yield (or
        change, hold back, add) chunks. Use ``try``/``except``/``finally`` around the loop to
        see a failure (it is re-raised unless you raise another) and the end of the stream:
        ``finally`` also runs when the reader leaves early (the chain closes every layer,
        innermost first), though no chunk can be yielded then. The last chunk carries
        ``finish_reason`` and, when known, ``usage``."""


class ToolMiddleware(Component, Protocol):
    """Code around every tool call: approval, argument redaction, auditing, limits, timing.

    Ordered like :class:`LLMMiddleware` (lowest :attr:`priority` outermost, ties in registration
    order). A layer may change the call (``msgspec.structs.replace(call, arguments=...)``),
    refuse it by returning a result with ``is_error=True`` (or by raising a
    :class:`hubbub.errors.HubbubError`, which the registry turns into such a result: a tool
    call never raises), and see or change the result. Unknown tools and invalid arguments reach
    the middleware too; they become error results innermost.
    """

    @property
    def priority(self) -> int:
        """Position in the chain: lower runs first on the way in and last on the way out.
        Read once, when the chain is built."""

    async def call_tool(
        self, call: ToolCall, context: ToolContext, call_next: ToolNext
    ) -> ToolResult:
        """Handle one tool call: usually ``return await call_next(call, context)``, with work
        before and after; return an error :class:`hubbub.models.ToolResult` to refuse."""
