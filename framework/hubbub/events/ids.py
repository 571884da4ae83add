"""Event ids: ``<milliseconds>-<sequence>``, the form Redis stream ids take, ordered along a log.

Ids compare as ``(milliseconds, sequence)`` pairs, never as text (``"9-0"`` comes before
``"10-0"``); :func:`parse_id` gives that pair, :class:`IdClock` makes increasing ids in one
process.
"""

from __future__ import annotations

import re

__all__ = ["ZERO_ID", "IdClock", "format_id", "parse_id"]

EventId = tuple[int, int]
"""An event id as the pair it orders by."""

ZERO_ID: EventId = (0, 0)
"""Before every event: resuming after it asks for everything the log still has."""

_FORM = re.compile(r"(\d{1,15})-(\d{1,15})")


def parse_id(text: str) -> EventId | None:
    """``"1700000000000-3"`` as ``(1700000000000, 3)``; ``None`` when ``text`` is not an id."""
    match = _FORM.fullmatch(text)
    return (int(match[1]), int(match[2])) if match else None


def format_id(pair: EventId) -> str:
    """``(1700000000000, 3)`` as ``"1700000000000-3"``."""
    return f"{pair[0]}-{pair[1]}"


class IdClock:
    """Strictly increasing ids from the wall clock, as Redis makes them: the time in
    milliseconds, and a sequence for events of the same millisecond (or of a clock that went
    back)."""

    def __init__(self) -> None:
        self.last: EventId = ZERO_ID

    def next(self, ts: float) -> EventId:
        """The id for an event published at ``ts`` (Unix seconds)."""
        ms = int(ts * 1000)
        last_ms, last_seq = self.last
        self.last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return self.last

    def observe(self, pair: EventId) -> None:
        """Never make an id at or before ``pair`` (one read from a shared log)."""
        self.last = max(self.last, pair)
