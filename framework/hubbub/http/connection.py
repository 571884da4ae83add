"""One HTTP/1.1 connection: an :class:`asyncio.Protocol` feeding httptools' response parser.

The connection carries one request at a time (no pipelining). The client (:mod:`.client`) calls
:meth:`Connection.start` before writing a request, waits with :meth:`Connection.wait` until the
state it needs (:attr:`~Connection.headers_done`, :attr:`~Connection.done`, body pieces, or an
error in :attr:`~Connection.exc`) and hands the connection back to its pool or aborts it. All the
protocol callbacks do is record what arrived and wake the waiting task: no task of its own, no
allocation per body piece beyond the piece itself.

Bounds: the response head (status line and headers) may not exceed ``max_header_bytes``; a
collected body may not exceed the request's ``body_limit``; a streamed body pauses reading once
:data:`HIGH_WATER` bytes are buffered and nobody consumed them. ``read_timeout`` fails a wait
during which no byte arrived for that long.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import httptools

from hubbub.http.errors import (
    ConnectionClosedError,
    HttpError,
    ProtocolError,
    ReadTimeoutError,
    ResponseTooLargeError,
)

__all__ = ["HIGH_WATER", "Connection"]

logger = logging.getLogger("hubbub.http")

HIGH_WATER = 256 * 1024
"""Bytes of a streamed body buffered unread before the connection stops reading from the socket
(TCP flow control then slows the upstream down)."""


class _Stop(Exception):
    """Raised in a parser callback to stop parsing (the reason is in :attr:`Connection.exc`)."""


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to an upstream, and the state of its current response.

    Created by the event loop's ``create_connection`` through the client's factory; the client
    owns it (see the module docstring). The public attributes describe the response in flight.
    """

    __slots__ = (
        "body_limit",
        "buffered",
        "closed",
        "content_length",
        "done",
        "exc",
        "framed",
        "head_bytes",
        "header_bytes",
        "headers",
        "headers_done",
        "idle_since",
        "in_flight",
        "informational",
        "is_head",
        "keep_alive",
        "label",
        "loop",
        "max_header_bytes",
        "parser",
        "paused",
        "pauses",
        "pieces",
        "progress",
        "read_timeout",
        "received",
        "status",
        "streaming",
        "timer",
        "transport",
        "waiter",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_header_bytes: int,
        read_timeout: float | None,
    ) -> None:
        self.loop = loop
        self.max_header_bytes = max_header_bytes
        self.read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        """The transport, from ``connection_made``."""
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        """The transport is closed or closing: never reuse this connection."""
        self.in_flight = False
        """A request was written and its response is not finished."""
        self.idle_since = 0.0
        """``loop.time()`` when the connection last went back to the pool."""
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False
        self.pauses = 0
        """How many times reading was paused because a streamed body's reader fell behind."""
        self.label = ""
        """``METHOD origin/path`` of the current request, for error messages."""
        self.status = 0
        """The response's status code (once :attr:`headers_done`)."""
        self.headers: list[tuple[bytes, bytes]] = []
        """The response's headers, names lower-cased."""
        self.pieces: list[bytes] = []
        """Body bytes received and not yet taken by the reader."""
        self.buffered = 0
        """Bytes in :attr:`pieces` (reading pauses past :data:`HIGH_WATER` when streaming)."""
        self.received = 0
        """Body bytes received for the current response (checked against ``body_limit``)."""
        self.body_limit = 0
        self.streaming = False
        self.is_head = False
        self.headers_done = False
        """The response head arrived (status and headers are set)."""
        self.done = False
        """The whole response arrived (the body is in :attr:`pieces`)."""
        self.keep_alive = False
        """The finished response allows reusing the connection."""
        self.exc: HttpError | None = None
        """Why the response cannot complete; set once, the transport then being aborted."""
        self.progress = 0
        """How many times bytes arrived for the current request (0: none yet)."""
        self.head_bytes = 0
        self.header_bytes = 0
        self.content_length: int | None = None
        self.framed = False
        self.informational = False

    # -- driven by the client ----------------------------------------------------------------

    def start(self, label: str, *, streaming: bool, body_limit: int, is_head: bool) -> None:
        """Reset the response state for a new request (written right after by the client).

        ``body_limit``: the most body bytes collected (0: no limit; a stream is bounded by its
        reader instead). ``is_head``: the response has no body whatever its headers say.
        """
        self.label = label
        self.streaming = streaming
        self.body_limit = body_limit
        self.is_head = is_head
        self.in_flight = True
        self.status = 0
        self.headers = []
        self.pieces = []
        self.buffered = 0
        self.received = 0
        self.headers_done = False
        self.done = False
        self.keep_alive = False
        self.exc = None
        self.progress = 0
        self.head_bytes = 0
        self.header_bytes = 0
        self.content_length = None
        self.framed = False
        self.informational = False

    async def wait(self) -> None:
        """Wait until something arrives (head, body bytes, end, error or close).

        With a ``read_timeout``, fails the response with :class:`ReadTimeoutError` (and aborts
        the transport) when no byte arrives for that long. Cancelling the wait does not close the
        connection: the caller aborts it (it knows whether a response is in flight).
        """
        if self.waiter is not None:
            raise RuntimeError("another task is already reading this response")
        fut = self.loop.create_future()
        self.waiter = fut
        timeout = self.read_timeout
        if timeout is None:
            try:
                await fut
            finally:
                self.waiter = None
            return
        self.timer = self.loop.call_later(timeout, self._check_timeout, fut, self.progress)
        try:
            await fut
        finally:
            self.waiter = None
            timer = self.timer
            if timer is not None:
                self.timer = None
                timer.cancel()

    def take(self) -> bytes:
        """The body bytes received since the last call, as one piece (resumes reading)."""
        pieces = self.pieces
        self.pieces = []
        self.buffered = 0
        if self.paused:
            self.paused = False
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def abort(self) -> None:
        """Close the transport at once, dropping whatever is buffered: the upstream sees the
        connection end now. The connection is never used again."""
        self.closed = True
        transport = self.transport
        if transport is not None:
            transport.abort()

    def close(self) -> None:
        """Close the transport gracefully (an idle connection)."""
        self.closed = True
        transport = self.transport
        if transport is not None:
            transport.close()

    def fail(self, exc: HttpError) -> None:
        """Fail the current response with ``exc`` (unless it already failed), abort the
        transport and wake the reader."""
        if self.exc is None:
            self.exc = exc
        self.abort()
        self._wake()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (called by the event loop)."""
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        """Mark the connection closed; a response in flight either ends here (a body delimited
        by the end of the connection) or fails with :class:`ConnectionClosedError`."""
        self.closed = True
        if self.in_flight and not self.done and self.exc is None:
            if exc is None and self.headers_done and not self.framed:
                self.done = True  # the body was delimited by the end of the connection
                self.keep_alive = False
            else:
                where = (
                    "before answering"
                    if not self.progress
                    else "in the middle of the response body"
                    if self.headers_done
                    else "in the middle of the response head"
                )
                why = "" if exc is None else f" ({type(exc).__name__}: {exc})"
                self.exc = ConnectionClosedError(
                    f"the upstream closed the connection {where}{why}", request=self.label
                )
        self._wake()

    def data_received(self, data: bytes) -> None:
        """Feed bytes to the parser (called by the event loop)."""
        if not self.in_flight:
            # bytes nobody asked for on an idle connection: its state is unknown, drop it
            logger.debug("dropping an idle connection that received unexpected bytes")
            self.abort()
            return
        self.progress += 1
        if not self.headers_done:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade, _Stop) as exc:
            if self.done:
                # bytes after the complete response: it stands, the connection does not
                self.keep_alive = False
                self.abort()
            elif self.exc is None:
                if isinstance(exc, httptools.HttpParserUpgrade):
                    reason = "unexpected protocol upgrade"
                elif isinstance(exc, httptools.HttpParserCallbackError | _Stop):
                    reason = "invalid message"
                else:
                    reason = str(exc)  # llhttp's reason: a fixed text, no response bytes
                self.fail(ProtocolError(f"malformed response: {reason}", request=self.label))
            return
        if not self.headers_done and self.head_bytes > self.max_header_bytes and not self.done:
            self._head_too_large()

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        """A response begins; one after the finished response is a protocol violation."""
        if self.done:
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        """Record a header (name lower-cased), enforcing ``max_header_bytes``."""
        name = name.lower()
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.max_header_bytes:
            self._head_too_large()
            raise _Stop
        if name == b"content-length":
            self.framed = True
            try:
                self.content_length = int(value)
            except ValueError:
                self.content_length = None  # llhttp rejects it
        elif name == b"transfer-encoding":
            self.framed = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        """The head arrived: record the status, skip 1xx interim responses, refuse a declared
        body over the limit."""
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                self.fail(
                    ProtocolError(
                        "malformed response: unexpected 101 Switching Protocols",
                        request=self.label,
                    )
                )
                raise _Stop
            self.headers = []  # interim response (100 Continue, 103 Early Hints): the real
            self.header_bytes = 0  # one follows
            self.content_length = None
            self.framed = False
            self.informational = True
            return
        self.status = status
        self.headers_done = True
        if status == 204 or status == 304:
            self.framed = True
        limit = self.body_limit
        if limit and self.content_length is not None and self.content_length > limit:
            self._body_too_large(self.content_length)
            raise _Stop
        if self.is_head:
            self.done = True  # no body follows, whatever the headers say; never reused
            self.keep_alive = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        """Buffer body bytes: bounded by ``body_limit``, or pausing reading when streaming."""
        if self.done:
            return
        self.pieces.append(body)
        if self.streaming:
            # bytes buffered and unread, not all bytes so far: a reader that keeps up never
            # pauses the socket, however long the stream
            self.buffered += len(body)
            if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
                self.paused = True
                self.pauses += 1
                self.transport.pause_reading()
            self._wake()
            return
        self.received += len(body)
        if self.body_limit and self.received > self.body_limit:
            self._body_too_large(self.received)
            raise _Stop

    def on_message_complete(self) -> None:
        """The response is complete; note whether it allows keep-alive."""
        if self.informational:
            self.informational = False
            return
        if self.done:
            return
        # read it now: once this callback returns, llhttp resets for the next message
        self.keep_alive = self.parser.should_keep_alive()
        self.done = True
        self._wake()

    # -- internals -------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _check_timeout(self, fut: asyncio.Future[None], seen: int) -> None:
        """The read timer fired: fail the response unless bytes arrived since it was armed."""
        if self.waiter is not fut or self.exc is not None:
            return
        if self.progress != seen:  # bytes arrived (not yet a whole piece): wait on
            assert self.read_timeout is not None
            self.timer = self.loop.call_later(
                self.read_timeout, self._check_timeout, fut, self.progress
            )
            return
        self.timer = None
        what = "the response head" if not self.headers_done else "more of the response body"
        self.fail(
            ReadTimeoutError(
                f"read timeout: no byte of {what} for {self.read_timeout:g} s",
                request=self.label,
            )
        )

    def _head_too_large(self) -> None:
        self.fail(
            ResponseTooLargeError(
                f"the response head is larger than max_header_bytes ({self.max_header_bytes})",
                request=self.label,
                limit=self.max_header_bytes,
            )
        )

    def _body_too_large(self, size: int) -> None:
        self.fail(
            ResponseTooLargeError(
                f"the response body ({size} bytes or more) is larger than max_response_bytes "
                f"({self.body_limit})",
                request=self.label,
                limit=self.body_limit,
            )
        )
