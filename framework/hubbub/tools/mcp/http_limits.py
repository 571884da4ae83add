"""A bound on what an HTTP MCP server may send: an httpx transport that counts each response's
body bytes and fails the response past :data:`MAX_RESPONSE_BYTES`.

The ``mcp`` package reads a JSON answer whole (``response.aread()``) with no limit of its own;
without this a remote server could answer with gigabytes. Event streams are not counted as a
whole (a notification stream stays open for hours): each of their events is bounded by the
package's ``max_sse_event_size``, which :func:`hubbub.tools.mcp.connection.connect` sets to the
same limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx2

__all__ = ["MAX_RESPONSE_BYTES", "BoundedTransport", "ResponseTooLarge"]

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""The largest body of one HTTP response from an MCP server (and the largest event of an event
stream), in bytes: a larger answer fails the request it answers (the call gets a tool error)."""


class ResponseTooLarge(httpx2.StreamError):
    """A response body passed :data:`MAX_RESPONSE_BYTES` (or came compressed though an
    uncompressed one was asked for, so its size cannot be bounded)."""


class _BoundedStream(httpx2.AsyncByteStream):
    """A response body that raises :class:`ResponseTooLarge` past ``limit`` bytes."""

    def __init__(self, inner: httpx2.AsyncByteStream, limit: int, refusal: str | None) -> None:
        self.inner = inner
        self.limit = limit
        self.refusal = refusal

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.refusal is not None:
            raise ResponseTooLarge(self.refusal)
        received = 0
        async for chunk in self.inner:
            received += len(chunk)
            if received > self.limit:
                raise ResponseTooLarge(
                    f"the server's answer is larger than {self.limit} bytes; it was cut"
                )
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class BoundedTransport(httpx2.AsyncBaseTransport):
    """``inner`` (a plain :class:`httpx2.AsyncHTTPTransport` by default), with every response
    body that is not an event stream bounded to ``limit`` bytes. Asks for uncompressed bodies
    and refuses compressed ones (a small compressed body can expand without bound)."""

    def __init__(
        self, inner: httpx2.AsyncBaseTransport | None = None, *, limit: int = MAX_RESPONSE_BYTES
    ) -> None:
        self.inner = inner if inner is not None else httpx2.AsyncHTTPTransport()
        self.limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request``; its response's body raises :class:`ResponseTooLarge` when read
        past the limit."""
        request.headers["Accept-Encoding"] = "identity"
        response = await self.inner.handle_async_request(request)
        kind = response.headers.get("content-type", "").lower()
        if kind.startswith("text/event-stream"):
            return response
        refusal = None
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            refusal = f"the server sent a compressed answer ({encoding}), which was not asked for"
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            refusal = f"the server's answer is larger than {self.limit} bytes ({length})"
        stream = response.stream
        assert isinstance(stream, httpx2.AsyncByteStream)
        response.stream = _BoundedStream(stream, self.limit, refusal)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
