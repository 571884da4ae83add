"""Throttled reports of refused connections and requests: one log line at most per interval,
with a count, however hard a client (or a crowd of them) pushes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

__all__ = ["RefusalLog"]

logger = logging.getLogger("hubbub.server.connections")


class RefusalLog:
    """Counts refusals of one kind and logs them at most once per ``interval`` seconds: the
    first at once, later ones in one line when the interval is over.

    ``message`` is a %-format that receives the count, ``"s"`` or ``""`` for the plural, the
    seconds the line covers, then the arguments of the latest :meth:`record` (the state at that
    moment, such as how many connections were open).
    """

    def __init__(
        self,
        message: str,
        *,
        level: int = logging.WARNING,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.message = message
        self.level = level
        self.interval = interval
        self.clock = clock
        self.pending = 0
        """Refusals not logged yet."""
        self.total = 0
        """Refusals since the start."""
        self._args: tuple[object, ...] = ()
        self._first_pending = 0.0
        self._last_logged = float("-inf")
        self._flush_handle: asyncio.TimerHandle | None = None

    def record(self, *args: object) -> None:
        """Count one refusal; ``args`` describe the state for the next line."""
        if not logger.isEnabledFor(self.level):
            self.total += 1
            return
        now = self.clock()
        if not self.pending:
            self._first_pending = now
        self.pending += 1
        self.total += 1
        self._args = args
        if self._flush_handle is not None:
            return
        wait = self._last_logged + self.interval - now
        if wait <= 0:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside an event loop: log now rather than never
            self.flush()
            return
        self._flush_handle = loop.call_later(wait, self.flush)

    def flush(self) -> None:
        """Log the refusals counted since the last line, if any."""
        self._flush_handle = None
        if not self.pending:
            return
        count, self.pending = self.pending, 0
        now = self.clock()
        self._last_logged = now
        logger.log(
            self.level,
            self.message,
            count,
            "" if count == 1 else "s",
            now - self._first_pending,
            *self._args,
            extra={"refused": count, "refused_total": self.total},
        )
