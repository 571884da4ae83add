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
from typing import Any, TypeVar

import blinker
import msgspec

from hubbub.events.types import Event
from hubbub.models import Health, new_id

__all__ = ["EventBus", "Predicate", "Subscription"]

E = TypeVar("E", bound=Event)

logger = logging.getLogger("hubbub.events")


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

    @property
    def last_id(self) -> str | None:
        """The id of the newest event remembered (``None`` when none is): a client that
        resumes after it gets exactly the events delivered since."""
        return self._history[-1].id if self._history else None

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
