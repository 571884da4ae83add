"""hubbub.http: the pooled HTTP/1.1 client, against real servers started in the tests.

Every scenario runs on both event loops hubbub meets (asyncio's and uvloop's, which uvicorn uses):
their transports differ in exactly the places this client relies on (abort, pause_reading, TLS).
The servers are asyncio stream servers scripted per test; they record each connection (when it
opened, when the client's end of stream arrived) and each request (head and body).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop
from web_support import make_certificate

from hubbub import __version__
from hubbub.http import (
    ClientClosedError,
    ConnectError,
    ConnectionClosedError,
    ConnectTimeoutError,
    HttpClient,
    HttpError,
    PoolFullError,
    ProtocolError,
    ReadTimeoutError,
    ResponseTooLargeError,
    TLSError,
)
from hubbub.http.connection import HIGH_WATER
from hubbub.resilience import is_retryable

SECRET = "sk-very-secret-0123456789"
"""A credential sent in every request and echoed in response headers: no error may show it."""

HEADERS = [("Content-Type", "application/json"), ("Authorization", f"Bearer {SECRET}")]
BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


# -- running a scenario on each loop -----------------------------------------------------------


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """``run(scenario())``: run a coroutine on a fresh loop of the parameter's kind."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coro, 30))

    return run


# -- the scripted server -----------------------------------------------------------------------


@dataclass
class Request:
    """One request as the server read it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    conn: Conn
    head: bytes
    """The request line and headers as received."""


@dataclass
class Conn:
    """One connection as the server saw it."""

    index: int
    requests: int = 0
    eof: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the client's end of the connection arrived (FIN or reset)."""


Handler = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]
"""Answers a request; returns whether to keep the connection open for the next one."""


class Upstream:
    """An HTTP/1.1 server on a free port whose answers are written by a handler per test."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.conns: list[Conn] = []
        self.requests: list[Request] = []
        self.got_request = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, tls: ssl.SSLContext | None = None) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/v1", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(len(self.conns))
        self.conns.append(conn)
        try:
            while await self._one(conn, reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            conn.eof.set()  # the client closed or reset its end
        finally:
            writer.close()

    async def _one(
        self, conn: Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read one request and answer it; whether to go on with the next one."""
        head = await reader.readuntil(b"\r\n\r\n")
        line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = line.split(" ")
        headers = {}
        for text in lines:
            if text:
                name, value = text.split(":", 1)
                headers[name.lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        conn.requests += 1
        request = Request(method, target, headers, body, conn, head)
        self.requests.append(request)
        self.got_request.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self.handler(request, reader, writer)
        finally:
            self.in_flight -= 1

    async def wait_eof(self, conn: Conn, reader: asyncio.StreamReader) -> None:
        """Wait for the client's end of the connection (used by handlers that hang)."""
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        conn.eof.set()


def response(
    status: int = 200,
    body: bytes = b'{"ok":true}',
    headers: list[tuple[str, str]] | None = None,
    *,
    reason: str = "OK",
) -> bytes:
    """A whole response with a Content-Length."""
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


async def answer_ok(
    request: Request, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> bool:
    w.write(response(headers=[("X-Token", SECRET)]))
    return True


def assert_clean(exc: BaseException) -> None:
    """The error says nothing of the credentials or the header values."""
    assert SECRET not in str(exc)
    assert SECRET not in repr(exc)


# -- requests, keep-alive ----------------------------------------------------------------------


def test_request_sends_a_complete_head_and_reads_the_response(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            w.write(
                response(
                    201,
                    b'{"id":"x"}',
                    [("Retry-After", "7"), ("X-Multi", "a"), ("x-multi", "b")],
                    reason="Created",
                )
            )
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url("/v1/")) as client:
            resp = await client.request("POST", "/chat/completions?x=1", body=BODY, headers=HEADERS)
        assert resp.status == 201
        assert resp.body == b'{"id":"x"}'
        assert resp.headers.get("retry-after") == "7"
        assert resp.headers.get("RETRY-AFTER") == "7"
        assert resp.headers.get("missing") is None
        assert resp.headers.get("missing", "d") == "d"
        assert resp.headers.getall("X-MULTI") == ["a", "b"]
        assert "x-multi" in resp.headers
        assert "7" not in repr(resp.headers)  # names only
        [seen] = up.requests
        assert (seen.method, seen.target, seen.body) == ("POST", "/v1/chat/completions?x=1", BODY)
        assert seen.headers["host"] == f"127.0.0.1:{up.port}"
        assert seen.headers["content-length"] == str(len(BODY))
        assert seen.headers["accept-encoding"] == "identity"
        assert seen.headers["user-agent"] == f"hubbub/{__version__}"
        assert seen.headers["authorization"] == f"Bearer {SECRET}"
        assert seen.headers["content-type"] == "application/json"
        await up.close()

    run(scenario())


def test_keep_alive_reuses_one_connection(run: Any) -> None:
    async def scenario() -> None:
        up = await Upstream(answer_ok).start()
        client = HttpClient(up.url())
        for _ in range(20):
            resp = await client.request("POST", "/x", body=BODY, headers=HEADERS)
            assert resp.body == b'{"ok":true}'
        async with client.stream("GET", "/s") as stream:
            assert await stream.read() == b'{"ok":true}'
        assert len(up.conns) == 1
        assert up.conns[0].requests == 21
        assert client.stats.opened == 1
        assert client.stats.idle == 1
        await client.aclose()
        await up.close()

    run(scenario())


def test_connection_close_and_http10_responses_are_not_reused(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            if request.target.endswith("/close"):
                w.write(response(headers=[("Connection", "close")]))
            else:
                w.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return True  # the client must close, whatever the server does

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client:
            for path in ("/close", "/close", "/old", "/old"):
                resp = await client.request("GET", path)
                assert resp.status == 200
        assert len(up.conns) == 4
        await up.close()

    run(scenario())


def test_idle_connections_expire(run: Any) -> None:
    async def scenario() -> None:
        up = await Upstream(answer_ok).start()
        async with HttpClient(up.url(), keepalive_expiry=0.3) as client:
            await client.request("GET", "/a")
            await client.request("GET", "/b")  # at once: reused
            assert len(up.conns) == 1
            await asyncio.sleep(0.6)
            await client.request("GET", "/c")  # expired: a new connection
            assert len(up.conns) == 2
            await asyncio.wait_for(up.conns[0].eof.wait(), 5)  # and the old one closed
        await up.close()

    run(scenario())


def test_server_closing_an_idle_connection_is_noticed(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            w.write(response())
            await w.drain()
            return False  # a silent close after every response (no Connection: close)

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client:
            for _ in range(5):
                assert (await client.request("GET", "/x")).status == 200
                await asyncio.sleep(0.02)
            assert client.stats.opened == 5
        await up.close()

    run(scenario())


def test_an_unsolicited_message_on_an_idle_connection_drops_it(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            w.write(response())
            if request.conn.index == 0:  # then, idle, what some servers send before closing
                await asyncio.sleep(0.05)
                w.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
                await up.wait_eof(request.conn, r)
                return False
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client:
            assert (await client.request("GET", "/a")).status == 200
            await asyncio.wait_for(up.conns[0].eof.wait(), 5)  # the client dropped it
            assert (await client.request("GET", "/b")).status == 200
        assert [r.conn.index for r in up.requests] == [0, 1]
        await up.close()

    run(scenario())


def test_reused_connection_closed_before_answering_is_retried_on_a_fresh_one(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            if request.conn.index == 0 and request.conn.requests == 2:
                return False  # the keep-alive race: close as the request arrives, no answer
            w.write(response(body=b"answer %d" % len(up.requests)))
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client:
            assert (await client.request("POST", "/x", body=b"1")).body == b"answer 1"
            second = await client.request("POST", "/x", body=b"2")
            assert second.status == 200
            assert second.body == b"answer 3"
            assert client.stats.opened == 2
        assert [(r.conn.index, r.body) for r in up.requests] == [(0, b"1"), (0, b"2"), (1, b"2")]
        await up.close()

    run(scenario())


def test_a_request_that_must_not_be_sent_twice_is_not_retried_on_a_fresh_one(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            if request.conn.index == 0 and request.conn.requests == 2:
                return False  # the keep-alive race: close as the request arrives, no answer
            w.write(response(body=b"answer %d" % len(up.requests)))
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client:
            assert (await client.request("POST", "/x", body=b"1")).body == b"answer 1"
            with pytest.raises(ConnectionClosedError, match="before answering"):
                await client.request("POST", "/x", body=b"2", retry_stale=False)
            async with client.stream("POST", "/x", body=b"3", retry_stale=False) as stream:
                assert await stream.read() == b"answer 3"  # a fresh connection: no race
        assert [(r.conn.index, r.body) for r in up.requests] == [(0, b"1"), (0, b"2"), (1, b"3")]
        await up.close()

    run(scenario())


def test_fresh_connection_closed_before_answering_is_not_retried(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            return False

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client:
            with pytest.raises(ConnectionClosedError, match="before answering") as caught:
                await client.request("POST", "/x", body=b"1", headers=HEADERS)
        assert len(up.requests) == 1
        assert is_retryable(caught.value)
        assert f"POST http://127.0.0.1:{up.port}/v1/x" in str(caught.value)
        assert_clean(caught.value)
        await up.close()

    run(scenario())


def test_reused_connection_closed_mid_response_is_not_retried(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            if request.conn.requests == 2:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
                await w.drain()
                return False
            w.write(response())
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client:
            await client.request("POST", "/x", body=b"1")
            with pytest.raises(ConnectionClosedError, match="middle of the response body"):
                await client.request("POST", "/x", body=b"2")
        assert len(up.requests) == 2  # not sent again: the upstream had started answering
        await up.close()

    run(scenario())


# -- bodies ------------------------------------------------------------------------------------


def test_chunked_bodies_are_dechunked_and_streamed_as_they_arrive(run: Any) -> None:
    async def scenario() -> None:
        sent: list[bytes] = []
        go_on = asyncio.Event()

        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            w.write(CHUNKED_HEAD)
            for i, piece in enumerate((b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n")):
                if i and request.target.endswith("/stream"):
                    await go_on.wait()  # the client must have read the previous piece first
                    go_on.clear()
                w.write(chunk(piece))
                await w.drain()
                sent.append(piece)
            w.write(b"0\r\n\r\n")
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client:
            whole = await client.request("POST", "/whole", body=BODY)
            assert whole.body == b"data: one\n\ndata: two\n\ndata: [DONE]\n\n"
            got = []
            async with client.stream("POST", "/stream", body=BODY) as stream:
                assert stream.status == 200
                assert stream.headers.get("content-type") == "text/event-stream"
                async for piece in stream:
                    got.append((piece, len(sent)))
                    go_on.set()
                assert stream.complete
            assert b"".join(p for p, _ in got) == b"data: one\n\ndata: two\n\ndata: [DONE]\n\n"
            # each piece was in the client's hands before the server wrote the next one
            assert [n for _, n in got] == [4, 5, 6]  # 3 pieces of /whole, then one by one
            assert client.stats.opened == 1  # read to the end: reused
        await up.close()

    run(scenario())


def test_body_delimited_by_the_end_of_the_connection(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            await w.drain()
            return False

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client:
            assert (await client.request("GET", "/x")).body == b"until the end"
            async with client.stream("GET", "/x") as stream:
                assert await stream.read() == b"until the end"
        await up.close()

    run(scenario())


def test_interim_responses_are_skipped_and_head_has_no_body(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            if request.method == "HEAD":
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Kind: head\r\n\r\n")
                return True
            w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
            w.write(response(body=b"final", headers=[("X-Kind", "final")]))
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client:
            resp = await client.request("GET", "/x")
            assert (resp.status, resp.body, resp.headers.get("x-kind")) == (200, b"final", "final")
            assert "link" not in resp.headers
            head = await client.request("HEAD", "/x")
            assert (head.status, head.body, head.headers.get("x-kind")) == (200, b"", "head")
            assert "content-length" not in up.requests[-1].headers
        await up.close()

    run(scenario())


def test_bodies_over_the_limit_are_refused(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            if request.target.endswith("/declared"):
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                await up.wait_eof(request.conn, r)  # never sends the body
                return False
            w.write(CHUNKED_HEAD)
            for _ in range(20):
                w.write(chunk(b"x" * 500))
            w.write(b"0\r\n\r\n")
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url(), max_response_bytes=4000) as client:
            with pytest.raises(ResponseTooLargeError, match="max_response_bytes") as caught:
                await client.request("GET", "/declared", headers=HEADERS)
            assert caught.value.limit == 4000
            assert not is_retryable(caught.value)
            assert_clean(caught.value)
            await asyncio.wait_for(up.conns[0].eof.wait(), 5)  # refused from the head, closed
            with pytest.raises(ResponseTooLargeError):
                await client.request("GET", "/chunked")
            with pytest.raises(ResponseTooLargeError):
                async with client.stream("GET", "/chunked") as stream:
                    await stream.read()
            async with client.stream("GET", "/chunked") as stream:  # iterating is not bounded
                assert sum([len(p) async for p in stream]) == 10000
        await up.close()

    run(scenario())


def test_a_stream_that_is_not_read_stops_the_upstream(run: Any) -> None:
    total = 32 * 2**20

    async def scenario() -> None:
        sent = 0

        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            nonlocal sent
            w.write(CHUNKED_HEAD)
            piece = chunk(b"y" * 65536)
            for _ in range(total // 65536):
                w.write(piece)
                await w.drain()
                sent += 65536
            w.write(b"0\r\n\r\n")
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client, client.stream("GET", "/big") as stream:
            size = len(await stream.__anext__())
            await asyncio.sleep(0.3)  # plenty for 32 MiB over loopback, were it read
            # the client stopped reading near the high-water mark: only what the kernel's
            # socket buffers hold went out besides
            assert sent < total - 8 * 2**20
            assert stream._conn is not None
            assert stream._conn.pauses == 1
            piece = await stream.__anext__()
            assert len(piece) <= HIGH_WATER + 2**20
            size += len(piece) + sum([len(p) async for p in stream])
            assert size == total
        await up.close()

    run(scenario())


def test_a_long_stream_read_steadily_never_pauses_reading(run: Any) -> None:
    total = 8 * 2**20  # 32 times the high-water mark

    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            w.write(CHUNKED_HEAD)
            piece = chunk(b"z" * 16384)
            for n in range(total // 16384):
                w.write(piece)
                if n % 4 == 3:
                    await w.drain()
                    await asyncio.sleep(0)  # 64 KiB at a time: a steady upstream
            w.write(b"0\r\n\r\n")
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client, client.stream("GET", "/long") as stream:
            conn = stream._conn
            assert conn is not None
            size = 0
            async for piece in stream:  # read as it comes: never HIGH_WATER behind
                size += len(piece)
                assert conn.buffered == 0
            assert size == total
            assert conn.pauses == 0  # bytes buffered unread, not bytes so far, pause reading
        await up.close()

    run(scenario())


# -- failures ----------------------------------------------------------------------------------


def test_read_timeout_on_a_server_that_hangs(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            if request.target.endswith("/mid"):
                w.write(CHUNKED_HEAD + chunk(b"data: one\n\n"))
            await up.wait_eof(request.conn, r)
            return False

        up = await Upstream(handler).start()
        async with HttpClient(up.url(), read_timeout=0.2) as client:
            with pytest.raises(ReadTimeoutError, match="read timeout") as caught:
                await client.request("POST", "/head", body=BODY, headers=HEADERS)
            assert isinstance(caught.value, TimeoutError)
            assert is_retryable(caught.value)
            assert_clean(caught.value)
            await asyncio.wait_for(up.conns[0].eof.wait(), 5)  # the client closed it
            async with client.stream("POST", "/mid", body=BODY) as stream:
                assert await stream.__anext__() == b"data: one\n\n"
                with pytest.raises(ReadTimeoutError, match="response body"):
                    await stream.__anext__()
            await asyncio.wait_for(up.conns[1].eof.wait(), 5)
            assert len(up.requests) == 2
        await up.close()

    run(scenario())


def test_read_timeout_is_about_silence_not_total_time(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n")
            for _ in range(16):  # one byte every 50 ms: 0.8 s in all, never 0.5 s of silence
                await asyncio.sleep(0.05)
                w.write(b"z")
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url(), read_timeout=0.5) as client:
            assert (await client.request("GET", "/drip")).body == b"z" * 16
        await up.close()

    run(scenario())


def test_response_heads_over_the_limit_are_refused(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            w.write(b"HTTP/1.1 200 OK\r\n")
            if request.target.endswith("/many"):
                for i in range(100):
                    w.write(f"X-H{i}: {SECRET}{'v' * 200}\r\n".encode())
            else:  # one header of 4 MiB, in pieces: the client must stop reading it early
                w.write(f"X-Long: {SECRET}".encode())
                for _ in range(256):
                    w.write(b"v" * 16384)
                    await w.drain()  # raises once the client has closed the connection
                    long_sent.append(16384)
                w.write(b"\r\n")
            w.write(b"Content-Length: 0\r\n\r\n")
            await up.wait_eof(request.conn, r)
            return False

        long_sent: list[int] = []
        up = await Upstream(handler).start()
        async with HttpClient(up.url(), max_header_bytes=8192) as client:
            for path in ("/many", "/long"):
                with pytest.raises(ResponseTooLargeError, match="max_header_bytes") as caught:
                    await client.request("GET", path)
                assert caught.value.limit == 8192
                assert_clean(caught.value)
        for conn in up.conns:
            await asyncio.wait_for(conn.eof.wait(), 5)
        assert sum(long_sent) < 4 * 2**20  # the client closed before the header's end
        await up.close()

    run(scenario())


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        f"HTTP/1.1 200 OK\r\nX-Key: {SECRET}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".encode(),
        f"HTTP/1.1 200 OK\r\nContent-Length: {SECRET}\r\n\r\n".encode(),
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ],
    ids=["garbage", "bad-status", "bad-chunk", "bad-length", "upgrade"],
)
def test_malformed_responses_raise_protocol_error(run: Any, raw: bytes) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            w.write(raw)
            await up.wait_eof(request.conn, r)
            return False

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client:
            with pytest.raises(ProtocolError, match="malformed response") as caught:
                async with client.stream("GET", "/x", headers=HEADERS) as stream:
                    await stream.read()
            assert_clean(caught.value)
            assert is_retryable(caught.value)
            await asyncio.wait_for(up.conns[0].eof.wait(), 5)
            assert client.stats == type(client.stats)(opened=1, idle=0, active=0, waiting=0)
        await up.close()

    run(scenario())


def test_data_after_a_complete_response_discards_the_connection(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            w.write(response(body=b"fine") + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra")
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client:
            assert (await client.request("GET", "/x")).body == b"fine"
            assert (await client.request("GET", "/x")).body == b"fine"
        assert len(up.conns) == 2
        await up.close()

    run(scenario())


def test_connection_refused_raises_connect_error(run: Any) -> None:
    async def scenario() -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        async with HttpClient(f"http://127.0.0.1:{port}/v1") as client:
            with pytest.raises(ConnectError, match="cannot connect") as caught:
                await client.request("POST", "/x", body=BODY, headers=HEADERS)
        assert isinstance(caught.value, ConnectionError)
        assert is_retryable(caught.value)
        assert_clean(caught.value)
        assert client.stats.active == 0

    run(scenario())


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose listening socket never accepts and whose backlog is full: a new
    connection's SYN is dropped, so connecting hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for filler in fillers:
        filler.close()
    listener.close()


def test_connect_timeout(run: Any, full_backlog: int) -> None:
    async def scenario() -> None:
        async with HttpClient(f"http://127.0.0.1:{full_backlog}", connect_timeout=0.3) as client:
            with pytest.raises(ConnectTimeoutError, match="connect_timeout") as caught:
                await client.request("GET", "/x")
        assert isinstance(caught.value, TimeoutError)
        assert isinstance(caught.value, ConnectError)
        assert is_retryable(caught.value)

    run(scenario())


# -- cancellation, concurrency -----------------------------------------------------------------


def test_cancellation_closes_the_socket_at_once(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            if request.target.endswith("/stream"):
                w.write(CHUNKED_HEAD + chunk(b"data: one\n\n"))
            await up.wait_eof(request.conn, r)  # an LLM thinking for ever
            return False

        up = await Upstream(handler).start()
        client = HttpClient(up.url())

        async def read_stream() -> None:
            async with client.stream("POST", "/stream", body=BODY) as stream:
                async for _ in stream:
                    pass

        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: client.request("POST", "/request", body=BODY),
            read_stream,
        ]
        for index, call in enumerate(calls):
            up.got_request.clear()
            task = asyncio.create_task(call())
            await up.got_request.wait()
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the upstream sees the connection end within a second (at once, in fact)
            await asyncio.wait_for(up.conns[index].eof.wait(), 1.0)
        assert client.stats.active == 0
        assert client.stats.idle == 0
        await client.aclose()
        await up.close()

    run(scenario())


def test_leaving_a_stream_early_closes_it_and_finishing_one_pools_it(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            w.write(CHUNKED_HEAD + chunk(b"data: one\n\n"))
            if request.target.endswith("/endless"):
                await up.wait_eof(request.conn, r)
                return False
            w.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url()) as client:
            async with client.stream("GET", "/endless") as stream:
                async for _ in stream:
                    break
            await asyncio.wait_for(up.conns[0].eof.wait(), 1.0)
            with pytest.raises(RuntimeError, match="inside its 'async with'"):
                await stream.read()

            class Oops(Exception):
                pass

            async def fail_midway() -> None:
                async with client.stream("GET", "/endless") as stream:
                    await stream.__anext__()
                    raise Oops

            with pytest.raises(Oops):
                await fail_midway()
            await asyncio.wait_for(up.conns[1].eof.wait(), 1.0)

            async with client.stream("GET", "/short") as stream:
                assert await stream.read() == b"data: one\n\ndata: [DONE]\n\n"
            await client.request("GET", "/short")
            assert len(up.conns) == 3  # the finished stream's connection was reused
        await up.close()

    run(scenario())


def test_concurrency_is_limited_to_max_connections(run: Any) -> None:
    async def scenario() -> None:
        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            await asyncio.sleep(0.05)
            w.write(response(body=request.body))
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url(), max_connections=2) as client:
            bodies = [b"%d" % i for i in range(8)]
            results = await asyncio.gather(
                *(client.request("POST", "/x", body=body) for body in bodies)
            )
            assert [r.body for r in results] == bodies
            assert up.max_in_flight == 2
            assert len(up.conns) == 2
            assert client.stats.idle == 2
            assert client.stats.active == 0
        await up.close()

    run(scenario())


def test_waiters_are_bounded_and_a_cancelled_waiter_frees_its_place(run: Any) -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            await release.wait()
            w.write(response())
            return True

        up = await Upstream(handler).start()
        async with HttpClient(up.url(), max_connections=1, max_waiters=1) as client:
            holder = asyncio.create_task(client.request("GET", "/a"))
            await up.got_request.wait()
            waiter = asyncio.create_task(client.request("GET", "/b"))
            await asyncio.sleep(0.01)
            assert client.stats.waiting == 1
            with pytest.raises(PoolFullError, match="max_waiters"):
                await client.request("GET", "/c")
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert client.stats.waiting == 0
            late = asyncio.create_task(client.request("GET", "/d"))
            await asyncio.sleep(0.01)
            release.set()
            assert (await holder).status == 200
            assert (await late).status == 200
            assert [r.target for r in up.requests] == ["/v1/a", "/v1/d"]
            assert client.stats.active == 0
        await up.close()

    run(scenario())


def test_a_waiter_cancelled_just_as_it_got_a_slot_passes_the_slot_on(run: Any) -> None:
    async def scenario() -> None:
        up = await Upstream(answer_ok).start()
        async with HttpClient(up.url(), max_connections=1) as client:
            async with client.stream("GET", "/a") as stream:
                await stream.read()
                waiter = asyncio.create_task(client.request("GET", "/b"))
                await asyncio.sleep(0.01)
                assert client.stats.waiting == 1
            # leaving the block handed the slot to the waiter, which has not run yet
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert client.stats.active == 0
            resp = await asyncio.wait_for(client.request("GET", "/c"), 5)
            assert resp.status == 200
        assert [r.target for r in up.requests] == ["/v1/a", "/v1/c"]
        await up.close()

    run(scenario())


def test_aclose_fails_waiters_and_refuses_new_requests(run: Any) -> None:
    async def scenario() -> None:
        release = asyncio.Event()

        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            await release.wait()
            w.write(response())
            return True

        up = await Upstream(handler).start()
        client = HttpClient(up.url(), max_connections=1)
        holder = asyncio.create_task(client.request("GET", "/a"))
        await up.got_request.wait()
        waiter = asyncio.create_task(client.request("GET", "/b"))
        await asyncio.sleep(0.01)
        await client.aclose()
        with pytest.raises(ClientClosedError):
            await waiter
        with pytest.raises(ClientClosedError) as caught:
            await client.request("GET", "/c")
        assert not is_retryable(caught.value)
        release.set()
        assert (await holder).status == 200  # in flight: finishes, then its connection closes
        await asyncio.wait_for(up.conns[0].eof.wait(), 5)
        assert client.stats.idle == 0
        await up.close()

    run(scenario())


# -- TLS ---------------------------------------------------------------------------------------


def test_tls_verifies_by_default_and_works_with_a_trusted_certificate(
    run: Any, tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path, "localhost", "127.0.0.1")
    other_cert, other_key = make_certificate(tmp_path, "upstream.example")

    async def scenario() -> None:
        server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_tls.load_cert_chain(cert, key)

        async def handler(
            request: Request, r: asyncio.StreamReader, w: asyncio.StreamWriter
        ) -> bool:
            if request.target.endswith("/hang"):
                await up.wait_eof(request.conn, r)
                return False
            return await answer_ok(request, r, w)

        up = await Upstream(handler).start(tls=server_tls)
        url = up.url(scheme="https")
        async with HttpClient(url) as client:  # the system's trust store: refused
            with pytest.raises(TLSError, match="certificate verify failed") as caught:
                await client.request("GET", "/x", headers=HEADERS)
            assert not is_retryable(caught.value)
            assert_clean(caught.value)
        trusting = ssl.create_default_context(cafile=str(cert))
        async with HttpClient(url, ssl_context=trusting) as client:
            for _ in range(3):
                resp = await client.request("POST", "/x", body=BODY, headers=HEADERS)
                assert resp.body == b'{"ok":true}'
            assert client.stats.opened == 1
            up.got_request.clear()
            task = asyncio.create_task(client.request("POST", "/hang", body=BODY))
            await up.got_request.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.wait_for(up.conns[0].eof.wait(), 1.0)  # cancelling reaches it
        assert len(up.conns) == 1
        await up.close()

        # a trusted certificate for another name: refused too
        other_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        other_tls.load_cert_chain(other_cert, other_key)
        other = await Upstream(answer_ok).start(tls=other_tls)
        trusting_other = ssl.create_default_context(cafile=str(other_cert))
        async with HttpClient(other.url(scheme="https"), ssl_context=trusting_other) as client:
            with pytest.raises(TLSError, match="mismatch"):
                await client.request("GET", "/x")
        assert other.requests == []
        await other.close()

    run(scenario())


# -- input checks ------------------------------------------------------------------------------


def test_bad_request_headers_are_refused_without_showing_values() -> None:
    client = HttpClient("http://127.0.0.1:9")
    bad: list[tuple[list[tuple[str, Any]], str]] = [
        ([("Authorization", f"Bearer {SECRET}\r\nX-Injected: 1")], "'Authorization'.*line break"),
        ([("Authorization", f"Bearer {SECRET}\n")], "line break"),
        ([("X-Key", f"{SECRET}\0")], "NUL"),
        ([("X-Key", f"{SECRET}€")], "Latin-1"),
        ([("X-Key", SECRET.encode())], "must be a str"),
        ([("Bad Name", SECRET)], "not an HTTP token"),
        ([("Bad:Name", SECRET)], "not an HTTP token"),
        ([("Content-Length", "5")], "set by the HTTP client"),
        ([("host", "evil")], "set by the HTTP client"),
        ([("Transfer-Encoding", "chunked")], "set by the HTTP client"),
    ]
    for headers, message in bad:
        with pytest.raises((ValueError, TypeError), match=message) as caught:
            client.stream("POST", "/x", body=b"", headers=headers)
        assert_clean(caught.value)
    for path in ("no-slash", "/a b", "/a\r\nX: y", "/caf\u00e9"):
        with pytest.raises(ValueError, match="path"):
            client.stream("GET", path)
    with pytest.raises(ValueError, match="method"):
        client.stream("GE T", "/x")


def test_caller_user_agent_replaces_the_default(run: Any) -> None:
    async def scenario() -> None:
        up = await Upstream(answer_ok).start()
        async with HttpClient(up.url("")) as client:
            await client.request("GET", "", headers={"User-Agent": "mine/1", "X-A": "b"})
            await client.request("PUT", "/p")
        first, second = up.requests
        assert first.headers["user-agent"] == "mine/1"
        assert first.head.lower().count(b"\r\nuser-agent:") == 1
        assert first.headers["x-a"] == "b"
        assert first.target == "/"
        assert "content-length" not in first.headers
        assert second.headers["content-length"] == "0"
        assert second.headers["user-agent"].startswith("hubbub/")
        await up.close()

    run(scenario())


def test_base_url_checks() -> None:
    with pytest.raises(ValueError, match="credentials") as caught:
        HttpClient(f"https://user:{SECRET}@api.example.com/v1")
    assert_clean(caught.value)
    for url, message in [
        ("ftp://example.com", "scheme"),
        ("https://api.example.com/v1?key=1", "query"),
        ("http:///v1", "host"),
    ]:
        with pytest.raises(ValueError, match=message):
            HttpClient(url)
    with pytest.raises(ValueError, match="ssl_context"):
        HttpClient("http://example.com", ssl_context=ssl.create_default_context())
    client = HttpClient("https://[::1]:8443/v1/")
    assert (client.origin, client.base_path) == ("https://[::1]:8443", "/v1")
    assert HttpClient("https://API.example.com:443").origin == "https://api.example.com"


def test_errors_are_os_errors_with_the_right_families() -> None:
    assert issubclass(HttpError, OSError)
    assert issubclass(ReadTimeoutError, TimeoutError)
    assert issubclass(ConnectTimeoutError, TimeoutError)
    assert issubclass(ConnectionClosedError, ConnectionError)
    assert is_retryable(ProtocolError("x"))
    assert is_retryable(PoolFullError("x"))
    assert not is_retryable(ResponseTooLargeError("x"))
    assert not is_retryable(TLSError("x"))
    assert str(HttpError("boom", request="GET http://h/p")) == "GET http://h/p: boom"
