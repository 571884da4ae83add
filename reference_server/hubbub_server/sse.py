"""Server-sent events: frames, heartbeats, and the response that carries them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from hubbub_server.metrics import Metrics

__all__ = ["sse_response", "with_heartbeat"]

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def with_heartbeat(
    frames: AsyncIterator[ServerSentEventMessage], interval: float
) -> AsyncIterator[ServerSentEventMessage]:
    """Pass ``frames`` through, inserting a comment frame after ``interval`` idle seconds."""
    iterator = aiter(frames)
    pending: asyncio.Task[ServerSentEventMessage] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                yield ServerSentEventMessage(data=None, comment="heartbeat")
                continue
            try:
                frame = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield frame
    finally:
        if pending is not None:  # the client left while we waited: stop the read first
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        closer: Any = getattr(iterator, "aclose", None)
        if closer is not None:
            await closer()


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
