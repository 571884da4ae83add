"""Idle, slow, oversized and too many connections against a real ``hubbub serve`` (issue 15,
items 1 and 2): header timeout, request-head size cap (431), minimum body rate, connection cap
(503), keep-alive timeout, health under hundreds of silent connections, and file-descriptor
exhaustion logged at most once a second.

Timings are bounds with wide margins (the machine is shared): a limit of 0.5 s is checked as
"still open after 0.2 s, closed within a few seconds"."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import re
import resource
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_support import TRACE_MARKERS, LiveServer, running
from redis_support import RedisServer

TIMEOUTS_TOML = """\
[server]
header_timeout = 0.5
keepalive_timeout = 0.7
body_min_rate = 1000
max_header_bytes = 4096
"""
CAP_TOML = """\
[server]
header_timeout = 30
max_connections = 20
"""
CROWD_TOML = """\
[server]
header_timeout = 3
"""
FD_TOML = """\
[server]
header_timeout = 2
"""
REFUSED = re.compile(r"refused (\d+) connection")
NOT_BEFORE = 0.2  # seconds a 0.5 s limit must certainly leave a connection open
WITHIN = 6.0  # seconds by which a 0.5-0.7 s limit must have acted, however loaded the machine


@pytest.fixture(scope="module")
def timeouts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running(tmp_path_factory.mktemp("timeouts"), TIMEOUTS_TOML) as server:
        yield server


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def head(path: str = "/health/live", method: str = "GET", **headers: str) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[float, bytes]:
    """Seconds until the server closed ``sock`` (``inf`` if it did not within ``timeout``),
    and everything it sent."""
    began = time.monotonic()
    data = b""
    sock.settimeout(timeout)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        return float("inf"), data
    except ConnectionResetError:
        pass
    return time.monotonic() - began, data


def open_after(sock: socket.socket, seconds: float) -> bool:
    """True when the server has neither closed ``sock`` nor sent anything for ``seconds``."""
    sock.settimeout(seconds)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    return False


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 response."""
    head_bytes, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def assert_problem_answer(response: bytes, status: int, code: str) -> dict[str, Any]:
    got, headers, body = parse(response)
    assert got == status, response[:300]
    assert headers["content-type"].startswith("application/problem+json")
    assert headers["connection"] == "close"
    document: dict[str, Any] = json.loads(body)
    assert document["status"] == status
    assert document["code"] == code
    assert document["detail"]
    return document


def refused(line: str) -> int:
    """The count in a throttled "refused N connections" log line."""
    match = REFUSED.search(line)
    assert match, line
    return int(match.group(1))


def health(server: LiveServer, timeout: float = 10) -> int:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head(Connection="close"))
        _, response = read_until_closed(sock, timeout)
    return parse(response)[0]


# -- header timeout --------------------------------------------------------------------------


def test_a_silent_connection_is_closed_after_header_timeout(timeouts: LiveServer) -> None:
    with connect(timeouts) as sock:
        assert open_after(sock, NOT_BEFORE)
        waited, sent = read_until_closed(sock, WITHIN)
    assert waited < WITHIN, "a connection that never sent a byte stayed open"
    assert sent == b""  # nothing was asked: nothing is answered


def test_a_trickled_head_is_answered_408_and_closed(timeouts: LiveServer) -> None:
    began = time.monotonic()
    with connect(timeouts) as sock:
        for byte in head():  # one byte every 0.1 s: the head would take seconds
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                break
            with contextlib.suppress(OSError):
                sock.send(bytes([byte]))
        _, response = read_until_closed(sock, WITHIN)
    assert time.monotonic() - began < WITHIN + 10
    assert_problem_answer(response, 408, "request_timeout")


def test_a_request_on_time_is_served(timeouts: LiveServer) -> None:
    with connect(timeouts) as sock:
        sock.sendall(head(Connection="close"))
        _, response = read_until_closed(sock, 10)
    assert parse(response)[0] == 200


# -- head size -------------------------------------------------------------------------------


def test_a_head_larger_than_max_header_bytes_gets_431(timeouts: LiveServer) -> None:
    with connect(timeouts) as sock:
        sock.sendall(head(**{"X-Big": "a" * 10_000}))
        waited, response = read_until_closed(sock, WITHIN)
    assert waited < WITHIN
    document = assert_problem_answer(response, 431, "headers_too_large")
    assert "4096" in document["detail"]


def test_a_huge_header_is_refused_without_reading_it_all(timeouts: LiveServer) -> None:
    """The 100 MiB header of the issue: the answer comes long before the client is done."""
    with connect(timeouts) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        chunk, response = b"a" * 65536, b""
        for _ in range(100 * 16):  # up to 100 MiB
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except OSError:
                break
        with contextlib.suppress(OSError):
            _, response = read_until_closed(sock, WITHIN)
    assert response, "no answer to an endless header"
    assert_problem_answer(response, 431, "headers_too_large")


def test_a_head_just_under_the_limit_is_served(timeouts: LiveServer) -> None:
    with connect(timeouts) as sock:
        sock.sendall(head(Connection="close", **{"X-Big": "a" * 3000}))
        _, response = read_until_closed(sock, 10)
    assert parse(response)[0] == 200


def test_a_body_larger_than_max_header_bytes_in_the_same_read_is_not_counted_as_head(
    timeouts: LiveServer,
) -> None:
    body = json.dumps({"title": "t" * 3000, "metadata": {"x": "y" * 6000}}).encode()
    request = head(
        "/api/conversations",
        "POST",
        **{
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Connection": "close",
        },
    )
    with connect(timeouts) as sock:
        sock.sendall(request + body)  # one write, 9 KB: more than max_header_bytes
        _, response = read_until_closed(sock, 10)
    status, _, _ = parse(response)
    assert status not in (408, 431), response[:300]
    assert status < 500


def test_pipelined_requests_are_all_answered(timeouts: LiveServer) -> None:
    requests = head() * 120 + head(Connection="close")  # one write, 5 KB: over the limit
    assert len(requests) > 4096
    with connect(timeouts) as sock:
        sock.sendall(requests)
        _, response = read_until_closed(sock, 20)
    assert response.count(b"HTTP/1.1 200 OK") == 121, response[:300]


def test_large_bodies_one_after_another_on_one_connection_are_never_counted_as_head(
    timeouts: LiveServer,
) -> None:
    # The tail of a body that ends in a read used to be added to the next head's count, so
    # every few large requests on one keep-alive connection got a spurious 431.
    body = {"model": "offline/echo", "messages": [{"role": "user", "content": "word " * 6000}]}
    with httpx.Client(base_url=timeouts.url, timeout=30) as client:
        statuses = [client.post("/v1/chat/completions", json=body).status_code for _ in range(12)]
    assert statuses == [200] * 12


# -- body rate -------------------------------------------------------------------------------


def test_a_body_slower_than_body_min_rate_is_cut_with_408(timeouts: LiveServer) -> None:
    request = head(
        "/api/conversations",
        "POST",
        **{"Content-Type": "application/json", "Content-Length": "100000"},
    )
    began = time.monotonic()
    with connect(timeouts) as sock:
        sock.sendall(request + b"{")
        while time.monotonic() - began < 30:  # 100 bytes every 0.25 s: 400 bytes/s
            readable, _, _ = select.select([sock], [], [], 0.25)
            if readable:
                break
            try:
                sock.sendall(b" " * 100)
            except OSError:
                break
        _, response = read_until_closed(sock, WITHIN)
    assert time.monotonic() - began < 30, "a body at 400 bytes/s was never cut"
    assert_problem_answer(response, 408, "request_timeout")
    assert not any(marker in timeouts.log() for marker in TRACE_MARKERS), timeouts.log()[-3000:]


def test_a_body_at_a_normal_rate_is_read(timeouts: LiveServer) -> None:
    body = json.dumps({"title": "x" * 3000}).encode()
    request = head(
        "/api/conversations",
        "POST",
        **{
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Connection": "close",
        },
    )
    with connect(timeouts) as sock:
        sock.sendall(request)
        for start in range(0, len(body), 1000):  # 1000 bytes every 0.1 s: 10,000 bytes/s
            time.sleep(0.1)
            sock.sendall(body[start : start + 1000])
        _, response = read_until_closed(sock, 10)
    status, _, _ = parse(response)
    assert status != 408
    assert status < 500


# -- keep-alive ------------------------------------------------------------------------------


def test_an_idle_keepalive_connection_is_closed_after_keepalive_timeout(
    timeouts: LiveServer,
) -> None:
    with connect(timeouts) as sock:
        sock.sendall(head())
        response = b""
        while b'{"status":"ok"}' not in response:
            chunk = sock.recv(65536)
            assert chunk, "closed before answering"
            response += chunk
        assert parse(response)[0] == 200
        assert open_after(sock, NOT_BEFORE)
        waited, rest = read_until_closed(sock, WITHIN)
    # 0.7 s configured; uvicorn's default of 5 s would not fit the bound below.
    assert waited < 4.0
    assert rest == b""


# -- connection cap --------------------------------------------------------------------------


def test_past_max_connections_a_request_gets_503_and_the_server_recovers(
    tmp_path: Path,
) -> None:
    with running(tmp_path, CAP_TOML) as server:
        held = [connect(server) for _ in range(20)]
        try:
            time.sleep(0.3)  # let the server accept them all
            with connect(server) as sock:
                sock.sendall(head())
                _, response = read_until_closed(sock, 10)
            document = assert_problem_answer(response, 503, "over_capacity")
            assert document["title"] == "Service Unavailable"
            assert parse(response)[1]["retry-after"] == "1"
            # One connection fewer: the 20th is within the cap again.
            held.pop().close()
            deadline = time.monotonic() + 10
            while health(server) != 200:
                assert time.monotonic() < deadline, "still 503 under the cap"
                time.sleep(0.1)
        finally:
            for sock in held:
                sock.close()
        assert health(server) == 200
        log = server.log()
    assert "over capacity: refused 1 request" in log
    assert not any(marker in log for marker in TRACE_MARKERS)


# -- several workers ------------------------------------------------------------------------


def test_the_limits_apply_in_every_worker(tmp_path: Path, redis_server: RedisServer) -> None:
    shared = (  # several workers need a shared event log and cache
        f'[redis]\nurl = "{redis_server.url}"\n[events]\nbackend = "redis"\n'
        '[cache]\nbackend = "redis"\n'
    )
    server = LiveServer(tmp_path, TIMEOUTS_TOML + shared)
    try:
        server.start("--workers", "2")
        for _ in range(4):  # whichever worker accepts it
            with connect(server) as sock:
                assert open_after(sock, NOT_BEFORE)
                waited, _ = read_until_closed(sock, WITHIN)
            assert waited < WITHIN, "a silent connection stayed open under --workers"
            with connect(server) as sock:
                sock.sendall(head(**{"X-Big": "a" * 10_000}))
                _, response = read_until_closed(sock, WITHIN)
            assert_problem_answer(response, 431, "headers_too_large")
    finally:
        server.stop()


# -- a crowd of silent connections ----------------------------------------------------------


def test_health_answers_while_500_silent_connections_are_open_and_they_get_closed(
    tmp_path: Path,
) -> None:
    with running(tmp_path, CROWD_TOML) as server:
        crowd = [connect(server) for _ in range(500)]
        try:
            began = time.monotonic()
            assert health(server, timeout=5) == 200
            assert time.monotonic() - began < 5
            # header_timeout = 3: every one of them is closed by the server.
            deadline = time.monotonic() + 30
            for sock in crowd:
                waited, sent = read_until_closed(sock, max(0.1, deadline - time.monotonic()))
                assert waited != float("inf"), "a silent connection was never closed"
                assert sent == b""
        finally:
            for sock in crowd:
                sock.close()


# -- file descriptors ------------------------------------------------------------------------


def test_out_of_file_descriptors_is_logged_once_a_second_and_the_server_recovers(
    tmp_path: Path,
) -> None:
    server = LiveServer(tmp_path, FD_TOML)
    crowd: list[socket.socket] = []
    try:
        server.start()
        assert server.process is not None
        resource.prlimit(server.process.pid, resource.RLIMIT_NOFILE, (256, 256))
        began = time.monotonic()
        for _ in range(600):  # far more than 256 descriptors
            crowd.append(connect(server))
        time.sleep(3)  # refusals are logged; the held ones reach header_timeout
        for sock in crowd:
            sock.close()
        crowd.clear()
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                if health(server, timeout=2) == 200:
                    break
            assert time.monotonic() < deadline, "the server did not recover"
            time.sleep(0.2)
        elapsed = time.monotonic() - began
        time.sleep(1.2)  # the last throttled line
        log = server.log()
    finally:
        for sock in crowd:
            sock.close()
        server.stop()
    lines = [line for line in log.splitlines() if "out of file descriptors" in line]
    assert lines, log[-3000:]
    assert sum(refused(line) for line in lines) >= 1
    assert len(lines) <= elapsed + 3, lines  # at most one line a second
    assert "Traceback" not in log, log[-3000:]
    assert "out of system resource" not in log


# -- throttled logs, in process ---------------------------------------------------------------


def test_a_burst_of_refusals_makes_one_line_then_one_line_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from hubbub_server.refusals import RefusalLog  # here: the live tests run on older trees

    async def burst() -> None:
        log = RefusalLog("refused %d connection%s in %.1f s (%s)", interval=0.2)
        for _ in range(1000):
            log.record("state")
        await asyncio.sleep(0.5)

    with caplog.at_level(logging.WARNING, logger="hubbub.server.connections"):
        asyncio.run(burst())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert [refused(line) for line in lines] == [1, 999]
    assert lines[1].endswith("(state)")


def test_failed_accepts_are_counted_not_logged_one_traceback_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from hubbub_server.fdlimit import count_failed_accepts, out_of_descriptors_log

    passed_on: list[dict[str, Any]] = []

    async def flood() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: passed_on.append(context))
        log = out_of_descriptors_log()
        count_failed_accepts(loop, log, lambda: 7)
        count_failed_accepts(loop, log, lambda: 7)  # a second time changes nothing
        for _ in range(500):  # what the standard event loop reports on EMFILE
            loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(errno.EMFILE, "Too many open files"),
                }
            )
        loop.call_exception_handler({"message": "unrelated", "exception": ValueError("x")})
        await asyncio.sleep(1.3)

    with caplog.at_level(logging.DEBUG, logger="hubbub.server.connections"):
        asyncio.run(flood())
    lines = [r for r in caplog.records if "out of file descriptors" in r.getMessage()]
    assert len(lines) == 2, [r.getMessage() for r in caplog.records]
    assert sum(refused(r.getMessage()) for r in lines) == 500
    assert all(r.exc_info is None and r.levelno == logging.ERROR for r in lines)
    assert "7 connections open" in lines[-1].getMessage()
    assert [c["message"] for c in passed_on] == ["unrelated"]
