"""Typed events and the in-process event bus.

Events are msgspec structs tagged by ``type`` (the SSE ``event:`` name), so one decoder turns any
event's JSON back into the right class. The :class:`EventBus` is built on a private
:class:`blinker.Signal`: :meth:`EventBus.publish` is synchronous and never blocks, because each
subscriber owns a bounded queue. A subscriber that falls behind loses its oldest events, counted in
:attr:`Subscription.dropped`, instead of growing memory or slowing the publisher.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import blinker
import msgspec

from hubbub.models import Conversation, Health, Message, ToolCall, ToolResult, Usage, new_id

__all__ = [
    "AnyEvent",
    "ConversationUpdated",
    "ErrorEvent",
    "Event",
    "EventBus",
    "MessageCompleted",
    "MessageCreated",
    "MessageDelta",
    "SessionRevoked",
    "Status",
    "Subscription",
    "ToolFinished",
    "ToolStarted",
    "Typing",
    "UsageRecorded",
    "decode_event",
]

logger = logging.getLogger("hubbub.events")


class Event(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="type"):
    """Base of every event. The bus fills in ``id`` and ``ts`` when the event is published."""

    id: str = ""
    """Ordered identifier (``<milliseconds>-<sequence>``), the SSE ``id:`` used to resume."""
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


class MessageCreated(Event, tag="message.created"):
    """A message was added to a conversation (the user's, or the start of a reply)."""

    message: Message
    """The new message: the user's or a tool result as stored, or, when a reply starts, the
    ``assistant`` message before any text (its ``id`` is the one the deltas and the
    ``message.completed`` event carry)."""


class MessageDelta(Event, tag="message.delta"):
    """A piece of a reply being streamed."""

    message_id: str
    """The :attr:`~hubbub.models.Message.id` of the reply being streamed, announced by
    ``message.created``."""
    delta: str
    """The next piece of the reply's text, to append to the pieces before it."""


class MessageCompleted(Event, tag="message.completed"):
    """A reply is finished and stored."""

    message: Message
    """The finished ``assistant`` message as stored, with its ``usage`` and, when it asks for
    tools, ``tool_calls``."""


class Typing(Event, tag="typing"):
    """Someone (the assistant, usually) started or stopped composing."""

    active: bool
    """True when composing starts, false when it stops."""
    who: str = "assistant"
    """Who is composing; the engine reports only ``assistant``."""


class Status(Event, tag="status"):
    """Progress of a reply: ``thinking``, ``calling_tool``, ``idle``..."""

    state: str
    """``thinking`` (waiting for the model), ``calling_tool`` (running a tool) or ``idle``
    (the reply ended, however it ended)."""
    detail: str = ""
    """The model (``thinking``) or the tool (``calling_tool``); empty otherwise."""


class ToolStarted(Event, tag="tool.started"):
    """A tool call began."""

    call: ToolCall
    """The call as the model made it (``arguments`` as JSON text)."""


class ToolFinished(Event, tag="tool.finished"):
    """A tool call ended (``result.is_error`` says whether it failed)."""

    result: ToolResult
    """What the tool produced; ``result.call_id`` names the call."""
    duration_ms: float = 0.0
    """How long the call took, in milliseconds."""


class ConversationUpdated(Event, tag="conversation.updated"):
    """A conversation was created, renamed, or deleted."""

    change: Literal["created", "updated", "deleted"]
    """``created``, ``updated`` (renamed, or its model changed) or ``deleted``."""
    conversation: Conversation | None = None
    """The conversation as stored after the change; ``None`` when it was deleted."""


class UsageRecorded(Event, tag="usage"):
    """An LLM request consumed tokens."""

    model: str
    """The model the request went to (after the ``before_llm_request`` hooks)."""
    usage: Usage
    """What the provider reported; for a stream cut short, what it reported before the end."""


class ErrorEvent(Event, tag="error"):
    """Something failed while serving a conversation; ``message`` is safe to show the user."""

    code: str
    """Machine-readable: a :class:`hubbub.errors.HubbubError`'s ``code`` (``provider_timeout``,
    ``model_not_found``...), ``interrupted`` (the server is stopping) or ``internal_error``."""
    message: str
    """What went wrong, in words safe to show the user (no traceback)."""


class SessionRevoked(Event, tag="session.revoked"):
    """A login session was revoked; every process must stop honouring it."""

    session_id: str
    """The revoked :attr:`~hubbub.models.Session.id` (a principal's ``session_id``)."""
    principal_id: str
    """The :attr:`~hubbub.models.Principal.id` the session belonged to."""


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
)
"""Every event type this version of hubbub defines."""

_decoder = msgspec.json.Decoder(AnyEvent)


def decode_event(data: bytes | str) -> Event:
    """Decode an event's JSON (as the bus, SSE and Redis carry it) into its class."""
    event: Event = _decoder.decode(data)
    return event


Predicate = Callable[[Event], bool]


class Subscription:
    """A bounded queue of events from the bus; iterate it with ``async for``.

    Close it (or leave its ``with`` block) to disconnect from the bus; the bus also closes every
    subscription when it shuts down, which ends their iteration.
    """

    def __init__(self, bus: EventBus, predicate: Predicate | None, maxsize: int) -> None:
        self._bus = bus
        self._predicate = predicate
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0
        """How many events were discarded because this subscriber fell behind."""
        self.closed = False

    def _receive(self, sender: Any, *, event: Event) -> None:
        if self.closed or (self._predicate is not None and not self._predicate(event)):
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._queue.get_nowait()
            self._queue.put_nowait(event)
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "slow event subscriber: %d events dropped",
                    self.dropped,
                    extra={"dropped": self.dropped},
                )

    async def get(self) -> Event | None:
        """Wait for the next event; ``None`` once the subscription is closed and drained."""
        if self.closed and self._queue.empty():
            return None
        return await self._queue.get()

    def close(self) -> None:
        """Disconnect from the bus and wake any waiting reader."""
        if self.closed:
            return
        self.closed = True
        self._bus._disconnect(self)
        # Wake a waiting reader. A full queue has no waiting reader, and get() ends the
        # iteration once a closed subscription's queue is drained, so no event is lost.
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while (event := await self.get()) is not None:
            yield event

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Publishes events to subscribers in this process. One per runtime; nothing global."""

    def __init__(self, *, queue_size: int = 1000, history_size: int = 1000) -> None:
        self._signal = blinker.Signal("hubbub events")
        self._subscriptions: set[Subscription] = set()
        self._sequence = itertools.count(1)
        self.queue_size = queue_size
        self.published = 0
        self.origin = new_id("bus_")
        """This bus's name, stamped on the events it publishes (:attr:`Event.origin`)."""
        self._history: collections.deque[Event] = collections.deque(maxlen=history_size)

    def publish(self, event: Event) -> Event:
        """Stamp ``event`` (id, time, origin: whatever is not set yet) and hand it to every
        subscriber. Never blocks."""
        if not event.id:
            now = time.time()
            event.ts = now
            event.id = f"{int(now * 1000)}-{next(self._sequence)}"
        if not event.origin:
            event.origin = self.origin
        return self.deliver(event)

    def deliver(self, event: Event) -> Event:
        """Hand an already stamped event to every subscriber as it is: for events that arrive
        from another process (a Redis fan-out plugin calls this). Never blocks."""
        self.published += 1
        if self._history.maxlen:
            self._history.append(event)
        self._signal.send(self, event=event)
        return event

    def since(self, event_id: str, predicate: Predicate | None = None) -> list[Event] | None:
        """The events delivered after the one with ``event_id`` (those ``predicate`` accepts),
        for a client resuming with ``Last-Event-ID``; ``None`` when that event is no longer
        remembered (the last ``[events] history_size`` are), so the client must reload."""
        history = list(self._history)
        for position in range(len(history) - 1, -1, -1):
            if history[position].id == event_id:
                later = history[position + 1 :]
                return [e for e in later if predicate is None or predicate(e)]
        return None

    def subscribe(
        self, predicate: Predicate | None = None, *, maxsize: int | None = None
    ) -> Subscription:
        """Receive the events for which ``predicate`` is true (all when ``None``)."""
        subscription = Subscription(self, predicate, maxsize or self.queue_size)
        self._signal.connect(subscription._receive, weak=False)
        self._subscriptions.add(subscription)
        return subscription

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscriptions)

    def _disconnect(self, subscription: Subscription) -> None:
        self._signal.disconnect(subscription._receive)
        self._subscriptions.discard(subscription)

    async def start(self) -> None:
        """Nothing to acquire; present for the component lifecycle."""

    async def health(self) -> Health:
        dropped = sum(s.dropped for s in self._subscriptions)
        detail = f"{self.subscriber_count} subscribers, {self.published} published"
        if dropped:
            detail += f", {dropped} dropped by slow subscribers"
        return Health(status="ok", detail=detail)

    async def aclose(self) -> None:
        """Close every subscription, ending their readers."""
        for subscription in list(self._subscriptions):
            subscription.close()
