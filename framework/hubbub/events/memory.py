"""The event log of one process (``[events] backend = "memory"``, the default).

Events get their ids here, in publishing order, and reach the bus's subscribers at once. The log
keeps the newest events (``[events] retention_events``, for at most ``retention_seconds``) for
clients that resume with ``Last-Event-ID``; it knows exactly which events it has let go (and
when it started: earlier ids belong to a previous run), so a client resuming from before them
gets a ``reset`` event rather than a silent gap.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import msgspec

from hubbub.events.ids import EventId, IdClock, format_id, parse_id
from hubbub.events.types import Event
from hubbub.models import Health

__all__ = ["MemoryEventLog", "select_after"]


def select_after(
    events: list[Event], owner: str | None, conversation_id: str | None, limit: int
) -> list[Event]:
    """Those of ``events`` that belong to ``owner`` (and its ``conversation_id``), at most
    ``limit``. Events of the owner that belong to no conversation (a revoked credential) are
    kept for a conversation's stream too."""
    chosen = []
    for event in events:
        if owner is not None and event.owner != owner:
            continue
        if conversation_id is not None and event.conversation_id not in (conversation_id, None):
            continue
        chosen.append(event)
        if len(chosen) >= limit:
            break
    return chosen


class MemoryEventLog:
    """Events of this process, in order, with their ids."""

    def __init__(self, *, retention_events: int = 10_000, retention_seconds: float = 1800) -> None:
        self.retention_events = retention_events
        self.retention_seconds = retention_seconds
        self._events: collections.deque[tuple[EventId, Event]] = collections.deque()
        self._clock = IdClock()
        # The newest event let go; before the first, the log's start: what came before it (in
        # an earlier run of the process) is gone too.
        self._forgotten: EventId = self._clock.next(time.time())
        self._deliver: Callable[[Event], object] | None = None

    def attach(self, deliver: Callable[[Event], object]) -> None:
        """Hand every appended event, with its id, to ``deliver``."""
        self._deliver = deliver

    def append(self, event: Event) -> None:
        """Give ``event`` the next id, keep it, and deliver it at once."""
        pair = self._clock.next(event.ts or time.time())
        stamped = msgspec.structs.replace(event, id=format_id(pair))
        self._events.append((pair, stamped))
        self._trim(stamped.ts)
        if self._deliver is not None:
            self._deliver(stamped)

    def _trim(self, now: float) -> None:
        events = self._events
        horizon = now - self.retention_seconds
        while events and (len(events) > self.retention_events or events[0][1].ts < horizon):
            self._forgotten = events.popleft()[0]

    async def read_after(
        self,
        event_id: str,
        *,
        owner: str | None = None,
        conversation_id: str | None = None,
        limit: int = 10_000,
    ) -> list[Event] | None:
        """The kept events after ``event_id`` (see :meth:`hubbub.contracts.EventLog.read_after`)."""
        after = parse_id(event_id)
        if after is None or after > self._clock.last or after < self._forgotten:
            return None
        later: list[Event] = []
        for pair, event in reversed(self._events):  # the newest first: cost is what was missed
            if pair <= after:
                break
            later.append(event)
        later.reverse()
        return select_after(later, owner, conversation_id, limit)

    @property
    def last_id(self) -> str | None:
        """The newest id given (before any, the log's start: resuming after it misses
        nothing)."""
        return format_id(self._clock.last)

    async def start(self) -> None:
        """Nothing to acquire."""

    async def health(self) -> Health:
        """Always ok: how many events are kept."""
        return Health(status="ok", detail=f"{len(self._events)} events kept")

    async def aclose(self) -> None:
        """Let every event go."""
        self._events.clear()
