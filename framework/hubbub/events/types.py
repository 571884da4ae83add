"""The typed events hubbub publishes.

Events are frozen msgspec structs tagged by ``type`` (the SSE ``event:`` name), so one decoder
turns any event's JSON back into the right class. Subscribers share one instance of each event,
so none can change what another sees; the bus stamps ``id``, ``ts`` and ``origin`` on a copy
(:func:`msgspec.structs.replace`) when the event is published.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from hubbub.models import Conversation, Message, ToolCall, ToolResult, Usage

__all__ = [
    "AnyEvent",
    "CancelRequested",
    "ConversationUpdated",
    "ErrorEvent",
    "Event",
    "MessageCompleted",
    "MessageCreated",
    "MessageDelta",
    "Reset",
    "SessionRevoked",
    "Shutdown",
    "Status",
    "ToolFinished",
    "ToolStarted",
    "Typing",
    "UsageRecorded",
    "decode_event",
]


class Event(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True, tag_field="type"):
    """Base of every event. The bus fills in ``id`` and ``ts`` when the event is published."""

    id: str = ""
    """Ordered identifier (``<milliseconds>-<sequence>``, assigned by the event log: with the
    Redis log, by Redis, so ids order events across processes), the SSE ``id:`` used to
    resume."""
    ts: float = 0.0
    """When the event was published (Unix seconds)."""
    conversation_id: str | None = None
    """The conversation the event belongs to, if any."""
    owner: str | None = None
    """The principal allowed to see the event; ``None`` for events meant for operators only."""
    origin: str = ""
    """The bus (one per runtime, so per process) that published the event first. Sinks that
    forward events to other processes forward only their own bus's, which prevents echoes."""

    @property
    def type(self) -> str:
        """The event's type name, e.g. ``message.delta``."""
        tag = type(self).__struct_config__.tag
        return str(tag)


class MessageCreated(Event, tag="message.created", frozen=True):
    """A message was added to a conversation (the user's, or the start of a reply)."""

    message: Message
    """The new message: the user's or a tool result as stored, or, when a reply starts, the
    ``assistant`` message before any text (its ``id`` is the one the deltas and the
    ``message.completed`` event carry)."""


class MessageDelta(Event, tag="message.delta", frozen=True):
    """A piece of a reply being streamed."""

    message_id: str
    """The :attr:`~hubbub.models.Message.id` of the reply being streamed, announced by
    ``message.created``."""
    delta: str
    """The next piece of the reply's text, to append to the pieces before it."""


class MessageCompleted(Event, tag="message.completed", frozen=True):
    """A reply is finished and stored."""

    message: Message
    """The finished ``assistant`` message as stored, with its ``usage`` and, when it asks for
    tools, ``tool_calls``."""


class Typing(Event, tag="typing", frozen=True):
    """Someone (the assistant, usually) started or stopped composing."""

    active: bool
    """True when composing starts, false when it stops."""
    who: str = "assistant"
    """Who is composing; the engine reports only ``assistant``."""


class Status(Event, tag="status", frozen=True):
    """Progress of a reply: ``thinking``, ``calling_tool``, ``retrying``, ``fallback``,
    ``idle``."""

    state: str
    """``thinking`` (waiting for the model), ``calling_tool`` (running a tool), ``retrying``
    (a model failed and is tried again), ``fallback`` (a model failed for good and the next
    of its ``[llm.fallbacks]`` is tried) or ``idle`` (the reply ended, however it ended)."""
    detail: str = ""
    """The model (``thinking``), the tool (``calling_tool``), what failed and what comes next
    (``retrying``, ``fallback``); empty otherwise."""


SUMMARY_CHARS = 200
"""The longest :attr:`ToolFinished.summary`."""
EVENT_CONTENT_CHARS = 16 * 1024
"""The most of a tool result's content a :class:`ToolFinished` event carries; larger ``data``
(encoded) is left out of the event."""
_ENCODER = msgspec.json.Encoder()


class ToolStarted(Event, tag="tool.started", frozen=True):
    """A tool call began."""

    call: ToolCall
    """The call as the model made it (``arguments`` as JSON text)."""


class ToolFinished(Event, tag="tool.finished", frozen=True):
    """A tool call ended (``result.is_error`` says whether it failed)."""

    result: ToolResult
    """What the tool produced; ``result.call_id`` names the call. Its ``content`` is cut at
    16 KiB here (the stored ``tool`` message has it whole)."""
    duration_ms: float = 0.0
    """How long the call took, in milliseconds."""
    summary: str = ""
    """The start of the result, on one line (at most 200 characters), for a status line."""
    error: str | None = None
    """Why the call failed (the result's content) when it did; ``None`` when it succeeded."""

    @classmethod
    def of(cls, result: ToolResult, duration_ms: float) -> ToolFinished:
        """The event for ``result``, which took ``duration_ms``."""
        content = result.content
        line = " ".join(content[:400].split())
        summary = line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 3] + "..."
        if len(content) > EVENT_CONTENT_CHARS:
            result = msgspec.structs.replace(
                result, content=content[:EVENT_CONTENT_CHARS] + "...", data=None
            )
        elif result.data is not None and len(_ENCODER.encode(result.data)) > EVENT_CONTENT_CHARS:
            result = msgspec.structs.replace(result, data=None)
        return cls(
            result=result,
            duration_ms=duration_ms,
            summary=summary,
            error=summary if result.is_error else None,
        )


class ConversationUpdated(Event, tag="conversation.updated", frozen=True):
    """A conversation was created, renamed, or deleted."""

    change: Literal["created", "updated", "deleted"]
    """``created``, ``updated`` (renamed, or its model changed) or ``deleted``."""
    conversation: Conversation | None = None
    """The conversation as stored after the change; ``None`` when it was deleted."""


class UsageRecorded(Event, tag="usage", frozen=True):
    """An LLM request consumed tokens."""

    model: str
    """The model the request went to (after the LLM middleware, which may change it)."""
    usage: Usage
    """What the provider reported (tokens it did not report are counted by the LLM client), and
    its :attr:`~hubbub.models.Usage.cost`; for a stream cut short, what was used before the
    end."""
    provider: str | None = None
    """The registered LLM provider that served the request; ``None`` when unknown."""
    key_id: str | None = None
    """The API key the caller used (``request.metadata["key_id"]``); ``None`` for a login
    session or an in-process caller."""
    request_id: str | None = None
    """The request it was made for (the server's request id, or a conversation reply's id), to
    match usage to logs; ``None`` when the caller gave none."""


class ErrorEvent(Event, tag="error", frozen=True):
    """Something failed while serving a conversation; ``message`` is safe to show the user."""

    code: str
    """Machine-readable: a :class:`hubbub.errors.HubbubError`'s ``code`` (``provider_timeout``,
    ``model_not_found``...), ``interrupted`` (the server is stopping) or ``internal_error``."""
    message: str
    """What went wrong, in words safe to show the user (no traceback)."""


class SessionRevoked(Event, tag="session.revoked", frozen=True):
    """A credential (a login session or an API key) was revoked; every process stops honouring
    it, and the streams it opened get this event last and close."""

    session_id: str
    """The revoked credential: a :attr:`~hubbub.models.Session.id` or an API key's id (what a
    principal carries as ``credential_id``)."""
    principal_id: str
    """The :attr:`~hubbub.models.Principal.id` the credential belonged to."""


class CancelRequested(Event, tag="reply.cancel", frozen=True):
    """Someone asked to stop the reply in progress in ``conversation_id``; the process running
    it (whichever it is) stops it, stores its partial text marked ``interrupted`` and ends it
    with ``message.completed``."""

    reason: str = "cancelled"
    """Why: ``cancelled`` (``POST /api/conversations/{id}/cancel``), ``disconnected`` (the
    client waiting for the reply left) or ``deleted`` (the conversation is being deleted)."""
    reply_id: str = ""
    """The reply to stop: the id it holds the conversation's reply lease under (the requester
    reads it from the lease). A request naming another reply is ignored, so a late one never
    stops a newer reply; empty: whatever reply runs when the request arrives."""


class Reset(Event, tag="reset", frozen=True):
    """First event of a stream resumed from an id the log no longer has (older than its
    retention, or unknown): events were missed, so the client reloads what it shows (the
    conversation, its messages) and carries on from this event's ``id``."""

    reason: str
    """What happened, in words safe to show the user."""
    last_event_id: str = ""
    """The ``Last-Event-ID`` the client asked to resume after."""


class Shutdown(Event, tag="shutdown", frozen=True):
    """Last event of every stream of a process that is stopping: reconnect (to any process,
    with this event's ``id`` as ``Last-Event-ID``) to carry on without a gap."""

    retry_after: float
    """Seconds to wait before reconnecting (a random delay up to twice it spreads the
    reconnections of many clients)."""


AnyEvent = (
    MessageCreated
    | MessageDelta
    | MessageCompleted
    | Typing
    | Status
    | ToolStarted
    | ToolFinished
    | ConversationUpdated
    | UsageRecorded
    | ErrorEvent
    | SessionRevoked
    | CancelRequested
    | Reset
    | Shutdown
)
"""Every event type this version of hubbub defines."""

_decoder = msgspec.json.Decoder(AnyEvent)


def decode_event(data: bytes | str) -> Event:
    """Decode an event's JSON (as the bus, SSE and Redis carry it) into its class."""
    event: Event = _decoder.decode(data)
    return event
