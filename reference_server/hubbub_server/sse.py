"""The response that carries server-sent event streams, counted while open."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar.response import ServerSentEvent

from hubbub_server.metrics import Metrics

__all__ = ["sse_response"]

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _served(frames: AsyncIterator[Any], state: Any) -> AsyncIterator[Any]:
    metrics: Metrics = state.metrics
    metrics.streams.inc()
    try:
        async for frame in frames:
            yield frame
    finally:
        metrics.streams.dec()


def sse_response(frames: AsyncIterator[Any], state: Any) -> ServerSentEvent:
    """An ``text/event-stream`` response over ``frames`` for the app whose ``state`` is given,
    counted in ``hubbub_active_streams``."""
    return ServerSentEvent(_served(frames, state), headers=HEADERS)
