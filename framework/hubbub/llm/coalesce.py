"""Coalescing a streamed reply: fewer, bigger text pieces.

A provider may yield a reply one word at a time without ever waiting (the offline models do; so
does any provider replaying a cached answer), and every piece then costs an event, an SSE frame
and a write: a 900 KB reply streamed word by word froze the whole process for seconds. Text is
merged until ``max_chars`` characters have gathered or the first of them has waited
``max_delay`` seconds, whichever comes first, so a fast stream becomes a few big pieces while a
slow one is handed on within a few milliseconds, as it comes.

* :class:`TextBuffer` is for a reader that pushes (the conversation engine publishes
  ``message.delta`` events): a timer hands the text on, nothing is read ahead, and flushing it
  before anything else is published keeps every event in order.
* :func:`coalesce` is for a reader that pulls (the OpenAI streaming route sends one SSE frame per
  chunk): the stream is read ahead through a small bounded queue, by a task of its own, so that
  what arrives while the reader is busy can be merged. A chunk that carries anything but text
  (tool calls, the finish, usage) is never merged: the text before it comes first, then the
  chunk itself, so nothing is reordered or lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from hubbub.middleware import close_stream
from hubbub.models import ChatChunk

__all__ = ["DEFAULT_MAX_CHARS", "DEFAULT_MAX_DELAY", "Coalesced", "TextBuffer", "coalesce"]

DEFAULT_MAX_CHARS = 4096
"""Text gathered into one piece at most (characters)."""
DEFAULT_MAX_DELAY = 0.005
"""Seconds a piece of text may wait for more text before it is handed on."""
QUEUE_SIZE = 256
"""Chunks read ahead of the reader at most: a provider that never waits is suspended past it."""


class TextBuffer:
    """Merges text pieces added one by one and hands each merged piece to ``emit``: once
    ``max_chars`` characters have gathered, or ``max_delay`` seconds after the first of them was
    added (a timer on the running loop), or when :meth:`flush` is called. Call :meth:`flush`
    before publishing anything that must come after the text, and when the text ends."""

    __slots__ = ("_emit", "_max_chars", "_max_delay", "_parts", "_size", "_timer")

    def __init__(
        self,
        emit: Callable[[str], object],
        *,
        max_chars: int = DEFAULT_MAX_CHARS,
        max_delay: float = DEFAULT_MAX_DELAY,
    ) -> None:
        self._emit = emit
        self._max_chars = max_chars
        self._max_delay = max_delay
        self._parts: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None

    def add(self, text: str) -> None:
        """Add a piece of text; it is handed on at the latest ``max_delay`` seconds from now."""
        if not text:
            return
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self._max_chars:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_delay, self.flush)

    def flush(self) -> None:
        """Hand on the text gathered so far, if any, now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._parts:
            text = "".join(self._parts)
            self._parts.clear()
            self._size = 0
            self._emit(text)


class _End:
    """The end of the stream, and the exception that ended it, if any."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


def _text_only(chunk: ChatChunk) -> bool:
    return (
        chunk.tool_calls is None
        and chunk.finish_reason is None
        and chunk.usage is None
        and bool(chunk.delta)
    )


class Coalesced(AsyncIterator[ChatChunk]):
    """The chunks of a stream with consecutive text pieces merged (see :func:`coalesce`).

    The stream is read by a task started on the first ``__anext__``; ``aclose()`` stops that
    task and closes the stream (every layer of its chain). An exception the stream raises is
    raised by ``__anext__`` once the text before it has been handed on.
    """

    def __init__(self, chunks: AsyncIterator[ChatChunk], *, max_chars: int, max_delay: float):
        self._source = chunks
        self._max_chars = max_chars
        self._max_delay = max_delay
        self._queue: asyncio.Queue[ChatChunk | _End] = asyncio.Queue(QUEUE_SIZE)
        self._reader: asyncio.Task[None] | None = None
        self._held: ChatChunk | _End | None = None  # taken while merging, handed on next
        self._closed = False

    def __aiter__(self) -> Coalesced:
        return self

    async def _read(self) -> None:
        error: BaseException | None = None
        try:
            async for chunk in self._source:
                await self._queue.put(chunk)
        except asyncio.CancelledError:
            raise  # the reader left: aclose() cancelled this task
        except BaseException as exc:  # handed to the reader, which raises it
            error = exc
        finally:
            await close_stream(self._source)
        await self._queue.put(_End(error))

    async def _next(self) -> ChatChunk | _End:
        held, self._held = self._held, None
        if held is not None:
            return held
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="hubbub stream reader")
        return await self._queue.get()

    async def _more(self, deadline: float) -> ChatChunk | _End | None:
        """The next item if it is there now or arrives before ``deadline``; else ``None``."""
        with contextlib.suppress(asyncio.QueueEmpty):
            return self._queue.get_nowait()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        # Not asyncio.timeout: on Python 3.11 a cancellation of the reader (the client left)
        # that meets the deadline can come out as a TimeoutError, and the stream would go on.
        getter = asyncio.ensure_future(self._queue.get())
        try:
            await asyncio.wait({getter}, timeout=remaining)
        finally:
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        return None

    async def __anext__(self) -> ChatChunk:
        if self._closed:
            raise StopAsyncIteration
        item = await self._next()
        if isinstance(item, _End):
            self._closed = True
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        if not _text_only(item) or len(item.delta) >= self._max_chars:
            return item
        parts, size = [item.delta], len(item.delta)
        deadline = asyncio.get_running_loop().time() + self._max_delay
        while size < self._max_chars:
            more = await self._more(deadline)
            if more is None:
                break
            if isinstance(more, _End) or not _text_only(more):
                self._held = more
                break
            parts.append(more.delta)
            size += len(more.delta)
        return item if len(parts) == 1 else ChatChunk(delta="".join(parts))

    async def aclose(self) -> None:
        """Stop reading and close the stream (every layer of its chain)."""
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is None:
            await close_stream(self._source)
            return
        if not reader.done():
            reader.cancel()
        await asyncio.wait([reader])  # raises nothing the reader raised: that was ours
        if not reader.cancelled():
            reader.exception()  # retrieved: an error nobody read is not "never retrieved"


def coalesce(
    chunks: AsyncIterator[ChatChunk],
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    max_delay: float = DEFAULT_MAX_DELAY,
) -> AsyncIterator[ChatChunk]:
    """``chunks`` with consecutive text-only chunks merged into pieces of up to ``max_chars``
    characters, each handed on at most ``max_delay`` seconds after its first text arrived (or
    as soon as a chunk that is not text arrives, or the stream ends). The stream is read ahead
    by a bounded queue in a task of its own, so a provider that yields without ever waiting
    still lets the event loop serve other requests. ``max_chars <= 1`` returns ``chunks``
    unchanged. Close the result (``aclose()``) when leaving it early."""
    if max_chars <= 1:
        return chunks
    return Coalesced(chunks, max_chars=max_chars, max_delay=max_delay)
