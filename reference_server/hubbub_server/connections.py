"""The HTTP/1.1 connection protocol of ``hubbub serve``: uvicorn's httptools protocol plus the
limits that keep idle, slow and oversized clients from taking the server down (``[server]``):

* ``header_timeout``: a connection must send a complete request head (request line and headers)
  within this many seconds of opening, or of the first byte of its next request on a keep-alive
  connection. Past it the connection is closed, with a 408 when part of a head had arrived.
* ``max_header_bytes``: a request head larger than this gets 431 and the connection is closed;
  the head is never buffered past the limit (plus at most one read when requests are pipelined).
* ``body_min_rate``: a request body may take its first second freely; from then on it must have
  arrived at this many bytes per second on average, or it is cut: 408 if no response was sent
  yet, then the connection is closed. Time when the server itself holds the body back (the
  application has not read what came, or ``Expect: 100-continue`` is not answered yet) does not
  count against the client.
* ``max_connections``: a request that arrives while more connections are open gets 503 with
  ``Connection: close`` and ``Retry-After``.
* ``keepalive_timeout``: how long an idle connection stays open between requests.

And the file descriptors: a connection accepted on one of the last descriptors below the
open-files limit (the reserve of :mod:`hubbub_server.fdlimit`) is closed at once, and such
refusals are logged at most once a second, with a count.

Each connection costs at most two timer handles (``loop.call_later``) and a few counters;
nothing ever walks over all connections.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import msgspec
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from hubbub.config import ServerConfig
from hubbub_server.fdlimit import (
    count_failed_accepts,
    fd_reserve,
    open_files_limit,
    out_of_descriptors_log,
)
from hubbub_server.idle_memory import Pipeline, lighten
from hubbub_server.refusals import RefusalLog
from hubbub_server.sse import TRANSPORT

__all__ = ["ConnectionConfig", "ConnectionLimits", "HubbubHttpProtocol"]

_MIN_RECHECK = 0.25
"""Seconds between two body-rate checks of one connection, at least."""
_LINGER = 2.0
"""Seconds a refused connection is still read (and what comes dropped) before it is closed."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What a connection may do; see the module's docstring for each limit."""

    header_timeout: float = 10.0
    """Seconds to send a complete request head."""
    keepalive_timeout: float = 5.0
    """Seconds an idle connection stays open between requests."""
    body_min_rate: int = 1024
    """Bytes per second a body must average after its first second (0: no minimum)."""
    body_grace: float = 1.0
    """Seconds a body may take before its rate is checked."""
    max_connections: int = 4096
    """Open connections served at once; past them, requests get 503."""
    max_header_bytes: int = 65_536
    """Largest request head (request line and headers), in bytes."""

    @classmethod
    def from_config(cls, server: ServerConfig) -> ConnectionLimits:
        """The limits set in ``[server]``."""
        return cls(
            header_timeout=server.header_timeout,
            keepalive_timeout=server.keepalive_timeout,
            body_min_rate=server.body_min_rate,
            max_connections=server.max_connections,
            max_header_bytes=server.max_header_bytes,
        )


def _problem(status: int, detail: str, code: str, *headers: bytes) -> bytes:
    """A complete ``application/problem+json`` response that closes the connection."""
    title = HTTPStatus(status).phrase
    body = msgspec.json.encode(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, "code": code}
    )
    head = [
        f"HTTP/1.1 {status} {title}".encode(),
        b"content-type: application/problem+json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
        *headers,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@dataclass(frozen=True, slots=True)
class _Answers:
    """The canned answers of one set of limits, encoded once."""

    request_timeout: bytes
    body_too_slow: bytes
    head_too_large: bytes
    over_capacity: bytes

    @classmethod
    def of(cls, limits: ConnectionLimits) -> _Answers:
        return cls(
            request_timeout=_problem(
                408,
                f"the request head did not arrive within {limits.header_timeout:g} s",
                "request_timeout",
            ),
            body_too_slow=_problem(
                408,
                f"the request body arrived slower than {limits.body_min_rate} bytes/s",
                "request_timeout",
            ),
            head_too_large=_problem(
                431,
                f"the request line and headers exceed {limits.max_header_bytes} bytes",
                "headers_too_large",
            ),
            over_capacity=_problem(
                503,
                "the server has too many open connections; retry shortly",
                "over_capacity",
                b"retry-after: 1",
            ),
        )


class Refusals:
    """The throttled logs of one server process (a line a second at most, with counts)."""

    def __init__(self) -> None:
        self.descriptors = out_of_descriptors_log()
        """Connections closed for lack of file descriptors (ERROR)."""
        self.capacity = RefusalLog(
            "over capacity: refused %d request%s in %.1f s "
            "(max_connections %d, %d connections open)"
        )
        """Requests answered 503 past ``max_connections`` (WARNING)."""
        self.limits = RefusalLog(
            "closed %d connection%s in %.1f s for breaking a connection limit (last: %s)",
            level=logging.INFO,
        )
        """Connections closed for a late or oversized head or a slow body (INFO)."""
        self.idle = RefusalLog(
            "closed %d connection%s in %.1f s that sent nothing within header_timeout",
            level=logging.DEBUG,
        )
        """Connections closed without a byte received (DEBUG: browsers and load balancers
        open such connections all the time)."""


class ConnectionConfig(uvicorn.Config):
    """uvicorn's settings with hubbub's connection protocol and its ``limits``. One per server;
    pickled into every worker process, so its :attr:`refusals` are made where they are used."""

    def __init__(
        self,
        *args: Any,
        limits: ConnectionLimits,
        trusted_proxies: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("http", HubbubHttpProtocol)
        # uvicorn believes X-Forwarded-* from 127.0.0.1 by default: any local client could
        # then pose as any address. Only the configured proxies are believed.
        kwargs["proxy_headers"] = bool(trusted_proxies)
        kwargs["forwarded_allow_ips"] = list(trusted_proxies) or None
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.answers = _Answers.of(limits)
        self._refusals: Refusals | None = None

    @property
    def refusals(self) -> Refusals:
        """Where this server counts what it refuses."""
        if self._refusals is None:
            self._refusals = Refusals()
        return self._refusals


_DEFAULT = ConnectionLimits()
_DEFAULT_ANSWERS = _Answers.of(_DEFAULT)
_DEFAULT_REFUSALS = Refusals()


class HubbubHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of :class:`ConnectionLimits` (from a
    :class:`ConnectionConfig`; the defaults under a plain ``uvicorn.Config``)."""

    # Slots for this class's own fields: with them in the instance dict too, it outgrows the
    # keys CPython shares between instances (30) and takes ~1.3 KB more per connection.
    __slots__ = (
        "_awaiting_head",
        "_began",
        "_body_base",
        "_body_bytes",
        "_body_start",
        "_body_timer",
        "_closed",
        "_head_bytes",
        "_header_timer",
        "_heads_done",
        "_in_body",
        "answers",
        "limits",
        "refusals",
    )

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if isinstance(getattr(self, "pipeline", None), collections.deque):  # uvicorn's, empty
            self.pipeline = Pipeline()  # type: ignore[assignment]  # smaller: see idle_memory
        if isinstance(config, ConnectionConfig):
            self.limits, self.answers = config.limits, config.answers
            self.refusals = config.refusals
        else:
            self.limits, self.answers = _DEFAULT, _DEFAULT_ANSWERS
            self.refusals = _DEFAULT_REFUSALS
        self.timeout_keep_alive = self.limits.keepalive_timeout  # type: ignore[assignment]
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = False  # from a request's first byte to the end of its head
        self._in_body = False  # from the end of a request's head to the end of its body
        self._head_bytes = 0
        self._heads_done = 0
        self._began = False  # a request began during the current feed
        self._body_start = 0.0
        self._body_base = 0
        self._body_bytes = 0
        self._closed = False  # answered by this class: ignore whatever else comes

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        lighten(self, "flow", "_is_writable_event")
        count_failed_accepts(self.loop, self.refusals.descriptors, self.connections.__len__)
        sock = transport.get_extra_info("socket")
        limit = open_files_limit()
        if sock is not None and sock.fileno() >= limit - fd_reserve(limit):
            self._closed = True
            self.refusals.descriptors.record(limit, len(self.connections))
            transport.close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._cancel_timers()
        self._closed = True  # the WebSocket protocol owns the transport from here
        super().handle_websocket_upgrade()

    # -- reading ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        while not self._closed:
            budget = self.limits.max_header_bytes - self._head_bytes
            if self._in_body or len(data) <= budget:
                self._feed(data)
                return
            # The read goes past what is left for the head: parse up to the limit first.
            heads_done = self._heads_done
            self._feed(data[:budget])
            if self._closed or self.transport.is_closing():
                return
            if self._heads_done == heads_done:  # the head goes on past the limit
                self.refusals.limits.record("a request head larger than max_header_bytes")
                self._refuse(self.answers.head_too_large)
                return
            data = data[budget:]  # the head ended within the limit: go on with the rest

    def _feed(self, data: bytes) -> None:
        """Parse ``data`` (uvicorn's ``data_received``), then account for it."""
        self._began = False
        super().data_received(data)
        if self._closed or self.parser is None:
            return
        if self._in_body:  # a body is still to come: time it (not when it came whole)
            if self._body_timer is None and self.limits.body_min_rate > 0:
                if not self._body_start:
                    self._body_start = self.loop.time()
                self._body_timer = self.loop.call_at(
                    self._body_start + self.limits.body_grace, self._on_body_check
                )
            return
        # Between requests or inside a head. Only an unfinished head counts (the tail of a body
        # that ended in this read does not); a head that began in this read is counted from
        # the next read on (so a pipelined head may exceed the limit by at most one read).
        if self._awaiting_head and not self._began:
            self._head_bytes += len(data)
        else:
            self._head_bytes = 0
        if self._header_timer is None and (
            # a head that did not come whole in one read, or bytes that start no request
            # (stray line breaks): neither may keep a connection open without a timer
            self._awaiting_head or (self.timeout_keep_alive_task is None and self._idle())
        ):
            self._arm_header_timer()

    def on_message_begin(self) -> None:
        if self._closed:
            return
        self._began = True
        self._awaiting_head = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        if self._closed:
            return
        self._heads_done += 1
        self._awaiting_head = False
        self._head_bytes = 0
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if len(self.connections) > self.limits.max_connections and self._idle():
            self.refusals.capacity.record(self.limits.max_connections, len(self.connections))
            self._refuse(self.answers.over_capacity)
            return
        # What an event stream closes when its client stops reading (hubbub_server.sse).
        scope = getattr(self, "scope", None)
        if isinstance(scope, dict):
            scope.setdefault("extensions", {})[TRANSPORT] = self.transport
        super().on_headers_complete()
        lighten(self, "cycle", "message_event")
        self._in_body = True
        self._body_start = 0.0  # set when the body turns out not to come whole
        self._body_base = self._body_bytes = 0

    def on_body(self, body: bytes) -> None:
        if self._closed:
            return
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._closed:
            return
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # -- timers -------------------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout, self._on_header_timeout
        )

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _idle(self) -> bool:
        """No response is being written on this connection."""
        return self.cycle is None or self.cycle.response_complete

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self._closed or self.transport.is_closing():
            return
        if not self._idle():
            # A pipelined head is late while a response is being written: finish that
            # response, then close.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        if self._awaiting_head:
            self.refusals.limits.record("a request head took longer than header_timeout")
            self._refuse(self.answers.request_timeout)
        else:
            self.refusals.idle.record()
            self._closed = True
            self.transport.close()

    def _on_body_check(self) -> None:
        self._body_timer = None
        if self._closed or not self._in_body or self.transport.is_closing():
            return
        now = self.loop.time()
        held_back = self.flow.read_paused or (
            self.cycle is not None and self.cycle.waiting_for_100_continue
        )
        if held_back:  # the server holds the body back, not the client: start a new window
            self._body_start, self._body_base = now, self._body_bytes
            due = now + self.limits.body_grace
        else:
            received = self._body_bytes - self._body_base
            due = self._body_start + self.limits.body_grace + received / self.limits.body_min_rate
            if due <= now:
                self._cut_body()
                return
        self._body_timer = self.loop.call_at(max(due, now + _MIN_RECHECK), self._on_body_check)

    def _cut_body(self) -> None:
        """The body is too slow: answer 408 unless a response has started, and close."""
        self.refusals.limits.record("a request body slower than body_min_rate")
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self._closed = True
            self._cancel_timers()
            self.transport.close()
            return
        self._refuse(self.answers.body_too_slow)

    # -- answers ------------------------------------------------------------------------------

    def _refuse(self, answer: bytes) -> None:
        """Send ``answer`` (a complete response with ``Connection: close``) and close; when a
        response is still being written on this connection, close after it instead.

        The close lingers: the server stops writing, then reads and drops what the client
        still sends for up to ``_LINGER`` seconds (or until the client closes), so that the
        answer is not lost to a reset while the client is still sending its head or body."""
        self._closed = True
        self._cancel_timers()
        if not self._idle() and not self._in_body:
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The application is still reading this request: it sees a disconnect, and
            # whatever it sends now goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.write(answer)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._header_timer = self.loop.call_later(_LINGER, self.transport.close)
