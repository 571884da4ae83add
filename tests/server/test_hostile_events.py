"""Hostile clients of the event streams and of cancel, over real HTTP: ``Last-Event-ID`` values
that are not ids (or are other users' ids, or ids from the future), other users' conversations,
cancel storms and races, streams dropped by the hundred, a client that never reads, the
per-caller stream limit, and two server processes on a Redis that hangs (SIGSTOP) mid-reply."""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_support import (
    Listener,
    LiveServer,
    assert_problem,
    metric,
    running,
    running_pair,
    sse_frames,
)
from redis_support import RedisServer

from hubbub.events import parse_id

STREAMS_PER_CALLER = 16
TOML = f"""\
[plugins.offline_provider]
token_delay = 0.02
[server]
heartbeat_interval = 0.2
grace_period = 5
[events]
queue_size = 20
max_streams_per_caller = {STREAMS_PER_CALLER}
"""
LONG = " ".join(f"w{i}" for i in range(300))  # about 6 s of streaming at 0.02 s a word
ECHO = "[offline echo] You said: "


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("hostile")
    with running(root, TOML, keys=("alice", "bob", "carol", "dave")) as live:
        yield live


def key(server: LiveServer, user: str) -> str:
    return server.keys[user][1]


@pytest.fixture
def alice(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client(key(server, "alice")) as client:
        yield client


@pytest.fixture
def bob(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client(key(server, "bob")) as client:
        yield client


def conversation(client: httpx.Client) -> str:
    response = client.post("/api/conversations", json={})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def say(client: httpx.Client, cid: str, content: str) -> dict[str, Any]:
    """Post ``content`` and wait for the reply."""
    done = client.post(
        f"/api/conversations/{cid}/messages", json={"content": content, "wait": True}
    )
    assert done.status_code == 200, done.text
    return dict(done.json())


def stored(client: httpx.Client, cid: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/conversations/{cid}/messages")
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def settled(
    client: httpx.Client, cid: str, count: int, timeout: float = 60
) -> list[dict[str, Any]]:
    """The conversation's messages once it has ``count`` of them and its last is a reply."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = stored(client, cid)
        if len(items) >= count and items[-1]["role"] == "assistant":
            return items
        time.sleep(0.05)
    raise AssertionError(f"{cid} did not settle at {count} messages: {stored(client, cid)}")


def read_frames(
    server: LiveServer,
    user: str,
    path: str,
    *,
    headers: dict[str, Any] | list[tuple[Any, Any]] | None = None,
    params: dict[str, str] | None = None,
    until: str | None = None,
    seconds: float = 1.5,
) -> list[dict[str, Any]]:
    """The event frames of one stream: read until an ``until`` frame, or for ``seconds`` (the
    0.2 s heartbeat wakes the reader while the stream is idle)."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + (30 if until else seconds)
    with (
        server.client(key(server, user), timeout=httpx.Timeout(10, read=20)) as client,
        client.stream("GET", path, headers=headers, params=params) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for frame in sse_frames(response.iter_lines()):
            if frame["event"] is not None:
                frames.append(frame)
                if frame["event"] == until:
                    return frames
            if time.monotonic() > deadline:
                break
    assert until is None, f"no {until} frame: {frames}"
    return frames


def healthy(server: LiveServer) -> None:
    assert server.process is not None
    assert server.process.poll() is None, server.log()
    with server.client(timeout=10) as client:
        assert client.get("/health/ready").status_code == 200


def active_streams(server: LiveServer, user: str = "dave") -> float:
    with server.client(key(server, user)) as client:
        response = client.get("/metrics")
        assert response.status_code == 200, response.text
        return metric(response.text, "hubbub_active_streams")


def wait_no_streams(server: LiveServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if active_streams(server) == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"hubbub_active_streams still {active_streams(server)} after {timeout} s")


# -- hostile Last-Event-ID values -------------------------------------------------------------

NOT_IDS = [
    "99999999999999999999-0",  # past the 15-digit form (and past u64)
    "1-99999999999999999999",
    "999999999999999999999999999999999999999999999999",
    "-1-0",
    "-1",
    "1-",
    "-",
    "0x10-0",
    " 1-0 ",
    "1.5-0",
    "1-0-0",
    "null",
    "<script>alert(1)</script>",
    "x\nevent: evil\ndata: {}",  # a frame injection, were it echoed raw
    "\u2603-\u0661",  # a snowman and an Arabic-Indic digit one
    "\u0661\u0662\u0663-\u0660",  # digits, just not ASCII ones
    "9" * 200,  # the longest the query takes
]


@pytest.mark.parametrize("value", NOT_IDS, ids=range(len(NOT_IDS)))
@pytest.mark.parametrize("where", ["query", "events", "conversation"])
def test_a_value_that_is_no_id_gets_a_reset_and_nothing_else(
    server: LiveServer, alice: httpx.Client, value: str, where: str
) -> None:
    cid = conversation(alice)
    path = "/api/events" if where != "conversation" else f"/api/conversations/{cid}/events"
    if where == "query":
        frames = read_frames(server, "alice", path, params={"last_event_id": value}, until="reset")
    else:
        # sent as it is (UTF-8 bytes), but for what no header can hold (newlines, edge spaces)
        raw = value.replace("\n", " ").strip().encode()
        frames = read_frames(
            server, "alice", path, headers=[(b"Last-Event-ID", raw)], until="reset"
        )
    assert [frame["event"] for frame in frames] == ["reset"]  # nothing replayed before it
    reset = frames[0]
    assert parse_id(reset["id"]) is not None  # an id to resume from
    data = json.loads(reset["data"])
    assert data["type"] == "reset"
    if where == "query":
        assert data["last_event_id"] == value  # echoed only inside the JSON
    healthy(server)


def test_an_overlong_query_value_is_a_problem(alice: httpx.Client) -> None:
    for path in ("/api/events", f"/api/conversations/{conversation(alice)}/events"):
        response = alice.get(path, params={"last_event_id": "1" * 201})
        assert_problem(response, 422, field="last_event_id")


def test_an_overlong_header_is_a_problem_like_the_query(alice: httpx.Client) -> None:
    for path in ("/api/events", f"/api/conversations/{conversation(alice)}/events"):
        response = alice.get(path, headers={"Last-Event-ID": "7" * 8000})
        assert_problem(response, 422, field="Last-Event-ID")
        # 200 characters are still a resume (here: a reset, the id being no id).
        with alice.stream("GET", path, headers={"Last-Event-ID": "7" * 200}) as ok:
            assert ok.status_code == 200


def test_a_resume_from_zero_or_the_future_resets_then_streams_live(
    server: LiveServer, alice: httpx.Client
) -> None:
    cid = conversation(alice)
    say(alice, cid, "before")
    for value in (
        "0-0",
        "0-1",
        "999999999999999-999999999999999",
        f"{int(time.time() * 1000) + 10**9}-0",
    ):
        path = f"/api/conversations/{cid}/events"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            listening = pool.submit(
                read_frames,
                server,
                "alice",
                path,
                headers={"Last-Event-ID": value},
                until="message.completed",
            )
            time.sleep(0.5)  # subscribed
            sent = alice.post(
                f"/api/conversations/{cid}/messages", json={"content": f"after {value}"}
            )
            assert sent.status_code == 202, sent.text
            got = listening.result(40)
        types = [frame["event"] for frame in got]
        # "0-0" may replay what the log still has, or reset; a future id must reset.
        if value.startswith("0-"):
            assert types[0] in ("reset", "conversation.updated", "message.created"), types
        else:
            assert types[0] == "reset", types
        completed = json.loads(got[-1]["data"])
        assert completed["message"]["content"] == f"{ECHO}after {value}"  # live events flow
        ids = [parse_id(frame["id"]) or (-1, -1) for frame in got[1:]]
        assert (-1, -1) not in ids
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)


def test_another_users_event_ids_replay_nothing_of_theirs(
    server: LiveServer, alice: httpx.Client, bob: httpx.Client
) -> None:
    theirs = conversation(alice)
    alice_frames: list[dict[str, Any]] = []
    listener = threading.Thread(
        target=lambda: alice_frames.extend(
            read_frames(
                server, "alice", f"/api/conversations/{theirs}/events", until="message.completed"
            )
        ),
        daemon=True,
    )
    listener.start()
    time.sleep(0.5)
    assert (
        alice.post(f"/api/conversations/{theirs}/messages", json={"content": "secret"}).status_code
        == 202
    )
    listener.join(40)
    assert alice_frames, "alice saw her reply"
    alice_owner = json.loads(alice_frames[0]["data"])["owner"]
    mine = conversation(bob)
    say(bob, mine, "bob's own")
    for frame in alice_frames[:1]:
        for where in ("/api/events", f"/api/conversations/{mine}/events"):
            for how in ("header", "query"):
                kwargs: dict[str, Any] = (
                    {"headers": {"Last-Event-ID": frame["id"]}}
                    if how == "header"
                    else {"params": {"last_event_id": frame["id"]}}
                )
                frames = read_frames(server, "bob", where, seconds=1.5, **kwargs)
                text = json.dumps(frames)
                assert theirs not in text
                assert "secret" not in text
                owners = {json.loads(got["data"]).get("owner") for got in frames}
                assert alice_owner not in owners, frames
                replayed = [json.loads(f["data"]).get("conversation_id") for f in frames]
                assert mine in replayed  # bob's own later events are replayed
    # And bob's stream of alice's conversation is a 404, resume or not, reply running or not.
    read = assert_problem(bob.get(f"/api/conversations/{theirs}"), 404)
    assert (
        alice.post(f"/api/conversations/{theirs}/messages", json={"content": LONG}).status_code
        == 202
    )
    for kwargs in (
        {},
        {"headers": {"Last-Event-ID": alice_frames[0]["id"]}},
        {"params": {"last_event_id": "0-0"}},
    ):
        events = assert_problem(bob.get(f"/api/conversations/{theirs}/events", **kwargs), 404)
        assert (events["code"], events["detail"]) == (read["code"], read["detail"])
    assert alice.post(f"/api/conversations/{theirs}/cancel").status_code in (200, 202)
    settled(alice, theirs, 4)


def test_repeated_and_mixed_last_event_id_headers_do_not_break_the_stream(
    server: LiveServer, alice: httpx.Client
) -> None:
    cid = conversation(alice)
    first = read_frames(
        server,
        "alice",
        f"/api/conversations/{cid}/events",
        headers=[("Last-Event-ID", "garbage"), ("Last-Event-ID", "0-0"), ("last-event-id", "")],
        params={"last_event_id": "1-0"},
        until="reset",
    )
    assert first[0]["event"] == "reset"
    assert json.loads(first[0]["data"])["last_event_id"] == "garbage"  # the first header wins
    empty = read_frames(
        server,
        "alice",
        f"/api/conversations/{cid}/events",
        headers={"Last-Event-ID": ""},
        seconds=1,
    )
    assert empty == []  # an empty header is no resume: nothing, not a reset
    healthy(server)


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_of_what_is_not_yours_or_does_not_exist_is_the_same_404(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    cid = conversation(alice)
    read = assert_problem(bob.get(f"/api/conversations/{cid}"), 404)
    for target in (cid, "conv_nosuch", "x" * 4000, "%00", "..%2F..%2Fetc", "\u2603"):
        got = assert_problem(bob.post(f"/api/conversations/{target}/cancel"), 404)
        assert (got["code"], got["title"]) == (read["code"], read["title"])
        if target == cid:
            assert got["detail"] == read["detail"]


def test_a_cancel_storm_stops_one_reply_once(server: LiveServer, alice: httpx.Client) -> None:
    cid = conversation(alice)
    with Listener(server, key(server, "alice"), f"/api/conversations/{cid}/events") as events:
        assert (
            alice.post(f"/api/conversations/{cid}/messages", json={"content": LONG}).status_code
            == 202
        )
        events.wait_for("message.delta")

        def cancel(_: int) -> int:
            with server.client(key(server, "alice"), timeout=30) as client:
                return client.post(f"/api/conversations/{cid}/cancel").status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(cancel, range(100)))
        events.wait_for("status", state="idle")
    assert set(codes) <= {200, 202}, codes
    assert 202 in codes
    items = settled(alice, cid, 2)
    assert [m["role"] for m in items] == ["user", "assistant"]
    assert items[-1]["interrupted"] == "cancelled"
    assert len([t for t in events.types() if t == "message.completed"]) == 1
    again = say(alice, cid, "still here")
    assert again["reply"]["content"] == f"{ECHO}still here"
    assert "interrupted" not in again["reply"]
    healthy(server)


def test_a_new_reply_right_after_a_cancel_is_not_stopped_by_it(
    server: LiveServer, alice: httpx.Client
) -> None:
    cid = conversation(alice)
    assert (
        alice.post(f"/api/conversations/{cid}/messages", json={"content": LONG}).status_code == 202
    )
    time.sleep(0.5)
    assert alice.post(f"/api/conversations/{cid}/cancel").status_code == 202
    words = " ".join(["next"] * 60)  # about 1 s of streaming
    deadline = time.monotonic() + 30
    while True:  # the old reply may still be stopping: 409 until it has
        sent = alice.post(f"/api/conversations/{cid}/messages", json={"content": words})
        if sent.status_code == 202 or time.monotonic() > deadline:
            break
        assert sent.status_code == 409, sent.text
        time.sleep(0.01)
    assert sent.status_code == 202, sent.text
    items = settled(alice, cid, 4)
    assert items[1]["interrupted"] == "cancelled"
    assert items[3].get("interrupted") is None
    assert items[3]["content"] == f"{ECHO}{words}"


def test_cancel_while_the_conversation_is_deleted(server: LiveServer, alice: httpx.Client) -> None:
    for _ in range(5):
        cid = conversation(alice)
        assert (
            alice.post(f"/api/conversations/{cid}/messages", json={"content": LONG}).status_code
            == 202
        )
        time.sleep(0.3)
        barrier = threading.Barrier(2)

        def act(method: str, path: str, barrier: threading.Barrier = barrier) -> int:
            with server.client(key(server, "alice"), timeout=30) as client:
                barrier.wait(10)
                return client.request(method, path).status_code

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            deleting = pool.submit(act, "DELETE", f"/api/conversations/{cid}")
            cancelling = pool.submit(act, "POST", f"/api/conversations/{cid}/cancel")
            assert deleting.result(40) == 204
            assert cancelling.result(40) in (200, 202, 404)
        assert_problem(alice.get(f"/api/conversations/{cid}"), 404)
        assert_problem(alice.post(f"/api/conversations/{cid}/cancel"), 404)
    healthy(server)
    assert "Traceback" not in server.log()


# -- streams ------------------------------------------------------------------------------------


def _open_raw(
    server: LiveServer, user: str, path: str, *, rcvbuf: int | None = None
) -> socket.socket:
    """A raw connection whose GET of ``path`` got its response headers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {key(server, user)}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
    )
    return sock


def _read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return head


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_five_hundred_dropped_streams_give_every_place_back(
    server: LiveServer, alice: httpx.Client
) -> None:
    with server.client(key(server, "carol")) as carol:
        cid = conversation(carol)
    paths = ["/api/events", f"/api/conversations/{cid}/events"]
    refused = 0

    def drop(n: int) -> bytes:
        sock = _open_raw(server, "carol", paths[n % 2])
        try:
            return _read_head(sock)
        finally:
            _reset(sock)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        heads = list(pool.map(drop, range(500)))
    statuses = [head.split(b" ", 2)[1] for head in heads]
    refused = statuses.count(b"429")  # a place not yet given back by a stream just dropped
    assert set(statuses) <= {b"200", b"429"}, set(statuses)
    assert statuses.count(b"200") >= 250, refused
    wait_no_streams(server)
    # every place is back: the caller can open its whole allowance again
    socks = [_open_raw(server, "carol", "/api/events") for _ in range(STREAMS_PER_CALLER)]
    try:
        assert all(_read_head(sock).startswith(b"HTTP/1.1 200") for sock in socks)
    finally:
        for sock in socks:
            _reset(sock)
    wait_no_streams(server)
    healthy(server)


def test_streams_past_the_callers_limit_are_429_and_places_come_back(
    server: LiveServer,
) -> None:
    socks = [_open_raw(server, "carol", "/api/events") for _ in range(STREAMS_PER_CALLER)]
    try:
        assert all(_read_head(sock).startswith(b"HTTP/1.1 200") for sock in socks)
        with server.client(key(server, "carol")) as client:
            for path in ("/api/events", "/api/events?last_event_id=0-0"):
                problem = assert_problem(client.get(path), 429)
                assert problem["code"] == "too_many_requests"
        with (  # another caller is not affected
            server.client(key(server, "bob")) as other,
            other.stream("GET", "/api/events") as response,
        ):
            assert response.status_code == 200
        _reset(socks.pop())
        deadline = time.monotonic() + 30
        while True:
            with (
                server.client(key(server, "carol")) as client,
                client.stream("GET", "/api/events") as response,
            ):
                if response.status_code == 200:
                    break
                assert response.status_code == 429
            assert time.monotonic() < deadline, "the dropped stream's place never came back"
            time.sleep(0.1)
    finally:
        for sock in socks:
            _reset(sock)
    wait_no_streams(server)


FAST = """\
[plugins.offline_provider]
token_delay = 0.0005
[server]
heartbeat_interval = 0.2
[events]
queue_size = 20
"""


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose replies stream fast: enough bytes to fill every buffer on the way to a
    client that does not read."""
    with running(tmp_path_factory.mktemp("fast"), FAST, keys=("alice", "dave")) as live:
        yield live


def _reader_stalled_behind_a_long_reply(server: LiveServer) -> socket.socket:
    """A stream whose client never reads, while replies with far more events than its queue and
    more bytes than the socket buffers (~40 replies of ~150 KB of frames each) are written;
    returns once they are all stored whole (the reader must hold nothing up)."""
    with server.client(key(server, "alice"), timeout=60) as alice:
        cid = conversation(alice)
        sock = _open_raw(server, "alice", f"/api/conversations/{cid}/events", rcvbuf=4096)
        assert _read_head(sock).startswith(b"HTTP/1.1 200")
        time.sleep(0.3)
        for n in range(40):
            words = " ".join(f"r{n}w{i}" for i in range(6000))
            assert say(alice, cid, words)["reply"]["content"] == f"{ECHO}{words}"
        items = stored(alice, cid)
    assert len(items) == 80
    assert all(item.get("interrupted") is None for item in items)
    return sock


def test_a_reader_that_stops_reading_is_disconnected_and_resumes_from_what_it_got(
    fast: LiveServer,
) -> None:
    sock = _reader_stalled_behind_a_long_reply(fast)
    try:
        sock.settimeout(10)
        received = bytearray()
        with contextlib.suppress(TimeoutError, ConnectionError):
            while chunk := sock.recv(1 << 20):
                received += chunk
    finally:
        _reset(sock)
    # Cut by the server (no final chunk: nothing more could reach it), before the end.
    assert not received.endswith(b"\r\n0\r\n\r\n")
    assert received.count(b"event: message.completed") < 40
    ids = re.findall(rb"\nid: (\d+-\d+)\r?\n", bytes(received))
    assert ids, bytes(received[:300])
    # Reconnecting from the last id it got replays what followed (a reset if it is too old).
    frames = read_frames(fast, "alice", "/api/events", headers={"Last-Event-ID": ids[-1].decode()})
    assert frames  # what followed (or, past the retention, a reset first)
    assert all(frame["id"] != ids[-1].decode() for frame in frames)  # nothing it had twice
    wait_no_streams(fast)
    healthy(fast)


def test_a_reader_that_never_reads_is_cut_by_the_server(fast: LiveServer) -> None:
    sock = _reader_stalled_behind_a_long_reply(fast)
    try:
        deadline = time.monotonic() + 20
        while active_streams(fast) > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert active_streams(fast) == 0
    finally:
        _reset(sock)
        wait_no_streams(fast)


# -- two processes on a Redis that hangs --------------------------------------------------------


class TimedListener(Listener):
    """A :class:`Listener` that notes when each frame arrived (monotonic seconds)."""

    def __init__(self, server: LiveServer, key: str, path: str) -> None:
        super().__init__(server, key, path)
        self.arrivals: list[float] = []

    def __enter__(self) -> TimedListener:
        super().__enter__()
        return self

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self._path) as response:
                assert response.status_code == 200, response.read()
                self.opened.set()
                for frame in sse_frames(response.iter_lines()):
                    if frame["event"] is not None:
                        self.arrivals.append(time.monotonic())
                        self.frames.append(frame)
                    if self.stopping.is_set():
                        return
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()
            self.ended.set()


@pytest.fixture
def pair(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[LiveServer, LiveServer]]:
    toml = (
        f'[redis]\nurl = "{redis_server.url}"\n[events]\nbackend = "redis"\n'
        '[cache]\nbackend = "redis"\n'
        "[plugins.offline_provider]\ntoken_delay = 0.02\n[server]\nheartbeat_interval = 0.2\n"
    )
    with running_pair(tmp_path, toml) as servers:
        yield servers


def test_a_hung_redis_stalls_local_streams_briefly_and_everything_recovers(
    pair: tuple[LiveServer, LiveServer], redis_server: RedisServer
) -> None:
    a, b = pair
    alice_key = a.keys["alice"][1]
    assert redis_server.process is not None
    pid = redis_server.process.pid
    words = " ".join(f"w{i}" for i in range(750))  # about 15 s of streaming
    with a.client(alice_key, timeout=30) as client:
        cid = conversation(client)
    with TimedListener(a, alice_key, f"/api/conversations/{cid}/events") as events:
        with a.client(alice_key, timeout=30) as client:
            assert (
                client.post(
                    f"/api/conversations/{cid}/messages", json={"content": words}
                ).status_code
                == 202
            )
        events.wait_for("message.delta", count=20)
        stopped_at = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(1)
            with a.client(timeout=30) as client:
                asked = time.monotonic()
                ready = client.get("/health/ready")
                ready_took = time.monotonic() - asked
            assert ready.status_code in (200, 503), ready.text
            time.sleep(7)
            during = [t for t in events.arrivals if t > stopped_at]
        finally:
            os.kill(pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        completed = events.wait_for("message.completed", timeout=90)
        arrivals = list(events.arrivals)
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    stall = max(gaps)
    print(  # the figure for the report  # noqa: T201
        f"hung Redis: longest gap {stall:.2f} s, {len(during)} frames while stopped, "
        f"/health/ready {ready.status_code} in {ready_took:.2f} s; "
        f"reply interrupted={completed['message'].get('interrupted')}; "
        f"tracebacks A={a.log().count('Traceback')} B={b.log().count('Traceback')}"
    )
    assert ready_took < 15
    assert during, "no frame reached the local stream while Redis hung"
    assert stall < 20
    message = completed["message"]
    assert message["content"] == f"{ECHO}{words}" or message.get("interrupted"), message
    # after SIGCONT, both processes work together again
    deadline = resumed_at + 60
    for server in (a, b):
        while True:
            with server.client(timeout=10) as client:
                if client.get("/health/ready").json().get("status") == "ok":
                    break
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
    with TimedListener(a, alice_key, "/api/events") as on_a:
        with b.client(alice_key, timeout=30) as client:
            other = conversation(client)
            say(client, other, "after the hang")
        on_a.wait_for("message.completed", conversation_id=other, timeout=30)
