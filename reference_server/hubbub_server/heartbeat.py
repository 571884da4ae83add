"""One heartbeat for every open event stream of an app: a single task ticks each stream once per
``[server] heartbeat_interval`` (the stream's response then checks that its client is still
there and, if it sent nothing since the last tick, writes a heartbeat comment) and, when the
server starts draining, ends every stream.

A timer and a watcher task per stream would cost memory and timer churn for each of tens of
thousands of idle connections; this costs one task per app. The streams are spread over
:data:`SLICES` slices ticked in turn, so a process holding 20,000 streams wakes 1/16th of them at
a time rather than all at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

__all__ = ["SLICES", "Beating", "Heartbeat"]

logger = logging.getLogger("hubbub.server.heartbeat")

SLICES = 16
"""How many slices the watched streams are spread over; one slice is ticked every
``interval / SLICES`` seconds."""


class Beating(Protocol):
    """What the heartbeat drives: an open stream."""

    def tick(self) -> None:
        """Called once per interval: send a heartbeat (and check the client is there) soon.
        Must not block."""

    def end(self) -> None:
        """Called once when the server starts draining: end after what is queued, with a
        final event. Must not block."""


class Heartbeat:
    """Ticks the streams it watches every ``interval`` seconds from one task (started with the
    first stream, cancelled with the last), and ends them all once ``drain`` is set."""

    def __init__(self, interval: float, drain: asyncio.Event) -> None:
        self.interval = interval
        """Seconds between two ticks of a stream."""
        self.drain = drain
        """Set when the server starts draining (``app.state.drain``)."""
        self._slices: list[set[Beating]] = [set() for _ in range(SLICES)]
        self._next = 0
        self._count = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def watched(self) -> int:
        """Streams watched now."""
        return self._count

    def watch(self, stream: Beating) -> None:
        """Tick ``stream`` from now on (ended at once if the server is draining already)."""
        if any(stream in watched for watched in self._slices):
            return
        self._slices[self._next].add(stream)
        self._next = (self._next + 1) % SLICES
        self._count += 1
        if self.drain.is_set():
            stream.end()
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            self._start(loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = task = loop.create_task(self._run(), name="hubbub stream heartbeat")
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A heartbeat that stopped while streams are open (it failed) starts again."""
        if task.cancelled() or task is not self._task:
            return
        error = task.exception()
        if error is not None:
            logger.error("the event streams' heartbeat failed; it starts again", exc_info=error)
        if self._count:
            self._start(task.get_loop())

    def unwatch(self, stream: Beating) -> None:
        """Stop ticking ``stream`` (once it has ended); the last one stops the task."""
        for watched in self._slices:
            if stream in watched:
                watched.discard(stream)
                self._count -= 1
                break
        if not self._count and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        step = self.interval / SLICES
        drained = asyncio.ensure_future(self.drain.wait())
        ended = self.drain.is_set()  # then every stream watched was ended by watch(): not twice
        due = loop.time()
        index = 0
        try:
            while self._count:
                due += step
                wait = due - loop.time()
                if wait < -self.interval:  # the loop was stalled: carry on from now, no burst
                    due, wait = loop.time(), 0.0
                if ended and not self.drain.is_set():  # the app was started again (tests do)
                    ended, drained = False, asyncio.ensure_future(self.drain.wait())
                if ended:
                    await asyncio.sleep(wait)
                else:
                    await asyncio.wait((drained,), timeout=max(0.0, wait))
                    if drained.done():
                        ended = True
                        self._end_all()
                        continue
                for stream in tuple(self._slices[index]):
                    try:
                        stream.tick()
                    except Exception:
                        logger.exception("an event stream's heartbeat failed")
                index = (index + 1) % SLICES
        finally:
            drained.cancel()

    def _end_all(self) -> None:
        for watched in self._slices:
            for stream in tuple(watched):
                try:
                    stream.end()
                except Exception:
                    logger.exception("an event stream failed to end")
