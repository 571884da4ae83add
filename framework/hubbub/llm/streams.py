"""Priming a stream: wait for its first chunk before handing it on, so whatever stops it before
it starts is raised while an HTTP layer can still answer with a plain error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable

from hubbub.middleware import close_stream
from hubbub.models import ChatChunk

__all__ = ["prime"]


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
