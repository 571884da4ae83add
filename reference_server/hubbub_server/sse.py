"""The response that carries server-sent event streams, counted while open."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from typing import Any

from litestar.response import ServerSentEvent

from hubbub_server.metrics import Metrics
from hubbub_server.streams import StreamLimits, StreamSlot

__all__ = ["sse_response"]

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _served(
    frames: AsyncIterator[Any], state: Any, slot: StreamSlot | None
) -> AsyncIterator[Any]:
    metrics: Metrics = state.metrics
    metrics.streams.inc()
    try:
        async for frame in frames:
            yield frame
    finally:
        metrics.streams.dec()
        if slot is not None:
            slot.release()


def sse_response(
    frames: AsyncIterator[Any], state: Any, *, owner: str | None = None
) -> ServerSentEvent:
    """An ``text/event-stream`` response over ``frames`` for the app whose ``state`` is given,
    counted in ``hubbub_active_streams`` and, with ``owner``, against the stream limits
    (:class:`~hubbub.errors.TooManyRequestsError` past them, before anything is sent)."""
    limits: StreamLimits | None = getattr(state, "streams", None)
    if owner is None or limits is None:
        return ServerSentEvent(_served(frames, state, None), headers=HEADERS)
    slot = limits.reserve(owner)
    served = _served(frames, state, slot)
    # A response that never starts never runs the generator's finally: give the place back
    # when the generator is collected instead.
    weakref.finalize(served, slot.release)
    return ServerSentEvent(served, headers=HEADERS)
