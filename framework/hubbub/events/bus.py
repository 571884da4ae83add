"""The in-process event bus.

The :class:`EventBus` is built on a private :class:`blinker.Signal`: :meth:`EventBus.publish` is
synchronous and never blocks, because each subscriber owns a bounded queue. A subscriber that
falls behind loses its oldest events, counted in :attr:`Subscription.dropped`, instead of growing
memory or slowing the publisher.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, TypeVar

import blinker
import msgspec

from hubbub.events.types import Event
from hubbub.models import Health, new_id

__all__ = ["EventBus", "Overflow", "Predicate", "Subscription"]

E = TypeVar("E", bound=Event)

logger = logging.getLogger("hubbub.events")
_trace = logging.getLogger("hubbub.events.trace")


Predicate = Callable[[Event], bool]

Overflow = Literal["drop_oldest", "close"]
"""What a full subscription does with a new event: drop its oldest, or end."""


class Subscription:
    """A bounded queue of events from the bus; iterate it with ``async for``.

    Close it (or leave its ``with`` block) to disconnect from the bus; the bus also closes every
    subscription when it shuts down, which ends their iteration.
    """

    def __init__(
        self,
        bus: EventBus,
        predicate: Predicate | None,
        maxsize: int,
        *,
        overflow: Overflow = "drop_oldest",
        owner: str | None = None,
    ) -> None:
        self._bus = bus
        self._predicate = predicate
        self._owner = owner
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=maxsize)
        self.overflow: Overflow = overflow
        """What happens when the queue is full: ``drop_oldest`` (counted in :attr:`dropped`)
        or ``close`` (the subscription ends after what is queued; :attr:`overflowed` is set, so
        a stream can tell its client where to resume)."""
        self.dropped = 0
        """How many events were discarded because this subscriber fell behind."""
        self.overflowed = False
        """Whether the subscription was closed because its reader fell behind."""
        self.closed = False
        self._signal: blinker.Signal | None = None
        self._sender: Any = blinker.ANY

    def _receive(self, sender: Any, *, event: Event) -> None:
        if self.closed:
            return
        if self._owner is not None and event.owner != self._owner:
            return  # a conversation's events are indexed by its id; its owner is checked here
        if self._predicate is not None and not self._predicate(event):
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            if self.overflow == "close":
                self.overflowed = True
                logger.warning(
                    "event subscriber fell %d events behind; its stream ends",
                    self._queue.maxsize,
                    extra={"owner": self._owner},
                )
                self.close()
                return
            self._queue.get_nowait()
            self._queue.put_nowait(event)
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "slow event subscriber: %d events dropped",
                    self.dropped,
                    extra={"dropped": self.dropped},
                )

    @property
    def pending(self) -> int:
        """Events queued and not read yet."""
        return self._queue.qsize()

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
    """Publishes events to subscribers in this process. One per runtime; nothing global.

    Subscriptions are indexed: one scoped to an owner, or to an owner's conversation, is handed
    only that owner's (that conversation's) events, so publishing an event costs time for the
    subscribers that may see it, never for every open stream of every user.
    """

    def __init__(
        self, *, queue_size: int = 1000, history_size: int = 1000, trace: bool = False
    ) -> None:
        self.trace = trace
        """Log every delivered event at DEBUG on ``hubbub.events.trace``: its type, id,
        conversation and owner, and how many subscriptions received it (with the request id
        and conversation id of the log context it was published in)."""
        self._everyone = blinker.Signal("hubbub events")
        self._by_owner = blinker.Signal("hubbub events by owner")  # sender: the owner's id
        self._by_conversation = blinker.Signal("hubbub events by conversation")  # its id
        self._subscriptions: set[Subscription] = set()
        self._sequence = itertools.count(1)
        self.queue_size = queue_size
        self.published = 0
        self.origin = new_id("bus_")
        """This bus's name, stamped on the events it publishes (:attr:`Event.origin`)."""
        self._history: collections.deque[Event] = collections.deque(maxlen=history_size)

    def publish(self, event: E, /, **fields: Any) -> E:
        """Stamp a copy of ``event`` (id, time, origin: whatever is not set yet, plus ``fields``
        such as ``conversation_id`` and ``owner``), hand it to every subscriber and return it.
        Never blocks."""
        stamps: dict[str, Any] = fields
        if not event.id:
            now = time.time()
            stamps["ts"] = now
            stamps["id"] = f"{int(now * 1000)}-{next(self._sequence)}"
        if not event.origin:
            stamps["origin"] = self.origin
        return self.deliver(msgspec.structs.replace(event, **stamps) if stamps else event)

    def deliver(self, event: E) -> E:
        """Hand an already stamped event to every subscriber as it is: for events that arrive
        from another process (a Redis fan-out plugin calls this). Never blocks."""
        self.published += 1
        if self._history.maxlen:
            self._history.append(event)
        reached = len(self._everyone.send(self, event=event))
        if event.owner is not None:
            reached += len(self._by_owner.send(event.owner, event=event))
            if event.conversation_id is not None:
                reached += len(self._by_conversation.send(event.conversation_id, event=event))
        if self.trace:
            _trace.debug(
                "event %s %s to %d subscriptions",
                event.type,
                event.id,
                reached,
                extra={
                    "event_id": event.id,
                    "event_type": event.type,
                    "conversation_id": event.conversation_id,
                    "owner": event.owner,
                    "origin": event.origin,
                },
            )
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

    @property
    def last_id(self) -> str | None:
        """The id of the newest event remembered (``None`` when none is): a client that
        resumes after it gets exactly the events delivered since."""
        return self._history[-1].id if self._history else None

    def subscribe(
        self,
        predicate: Predicate | None = None,
        *,
        owner: str | None = None,
        conversation_id: str | None = None,
        maxsize: int | None = None,
        overflow: Overflow = "drop_oldest",
    ) -> Subscription:
        """Receive the events for which ``predicate`` is true (all when ``None``): of ``owner``
        only when given, and of that owner's ``conversation_id`` only when given too (indexed:
        other users' events cost this subscription nothing).

        :param overflow: ``drop_oldest`` (sinks, metrics) or ``close`` (streams, which must
            not lose events silently: see :attr:`Subscription.overflowed`).
        """
        if conversation_id is not None and owner is None:
            raise ValueError("a conversation's events are subscribed to with their owner")
        subscription = Subscription(
            self, predicate, maxsize or self.queue_size, overflow=overflow, owner=owner
        )
        sender: Any
        if conversation_id is not None:
            signal, sender = self._by_conversation, conversation_id
        elif owner is not None:
            signal, sender = self._by_owner, owner
        else:
            signal, sender = self._everyone, blinker.ANY
        signal.connect(subscription._receive, sender=sender, weak=False)
        subscription._signal, subscription._sender = signal, sender
        self._subscriptions.add(subscription)
        return subscription

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscriptions)

    def _disconnect(self, subscription: Subscription) -> None:
        if subscription._signal is not None:
            subscription._signal.disconnect(subscription._receive, sender=subscription._sender)
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
