"""The event bus: publishing, and delivery to this process's subscribers.

:meth:`EventBus.publish` is synchronous and never blocks: it stamps the event and appends it to
the event log (:class:`~hubbub.contracts.EventLog`, chosen by ``[events] backend``), which gives
it its id and hands it back to :meth:`EventBus.deliver`: at once for the in-process log, from its
reader loop for a shared one (along with every other process's events, so every process sees one
order). Delivery goes through a private :class:`blinker.Signal` for unscoped subscribers (sinks)
and plain indexes by owner and by conversation for scoped ones (streams), so an event costs time
only for the subscriptions that may see it; each subscriber
owns a bounded queue, and one that falls behind loses its oldest events (counted in
:attr:`Subscription.dropped`) or, for streams, ends (:attr:`Subscription.overflowed`) instead of
growing memory or slowing the publisher.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import blinker
import msgspec

from hubbub.events.memory import MemoryEventLog
from hubbub.events.types import Event
from hubbub.models import Health, new_id

if TYPE_CHECKING:
    from hubbub.contracts import EventLog

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
        self._maxsize = maxsize
        # The queue, made at the first event and dropped when drained (an idle subscription
        # holds none), and the future a reader waits on: far smaller than an asyncio.Queue,
        # which matters with 20,000 idle streams.
        self._events: collections.deque[Event] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.overflow: Overflow = overflow
        """What happens when the queue is full: ``drop_oldest`` (counted in :attr:`dropped`)
        or ``close`` (the subscription ends after what is queued; :attr:`overflowed` is set, so
        a stream can tell its client where to resume)."""
        self.dropped = 0
        """How many events were discarded because this subscriber fell behind."""
        self.overflowed = False
        """Whether the subscription was closed because its reader fell behind."""
        self.closed = False
        self._indexed: list[tuple[Index, str]] = []

    def _receive(self, sender: Any, *, event: Event) -> None:
        if self.closed:
            return
        if self._owner is not None and event.owner != self._owner:
            return  # a conversation's events are indexed by its id; its owner is checked here
        if self._predicate is not None and not self._predicate(event):
            return
        events = self._events
        if events is None:
            events = self._events = collections.deque()
        if len(events) < self._maxsize:
            events.append(event)
            self._wake()
        else:
            if self.overflow == "close":
                self.overflowed = True
                logger.warning(
                    "event subscriber fell %d events behind; its stream ends",
                    self._maxsize,
                    extra={"owner": self._owner},
                )
                self.close()
                return
            events.popleft()
            events.append(event)
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
        return len(self._events) if self._events else 0

    async def get(self) -> Event | None:
        """Wait for the next event; ``None`` once the subscription is closed and drained."""
        while not self._events:
            if self.closed:
                return None
            waiter = self._waiter
            if waiter is None or waiter.done():
                waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        events = self._events
        event = events.popleft()
        if not events:
            self._events = None
        return event

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Disconnect from the bus and wake any waiting reader (which gets what is queued,
        then ``None``: no event is lost)."""
        if self.closed:
            return
        self.closed = True
        self._bus._disconnect(self)
        self._wake()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while (event := await self.get()) is not None:
            yield event

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Index = dict[str, dict["Subscription", None]]
"""Subscriptions by key (an owner's or a conversation's id), each an insertion-ordered set."""


def _send(subscriptions: dict[Subscription, None] | None, event: Event) -> int:
    """Hand ``event`` to ``subscriptions``; how many there were."""
    if not subscriptions:
        return 0
    for subscription in list(subscriptions):  # a full one may close, and leave, meanwhile
        subscription._receive(None, event=event)
    return len(subscriptions)


class EventBus:
    """Publishes events to subscribers in this process. One per runtime; nothing global.

    Subscriptions are indexed: one scoped to an owner, or to an owner's conversation, is handed
    only that owner's (that conversation's) events, so publishing an event costs time for the
    subscribers that may see it, never for every open stream of every user.
    """

    def __init__(
        self, *, queue_size: int = 1000, trace: bool = False, log: EventLog | None = None
    ) -> None:
        self.trace = trace
        """Log every delivered event at DEBUG on ``hubbub.events.trace``: its type, id,
        conversation and owner, and how many subscriptions received it (with the request id
        and conversation id of the log context it was published in)."""
        self._everyone = blinker.Signal("hubbub events")  # unscoped: sinks, tools
        self._by_owner: Index = {}
        self._by_conversation: Index = {}
        # An owner's events that belong to no conversation (a revoked credential), for the
        # streams of that owner's conversations too: sender: the owner's id.
        self._owner_wide: Index = {}
        self._subscriptions: set[Subscription] = set()
        self.queue_size = queue_size
        self.published = 0
        """Events delivered to this process's subscribers (its own and, with a shared log,
        every other process's)."""
        self.origin = new_id("bus_")
        """This bus's name, stamped on the events it publishes (:attr:`Event.origin`)."""
        self.log: EventLog = log or MemoryEventLog()
        """The event log in use: ``log``, by default one of this process (:meth:`use` replaces
        it)."""
        self.log.attach(self.deliver)
        self._delivered: Event | None = None

    def use(self, log: EventLog) -> None:
        """Publish through ``log`` from now on (the runtime hands it the configured
        ``[events] backend`` before anything publishes)."""
        self.log = log
        log.attach(self.deliver)

    def publish(self, event: E, /, **fields: Any) -> E:
        """Stamp a copy of ``event`` (time and origin, unless set, plus ``fields`` such as
        ``conversation_id`` and ``owner``) and append it to the log, which gives it its id and
        delivers it to every subscriber that may see it. Never blocks.

        Returns the event as delivered when the log delivers at once (the in-process log: with
        its id), else as appended (a shared log delivers it from its reader, id and all)."""
        stamps: dict[str, Any] = fields
        if not event.ts:
            stamps["ts"] = time.time()
        if not event.origin:
            stamps["origin"] = self.origin
        stamped = msgspec.structs.replace(event, **stamps) if stamps else event
        self._delivered = None
        self.log.append(stamped)
        delivered, self._delivered = self._delivered, None
        return delivered if delivered is not None else stamped

    def deliver(self, event: E) -> E:
        """Hand an event with its id to every subscriber that may see it, as it is: what the
        event log calls, in log order. Never blocks."""
        self.published += 1
        self._delivered = event
        reached = len(self._everyone.send(self, event=event))
        if event.owner is not None:
            reached += _send(self._by_owner.get(event.owner), event)
            if event.conversation_id is not None:
                reached += _send(self._by_conversation.get(event.conversation_id), event)
            else:
                reached += _send(self._owner_wide.get(event.owner), event)
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

    async def read_after(
        self, event_id: str, *, owner: str | None = None, conversation_id: str | None = None
    ) -> list[Event] | None:
        """The events after ``event_id`` that the log still has (of ``owner``, and of its
        ``conversation_id``, when given), for a client resuming with ``Last-Event-ID``; ``None``
        when the log cannot tell what followed that id, so the client must reload."""
        return await self.log.read_after(event_id, owner=owner, conversation_id=conversation_id)

    @property
    def last_id(self) -> str | None:
        """The id of the newest event delivered here (``None`` before any): a client that
        resumes after it gets exactly the events delivered since."""
        return self.log.last_id

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
        only when given, and of that owner's ``conversation_id`` only when given too, with the
        owner's events that belong to no conversation (indexed: other users' events cost this
        subscription nothing).

        :param overflow: ``drop_oldest`` (sinks, metrics) or ``close`` (streams, which must
            not lose events silently: see :attr:`Subscription.overflowed`).
        """
        if conversation_id is not None and owner is None:
            raise ValueError("a conversation's events are subscribed to with their owner")
        subscription = Subscription(
            self, predicate, maxsize or self.queue_size, overflow=overflow, owner=owner
        )
        if conversation_id is not None and owner is not None:
            subscription._indexed = [
                (self._by_conversation, conversation_id),
                (self._owner_wide, owner),
            ]
        elif owner is not None:
            subscription._indexed = [(self._by_owner, owner)]
        else:
            self._everyone.connect(subscription._receive, sender=blinker.ANY, weak=False)
        for index, key in subscription._indexed:
            index.setdefault(key, {})[subscription] = None
        self._subscriptions.add(subscription)
        return subscription

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscriptions)

    def _disconnect(self, subscription: Subscription) -> None:
        if subscription._indexed:
            for index, key in subscription._indexed:
                subscriptions = index.get(key)
                if subscriptions is not None:
                    subscriptions.pop(subscription, None)
                    if not subscriptions:
                        del index[key]
            subscription._indexed = []
        elif subscription in self._subscriptions:
            self._everyone.disconnect(subscription._receive, sender=blinker.ANY)
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
