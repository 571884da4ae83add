"""Responses: :class:`Response` (the whole body, from :meth:`HttpClient.request
<hubbub.http.HttpClient.request>`) and :class:`StreamingResponse` (the body as it arrives, inside
:meth:`HttpClient.stream <hubbub.http.HttpClient.stream>`'s ``async with`` block)."""

from __future__ import annotations

from hubbub.http.connection import Connection
from hubbub.http.errors import ResponseTooLargeError
from hubbub.http.headers import Headers

__all__ = ["Response", "StreamingResponse"]


class Response:
    """A complete response: status, headers and the whole body (not decompressed: the client
    asks for ``Accept-Encoding: identity``)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        """The status code."""
        self.headers = headers
        """The headers (case-insensitive :meth:`~Headers.get` and :meth:`~Headers.getall`)."""
        self.body = body
        """The body, de-chunked, at most ``max_response_bytes`` long."""

    def __repr__(self) -> str:
        return f"<Response {self.status}, {len(self.body)} bytes>"


class StreamingResponse:
    """A response whose body is read as it arrives: ``async for piece in response`` yields the
    body bytes (de-chunked) received since the previous piece, or :meth:`read` gathers them all.

    Valid only inside the ``async with`` block that produced it; leaving the block before the
    body ended closes the connection (the upstream sees it at once). Reading nothing and leaving
    is fine. Iteration is not bounded in total (a stream may be long), only in what is buffered
    unread; :meth:`read` is bounded by ``max_response_bytes``.
    """

    __slots__ = ("_conn", "_limit", "headers", "status")

    def __init__(self, conn: Connection, limit: int) -> None:
        self._conn: Connection | None = conn
        self._limit = limit
        self.status = conn.status
        """The status code."""
        self.headers = Headers(conn.headers)
        """The headers (case-insensitive :meth:`~Headers.get` and :meth:`~Headers.getall`)."""

    @property
    def complete(self) -> bool:
        """Whether the whole body has arrived (it may not all have been read yet)."""
        conn = self._conn
        return conn is not None and conn.done

    def __aiter__(self) -> StreamingResponse:
        return self

    async def __anext__(self) -> bytes:
        """The body bytes that arrived since the last piece (waiting for some if none did);
        :class:`StopAsyncIteration` at the end of the body, an :class:`~hubbub.http.HttpError`
        if it cannot complete."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("the response was closed: read it inside its 'async with' block")
        while True:
            if conn.pieces:
                return conn.take()
            if conn.done:
                raise StopAsyncIteration
            exc = conn.exc
            if exc is not None:
                raise exc
            await conn.wait()

    async def read(self) -> bytes:
        """The rest of the body, at most ``max_response_bytes`` (more raises
        :class:`~hubbub.http.ResponseTooLargeError` and closes the connection)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("the response was closed: read it inside its 'async with' block")
        limit = self._limit
        if limit and conn.content_length is not None and conn.content_length > limit:
            self._too_large(conn, conn.content_length)
        parts: list[bytes] = []
        size = 0
        async for piece in self:
            size += len(piece)
            if limit and size > limit:
                self._too_large(conn, size)
            parts.append(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _too_large(self, conn: Connection, size: int) -> None:
        exc = ResponseTooLargeError(
            f"the response body ({size} bytes or more) is larger than max_response_bytes "
            f"({self._limit})",
            request=conn.label,
            limit=self._limit,
        )
        conn.fail(exc)
        raise exc

    def _detach(self) -> Connection | None:
        """The connection, which this response no longer reads (called when the block ends)."""
        conn = self._conn
        self._conn = None
        return conn

    def __repr__(self) -> str:
        return f"<StreamingResponse {self.status}>"
