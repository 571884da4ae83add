"""A graceful stop that fits in ``[server] grace_period``, counted from the stop signal.

``G`` is ``grace_period``; ``R``, the time kept for stopping the runtime, is a quarter of ``G``
and at most ``[runtime] stop_timeout``::

    0        the signal: the drain signal (``app.state.drain``) is set: new requests get 503,
             event streams send their final ``shutdown`` event and end
    0..G-R   requests in flight may finish (streamed chat completions too); replies in
             progress may finish for at most ``[runtime] drain_timeout`` of it
    G-R      streamed chat completions still running end with a final chunk and ``[DONE]``;
             replies still running are stopped (their partial text is stored, interrupted)
    G-R..G   the runtime stops (``on_shutdown`` hooks, then the components in reverse order),
             each step within what remains; the process exits

:class:`ShutdownPlan` is the timing; :class:`Shutdown` (``app.state.shutdown``) carries it out
for one app: :meth:`Shutdown.begin` sets the drain signal and starts stopping the replies, and
:meth:`Shutdown.cut_off` ends a stream's chunks at ``G-R``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

from hubbub.config import Config

__all__ = ["Shutdown", "ShutdownPlan", "StreamCut"]

logger = logging.getLogger("hubbub.server")

T = TypeVar("T")

_CLOSING = 0.5
"""Seconds after the cut, at most, for streams to send their final chunk and connections to
close before the server stops waiting for them (and at most half of the runtime's share)."""


class StreamCut(Exception):
    """The server is stopping and a stream must end now (raised by :meth:`Shutdown.cut_off`)."""


class ShutdownPlan:
    """When each step of a graceful stop is due (:func:`time.monotonic` times), from the moment
    the stop began (:meth:`begin`)."""

    def __init__(self, grace_period: float, *, stop_timeout: float, drain_timeout: float) -> None:
        self.grace_period = grace_period
        """Seconds from the stop signal to the end of the stop."""
        self.drain_timeout = drain_timeout
        """Seconds replies in progress may take at most, within the grace period."""
        self.reserve = min(stop_timeout, grace_period / 4)
        """Seconds kept at the end for stopping the runtime."""
        self.began: float | None = None
        """When the stop began (``None``: not yet)."""

    @classmethod
    def from_config(cls, config: Config) -> ShutdownPlan:
        """The plan of ``[server] grace_period`` and ``[runtime] stop_timeout/drain_timeout``."""
        return cls(
            config.server.grace_period,
            stop_timeout=config.runtime.stop_timeout,
            drain_timeout=config.runtime.drain_timeout,
        )

    def begin(self, at: float | None = None) -> bool:
        """Start the clock (at ``at``, default now); ``False`` if it had started already."""
        if self.began is not None:
            return False
        self.began = time.monotonic() if at is None else at
        return True

    def _start(self) -> float:
        if self.began is None:
            raise RuntimeError("the stop has not begun")
        return self.began

    @property
    def cut_at(self) -> float:
        """When requests still running are cut and streamed completions end."""
        return self._start() + self.grace_period - self.reserve

    @property
    def replies_at(self) -> float:
        """When replies still in progress are stopped."""
        return min(self._start() + self.drain_timeout, self.cut_at)

    @property
    def connections_after(self) -> float:
        """Seconds from the beginning of the stop the server waits for its connections to
        close: until the cut, plus a moment for final chunks (half the runtime's share at
        most)."""
        cut = self.grace_period - self.reserve
        return min(cut + min(_CLOSING, self.reserve / 2), self.grace_period)

    @property
    def connections_at(self) -> float:
        """Until when the server waits for its connections to close."""
        return self._start() + self.connections_after

    @property
    def exit_at(self) -> float:
        """When the whole stop is done."""
        return self._start() + self.grace_period


class Shutdown:
    """The graceful stop of one app: its plan, its drain signal, and the streams to end."""

    def __init__(self, plan: ShutdownPlan, drain: asyncio.Event) -> None:
        self.plan = plan
        """The timing."""
        self.drain = drain
        """Set when the stop begins (``app.state.drain``): new requests get 503, event streams
        send their final ``shutdown`` event and end."""
        self._streams: set[_Cut[Any]] = set()

    @property
    def begun(self) -> bool:
        """Whether the stop has begun."""
        return self.plan.began is not None

    def begin(self, runtime: Any = None, *, at: float | None = None) -> None:
        """Begin the stop (once; on the event loop): set the drain signal, have streams end at
        the cut, and have ``runtime`` (a running :class:`~hubbub.runtime.Runtime`) stop its
        replies in progress by :attr:`ShutdownPlan.replies_at`."""
        if not self.plan.begin(at):
            return
        self.drain.set()  # first: whatever follows, streams and new requests see the stop
        plan = self.plan
        logger.info(
            "stopping: draining requests for up to %.3g s, all done within %g s (grace_period)",
            max(0.0, plan.cut_at - time.monotonic()),
            plan.grace_period,
        )
        cut_at = _loop_time(plan.cut_at)
        for stream in self._streams:
            stream.reschedule(cut_at)
        if runtime is not None and runtime.state == "running":
            runtime.spawn(
                runtime.drain(until=plan.replies_at, deadline=plan.exit_at), name="drain replies"
            )

    def cut_off(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """``items`` until the cut: then the iterator raises :class:`StreamCut` (the item it
        was waiting for is abandoned: close ``items`` afterwards)."""
        return _Cut(items, self)

    def _cut_at(self) -> float | None:
        return _loop_time(self.plan.cut_at) if self.begun else None


def _loop_time(monotonic: float) -> float:
    """The running loop's clock at :func:`time.monotonic` time ``monotonic``."""
    return asyncio.get_running_loop().time() + (monotonic - time.monotonic())


class _Cut(AsyncIterator[T], Generic[T]):
    """An iterator ending at the cut (:meth:`Shutdown.cut_off`). Each wait for an item runs
    under a timeout that is rescheduled to the cut when the stop begins."""

    __slots__ = ("_items", "_shutdown", "_timeout")

    def __init__(self, items: AsyncIterator[T], shutdown: Shutdown) -> None:
        self._items = items
        self._shutdown = shutdown
        self._timeout: asyncio.Timeout | None = None

    def __aiter__(self) -> _Cut[T]:
        return self

    def reschedule(self, when: float) -> None:
        if self._timeout is not None and not self._timeout.expired():
            self._timeout.reschedule(when)

    async def __anext__(self) -> T:
        shutdown = self._shutdown
        timeout = self._timeout = asyncio.timeout_at(shutdown._cut_at())
        shutdown._streams.add(self)
        try:
            async with timeout:
                return await anext(self._items)
        except TimeoutError:
            if timeout.expired():  # the cut, not a timeout of the items' own
                raise StreamCut from None
            raise
        finally:
            self._timeout = None
            shutdown._streams.discard(self)
