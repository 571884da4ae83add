"""The pooled HTTP/1.1 client for one upstream origin.

:class:`HttpClient` keeps a LIFO pool of keep-alive connections (the warmest is reused first;
connections idle longer than ``keepalive_expiry`` are closed), at most ``max_connections`` of
them busy at once, further requests queueing (at most ``max_waiters`` of them).

Semantics a gateway relies on:

* a connection goes back to the pool only when its response arrived whole and allows
  keep-alive; leaving a :meth:`HttpClient.stream` block before the end, any error, or
  cancellation while a response is in flight aborts the transport at once, so the upstream sees
  the connection end (this is how a cancelled request stops the upstream's work);
* a request that fails on a *reused* connection before any byte of the response arrived (the
  upstream closed the idle connection as it was being reused: the keep-alive race) is sent
  again, once, on a fresh connection, whatever its method; nothing else is retried here (see
  :mod:`hubbub.resilience` for retries). The upstream almost always closed the connection
  without reading the request, but if it had accepted it and then closed without answering
  (it crashed, say), a ``POST`` is processed twice: for an LLM, one generation billed twice.
  A caller that must never send a request twice passes ``retry_stale=False`` and gets the
  :class:`~hubbub.http.ConnectionClosedError` instead;
* the client adds ``Host``, ``Content-Length``, ``Accept-Encoding: identity`` and
  ``User-Agent: hubbub/<version>`` (the caller may give its own ``User-Agent``); credentials and
  every other header are the caller's;
* no proxies (``HTTP_PROXY`` and the like are ignored), no redirects (a 3xx is returned as is),
  no decompression, no cookies, no HTTP/2.

Timeouts: ``connect_timeout`` covers TCP connect and TLS handshake; ``read_timeout`` fails a
request when no byte arrives for that long while a response is due. For per-attempt and overall
deadlines wrap the call in :func:`asyncio.timeout`: the cancellation closes the connection.

A client belongs to the event loop it is first used on.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from contextlib import AbstractAsyncContextManager, suppress
from types import TracebackType
from urllib.parse import urlsplit

import msgspec

from hubbub import __version__
from hubbub.http.connection import Connection
from hubbub.http.errors import (
    ClientClosedError,
    ConnectError,
    ConnectionClosedError,
    ConnectTimeoutError,
    PoolFullError,
    TLSError,
)
from hubbub.http.headers import Headers, RequestHeaders, encode_request_headers
from hubbub.http.response import Response, StreamingResponse

__all__ = ["Body", "HttpClient", "PoolStats"]

logger = logging.getLogger("hubbub.http")

Body = bytes | bytearray | memoryview
"""A request body: bytes sent as they are, with a ``Content-Length``."""

_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
"""The characters of an HTTP token (a method)."""

_MAX_TARGETS = 256
"""How many request lines (method and path) a client remembers encoded."""

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""Methods that get ``Content-Length: 0`` when sent without a body."""


class PoolStats(msgspec.Struct, frozen=True):
    """A snapshot of a client's connection pool."""

    opened: int
    """Connections opened since the client was made."""
    idle: int
    """Connections in the pool, waiting to be reused."""
    active: int
    """Requests holding one of the ``max_connections`` slots."""
    waiting: int
    """Requests queued for a slot."""


class HttpClient:
    """A pooled HTTP/1.1 client for one origin (see the module docstring for the semantics).

    ``base_url``: scheme (``http`` or ``https``), host, optional port and base path, which is
    prepended to every request's path (``"https://api.openai.com/v1"``). No credentials, query or
    fragment. ``ssl_context``: for ``https``; by default a verifying
    :func:`ssl.create_default_context`. ``max_connections``: requests in flight at once, hence
    connections open (0: unbounded); ``max_waiters``: requests queued beyond them before
    :class:`~hubbub.http.PoolFullError` (0: unbounded). ``connect_address``: an IP address to
    connect to instead of resolving the host (the host still names the ``Host`` header and the
    TLS server name checked against the certificate): pins a connection to an address checked
    beforehand (see :mod:`hubbub.net`). ``connect_timeout`` and
    ``read_timeout`` in seconds (``None``: none). ``keepalive_expiry``: idle connections older
    than this are closed, not reused. ``max_response_bytes``: the largest body
    :meth:`request` and :meth:`StreamingResponse.read` accept; ``max_header_bytes``: the
    largest response head.

    Raises :class:`ValueError` for an unusable ``base_url`` or limit.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        max_waiters: int = 1000,
        connect_timeout: float | None = 10.0,
        read_timeout: float | None = None,
        keepalive_expiry: float = 30.0,
        max_response_bytes: int = 32 * 2**20,
        max_header_bytes: int = 64 * 2**10,
        connect_address: str | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"base URL: the scheme must be http or https, not {scheme!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("base URL: credentials are not allowed in it; send them as headers")
        if parts.query or parts.fragment:
            raise ValueError("base URL: no query or fragment allowed; put them in the path")
        host = parts.hostname
        if not host:
            raise ValueError(f"base URL {base_url!r} names no host")
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        for name, value in (
            ("max_connections", max_connections),
            ("max_waiters", max_waiters),
            ("max_response_bytes", max_response_bytes),
        ):
            if value < 0:
                raise ValueError(f"{name} must be 0 or more, not {value}")
        if keepalive_expiry < 0:
            raise ValueError(f"keepalive_expiry must be 0 or more, not {keepalive_expiry}")
        if max_header_bytes < 64:
            raise ValueError(f"max_header_bytes must be at least 64, not {max_header_bytes}")
        for name, timeout in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if timeout is not None and timeout <= 0:
                raise ValueError(f"{name} must be positive or None, not {timeout}")
        if scheme == "http" and ssl_context is not None:
            raise ValueError("ssl_context was given for an http:// base URL")
        if scheme == "https" and ssl_context is None:
            ssl_context = ssl.create_default_context()
            ssl_context.set_alpn_protocols(["http/1.1"])

        self._host = host
        self._connect_host = connect_address or host
        self._port = port
        self._ssl = ssl_context
        named = f"[{host}]" if ":" in host else host
        authority = named if port == default_port else f"{named}:{port}"
        self.origin = f"{scheme}://{authority}"
        """``scheme://host[:port]`` of the upstream."""
        self.base_path = parts.path.rstrip("/")
        """The path prefix of every request (no trailing slash)."""
        self._host_line = f"Host: {authority}\r\nAccept-Encoding: identity\r\n"
        self._agent_line = f"User-Agent: hubbub/{__version__}\r\n".encode()
        self._max_connections = max_connections
        self._max_waiters = max_waiters
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._keepalive_expiry = keepalive_expiry
        self._max_response_bytes = max_response_bytes
        self._max_header_bytes = max_header_bytes
        self._max_idle = max_connections or 100
        self._idle: deque[Connection] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._active = 0
        self._opened = 0
        self._closed = False
        self._targets: dict[tuple[str, str], tuple[bytes, str, bool]] = {}

    # -- public API ------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Body | None = None,
        headers: RequestHeaders = (),
        retry_stale: bool = True,
    ) -> Response:
        """Send a request and read the whole response (at most ``max_response_bytes``).

        ``path`` (``"/chat/completions"``, query string included) is appended to the base
        path. ``headers`` are the caller's (see :func:`~hubbub.http.headers.encode_request_headers`
        for what is refused). ``retry_stale``: send the request again on a fresh connection when
        a reused one was closed before any byte of the response (see the module docstring).
        Any status is returned as a :class:`Response`; failures to get one raise an
        :class:`~hubbub.http.HttpError`.
        """
        data, label, is_head = self._encode(method, path, body, headers)
        await self._acquire_slot(label)
        try:
            conn = await self._send(
                data, label, streaming=False, is_head=is_head, retry_stale=retry_stale
            )
            try:
                while not conn.done:
                    exc = conn.exc
                    if exc is not None:
                        raise exc
                    await conn.wait()
            except BaseException:
                conn.abort()
                raise
            pieces = conn.pieces
            response = Response(
                conn.status,
                Headers(conn.headers),
                pieces[0] if len(pieces) == 1 else b"".join(pieces),
            )
            self._release(conn)
            return response
        finally:
            self._release_slot()

    def stream(
        self,
        method: str,
        path: str,
        *,
        body: Body | None = None,
        headers: RequestHeaders = (),
        retry_stale: bool = True,
    ) -> AbstractAsyncContextManager[StreamingResponse]:
        """Send a request; the ``async with`` block gets the response once its head arrived
        and reads the body as it comes (see :class:`StreamingResponse`). ``retry_stale`` as
        for :meth:`request`.

        Leaving the block before the body ended, or with an error or a cancellation while it is
        still arriving, closes the connection at once.
        """
        data, label, is_head = self._encode(method, path, body, headers)
        return _StreamContext(self, data, label, is_head, retry_stale)

    @property
    def stats(self) -> PoolStats:
        """How many connections were opened, are idle, and how many requests are active or
        waiting."""
        return PoolStats(
            opened=self._opened,
            idle=sum(1 for conn in self._idle if not conn.closed),
            active=self._active,
            waiting=len(self._waiters),
        )

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Close the idle connections and refuse new requests (queued ones fail with
        :class:`~hubbub.http.ClientClosedError`); requests in flight finish, then their
        connections close. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        waiters, self._waiters = self._waiters, deque()
        for fut in waiters:
            if not fut.done():
                fut.set_exception(ClientClosedError(f"the client of {self.origin} was closed"))
        logger.debug("http client closed", extra={"origin": self.origin})

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<HttpClient {self.origin}{self.base_path}>"

    # -- request encoding ------------------------------------------------------------------------

    def _encode(
        self, method: str, path: str, body: Body | None, headers: RequestHeaders
    ) -> tuple[bytes, str, bool]:
        """The request's bytes, its label for messages, and whether it is a HEAD request."""
        target = self._targets.get((method, path))
        if target is None:
            target = self._target(method, path)
        line, label, is_head = target
        if headers:
            header_bytes, has_agent = encode_request_headers(headers)
        else:
            header_bytes, has_agent = b"", False
        agent = b"" if has_agent else self._agent_line
        if body is None:
            end = b"Content-Length: 0\r\n\r\n" if method in _BODY_METHODS else b"\r\n"
            return b"".join((line, agent, header_bytes, end)), label, is_head
        size = body.nbytes if isinstance(body, memoryview) else len(body)
        end = b"Content-Length: %d\r\n\r\n" % size
        return b"".join((line, agent, header_bytes, end, body)), label, is_head

    def _target(self, method: str, path: str) -> tuple[bytes, str, bool]:
        """Check and encode a request line (remembered for the next request)."""
        if not isinstance(method, str) or not method or not _TOKEN_CHARS.issuperset(method):
            raise ValueError(f"invalid HTTP method {str(method)[:32]!r}")
        if not isinstance(path, str):
            raise TypeError(f"the path must be a str, not {type(path).__name__}")
        if path and path[0] not in "/?":
            raise ValueError("the path must start with '/' or '?'")
        if not path.isascii() or any(ch <= " " or ch == "\x7f" for ch in path):
            raise ValueError(
                "the path must be ASCII without spaces or control characters (percent-encode)"
            )
        full = self.base_path + path if path else self.base_path or "/"
        line = f"{method} {full} HTTP/1.1\r\n{self._host_line}".encode("latin-1")
        label = f"{method} {self.origin}{full.split('?', 1)[0]}"
        target = (line, label, method == "HEAD")
        if len(self._targets) >= _MAX_TARGETS:
            self._targets.clear()
        self._targets[(method, path)] = target
        return target

    # -- the pool ------------------------------------------------------------------------------

    async def _acquire_slot(self, label: str) -> None:
        """Take one of the ``max_connections`` slots, queueing if none is free."""
        if self._closed:
            raise ClientClosedError(f"the client of {self.origin} is closed", request=label)
        limit = self._max_connections
        if not limit or self._active < limit:
            self._active += 1
            return
        if self._max_waiters and len(self._waiters) >= self._max_waiters:
            logger.debug(
                "http connection pool full: %d requests already waiting",
                len(self._waiters),
                extra={"origin": self.origin, "max_waiters": self._max_waiters},
            )
            raise PoolFullError(
                f"{len(self._waiters)} requests already wait for one of the "
                f"{limit} connections (max_waiters)",
                request=label,
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # the releasing request hands its slot over: _active stays as it is
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._release_slot()  # handed a slot as we were cancelled: pass it on
            else:
                with suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def _release_slot(self) -> None:
        """Hand the slot to the first waiter, or free it."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._active -= 1

    def _pick_idle(self) -> Connection | None:
        """The warmest reusable idle connection; expired and closed ones are dropped."""
        idle = self._idle
        if not idle:
            return None
        now = time.monotonic()
        expiry = self._keepalive_expiry
        while idle and (idle[0].closed or now - idle[0].idle_since > expiry):
            idle.popleft().close()  # the coldest end: oldest first
        while idle:
            conn = idle.pop()  # the warmest: younger than the coldest, which has not expired
            if not conn.closed:
                return conn
        return None

    def _release(self, conn: Connection) -> None:
        """Back to the pool if the finished response allows it, else closed."""
        conn.in_flight = False
        conn.pieces = []
        conn.buffered = 0
        if (
            conn.keep_alive
            and not conn.closed
            and not self._closed
            and len(self._idle) < self._max_idle
        ):
            if conn.paused:
                conn.paused = False
                if conn.transport is not None:
                    conn.transport.resume_reading()
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    async def _connect(self, label: str) -> Connection:
        """A new connection (TCP, and TLS for https), within ``connect_timeout``."""
        loop = asyncio.get_running_loop()
        max_header_bytes = self._max_header_bytes
        read_timeout = self._read_timeout

        def factory() -> Connection:
            return Connection(loop, max_header_bytes=max_header_bytes, read_timeout=read_timeout)

        started = time.monotonic()
        tls = self._ssl
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    factory,
                    self._connect_host,
                    self._port,
                    ssl=tls,
                    server_hostname=self._host if tls is not None else None,
                )
        except TimeoutError:
            raise ConnectTimeoutError(
                f"cannot connect to {self.origin}: no connection within "
                f"connect_timeout ({self._connect_timeout:g} s)",
                request=label,
            ) from None
        except ssl.SSLError as exc:
            if isinstance(exc, ssl.SSLCertVerificationError):
                why = f"certificate verify failed: {exc.verify_message}"
            else:
                why = exc.reason or str(exc)
            raise TLSError(
                f"TLS handshake with {self.origin} failed: {why}", request=label
            ) from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {self.origin}: {exc}", request=label) from exc
        self._opened += 1
        if self._closed:
            conn.abort()
            raise ClientClosedError(f"the client of {self.origin} was closed", request=label)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "http connection opened",
                extra={
                    "origin": self.origin,
                    "tls": tls is not None,
                    "connect_ms": round((time.monotonic() - started) * 1000, 2),
                    "opened": self._opened,
                },
            )
        return conn

    async def _send(
        self, data: bytes, label: str, *, streaming: bool, is_head: bool, retry_stale: bool
    ) -> Connection:
        """Write the request and wait for the response head, retrying once on a fresh
        connection when a reused one turns out closed before answering (if ``retry_stale``)."""
        conn = self._pick_idle()
        reused = conn is not None
        if conn is None:
            conn = await self._connect(label)
        limit = 0 if streaming else self._max_response_bytes
        while True:
            conn.start(label, streaming=streaming, body_limit=limit, is_head=is_head)
            try:
                transport = conn.transport
                assert transport is not None
                transport.write(data)
                while not conn.headers_done:
                    exc = conn.exc
                    if exc is not None:
                        raise exc
                    await conn.wait()
                return conn
            except ConnectionClosedError:
                conn.abort()
                if not reused or conn.progress or not retry_stale:
                    raise
            except BaseException:
                conn.abort()
                raise
            logger.debug(
                "http connection closed by the upstream as it was reused; retrying on a new one",
                extra={"origin": self.origin},
            )
            reused = False
            conn = await self._connect(label)


class _StreamContext(AbstractAsyncContextManager[StreamingResponse]):
    """What :meth:`HttpClient.stream` returns: sends on entry, closes or pools on exit."""

    __slots__ = ("_client", "_data", "_is_head", "_label", "_response", "_retry_stale")

    def __init__(
        self, client: HttpClient, data: bytes, label: str, is_head: bool, retry_stale: bool
    ) -> None:
        self._client = client
        self._data = data
        self._label = label
        self._is_head = is_head
        self._retry_stale = retry_stale
        self._response: StreamingResponse | None = None

    async def __aenter__(self) -> StreamingResponse:
        if self._response is not None:
            raise RuntimeError("this stream() context was already entered")
        client = self._client
        await client._acquire_slot(self._label)
        try:
            conn = await client._send(
                self._data,
                self._label,
                streaming=True,
                is_head=self._is_head,
                retry_stale=self._retry_stale,
            )
        except BaseException:
            client._release_slot()
            raise
        self._response = StreamingResponse(conn, client._max_response_bytes)
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client = self._client
        response = self._response
        conn = response._detach() if response is not None else None
        try:
            if conn is not None:
                if conn.done and conn.exc is None:
                    client._release(conn)  # the whole response arrived: reusable
                else:
                    conn.abort()  # left early, failed or cancelled: the upstream sees it now
        finally:
            client._release_slot()
