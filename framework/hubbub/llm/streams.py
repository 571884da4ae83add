"""Priming a stream (wait for its first chunk before handing it on, so whatever stops it before
it starts is raised while an HTTP layer can still answer with a plain error) and closing it once,
whoever asks first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from hubbub.middleware import close_stream
from hubbub.models import ChatChunk

__all__ = ["close_once", "prime"]


class _Primed(AsyncIterator[ChatChunk]):
    """An async iterator that yields an already-received first chunk, then the rest."""

    __slots__ = ("_first", "_rest")

    def __init__(self, first: ChatChunk | None, rest: AsyncIterator[ChatChunk]) -> None:
        self._first = first
        self._rest = rest

    def __aiter__(self) -> _Primed:
        return self

    def __anext__(self) -> Awaitable[ChatChunk]:
        first = self._first
        if first is None:
            return self._rest.__anext__()
        self._first = None
        return _ready(first)

    async def aclose(self) -> None:
        """Close the rest of the stream (every layer of its chain)."""
        self._first = None
        await close_stream(self._rest)


async def _ready(chunk: ChatChunk) -> ChatChunk:
    return chunk


async def prime(chunks: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]:
    """Wait for the first chunk of ``chunks`` now, so that whatever stops a stream before it
    starts (a refusal, an unknown model, a provider that fails to answer) is raised here, while
    an HTTP layer can still answer with a plain error. Returns an iterator that yields that
    chunk, then the rest; its ``aclose()`` closes ``chunks``."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        return _Primed(None, chunks)
    return _Primed(first, chunks)


def close_once(chunks: AsyncIterator[ChatChunk]) -> Callable[[], Awaitable[None]]:
    """A closer for ``chunks`` that may be called any number of times, also concurrently (the
    response that sent the stream, the generator that read it, a finalizer): the first call
    closes the stream (every layer of its chain, in order) in a task of its own, and every call
    waits for that one close. A cancelled caller does not stop it.

    An HTTP response whose client left before its body was read never starts the generator
    that would have closed the stream: the response closes it too, through this."""
    closing: asyncio.Future[None] | None = None

    async def close() -> None:
        nonlocal closing
        if closing is None:
            closing = asyncio.ensure_future(close_stream(chunks))
        await asyncio.shield(closing)

    return close
