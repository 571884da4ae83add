"""Two ``hubbub serve`` processes sharing one real ``redis-server`` (and one data directory):
an SSE client on A sees a reply produced on B, and resumes on B with ``Last-Event-ID`` without
losing or repeating an event."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_support import Listener, LiveServer, running_pair, sse_frames
from redis_support import RedisServer


def redis_toml(url: str) -> str:
    return f"""\
[redis]
url = "{url}"
[events]
backend = "redis"
"""


@pytest.fixture
def pair(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Servers A and B on one Redis and one data directory, alice's key made."""
    with running_pair(tmp_path, redis_toml(redis_server.url)) as servers:
        yield servers


def frames_until(listener: Listener, event: str) -> list[dict[str, Any]]:
    """Every frame ``listener`` received once an ``event`` frame has arrived."""
    listener.wait_for(event)
    return list(listener.frames)


def reply_on(server: LiveServer, key: str, content: str) -> str:
    """Start a conversation on ``server`` and post ``content``; its id."""
    with server.client(key) as client:
        cid: str = client.post("/api/conversations", json={}).json()["id"]
        sent = client.post(f"/api/conversations/{cid}/messages", json={"content": content})
        assert sent.status_code == 202, sent.text
    return cid


def test_a_reply_on_b_streams_on_a_and_resumes_on_b(pair: tuple[LiveServer, LiveServer]) -> None:
    a, b = pair
    key = a.keys["alice"][1]
    with Listener(a, key, "/api/events") as on_a:
        cid = reply_on(b, key, "hello from the other process")
        seen = frames_until(on_a, "message.completed")
    types = [frame["event"] for frame in seen]
    assert types[0] == "conversation.updated"
    assert "message.delta" in types
    completed = json.loads(seen[types.index("message.completed")]["data"])
    assert completed["conversation_id"] == cid
    assert "hello from the other process" in completed["message"]["content"]
    ids = [frame["id"] for frame in seen]
    assert len(set(ids)) == len(ids)

    # The client lost its connection after the third event; it resumes on B.
    with (
        b.client(key, timeout=httpx.Timeout(30, read=60)) as client,
        client.stream("GET", "/api/events", headers={"Last-Event-ID": ids[2]}) as response,
    ):
        assert response.status_code == 200
        replayed: list[dict[str, Any]] = []
        for frame in sse_frames(response.iter_lines()):
            if frame["event"] is not None:
                replayed.append(frame)
            if len(replayed) == len(ids) - 3:
                break
    assert [f["id"] for f in replayed] == ids[3:]  # nothing lost, nothing repeated
    assert [f["data"] for f in replayed] == [f["data"] for f in seen[3:]]


def test_an_id_the_log_no_longer_has_gets_a_reset(pair: tuple[LiveServer, LiveServer]) -> None:
    a, b = pair
    key = a.keys["alice"][1]
    with (
        b.client(key, timeout=httpx.Timeout(30, read=60)) as client,
        client.stream("GET", "/api/events?last_event_id=99999999999999-0") as response,
    ):
        frame = next(f for f in sse_frames(response.iter_lines()) if f["event"] is not None)
    assert frame["event"] == "reset"
    data = json.loads(frame["data"])
    assert data["last_event_id"] == "99999999999999-0"
    assert "reload" in data["reason"]


def test_bobs_stream_on_a_never_sees_alices_reply_on_b(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    alice = a.keys["alice"][1]
    bob = a.create_key("bob")[1]
    with Listener(a, bob, "/api/events") as bobs, Listener(a, alice, "/api/events") as alices:
        reply_on(b, alice, "private")
        alices.wait_for("message.completed")
        time.sleep(0.5)
    assert bobs.frames == []
    # Resuming is checked the same way: bob resuming after alice's first event sees nothing.
    first = alices.frames[0]["id"]
    with (
        b.client(bob, timeout=httpx.Timeout(5, read=1.5)) as client,
        client.stream("GET", "/api/events", headers={"Last-Event-ID": first}) as response,
    ):
        frames: list[dict[str, Any]] = []
        try:
            for frame in sse_frames(response.iter_lines()):
                if frame["event"] is not None:
                    frames.append(frame)
        except httpx.ReadTimeout:
            pass
    assert frames == []


def test_a_stopping_process_ends_its_streams_with_where_to_resume(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    key = a.keys["alice"][1]
    with Listener(a, key, "/api/events") as on_a:
        reply_on(b, key, "before the stop")
        before = frames_until(on_a, "message.completed")
        a.signal()
        assert on_a.ended.wait(30), "the stream outlived its process"
    last = on_a.frames[-1]
    assert last["event"] == "shutdown"
    assert last["id"] == before[-1]["id"]  # the last event sent: nothing to replay yet
    assert json.loads(last["data"])["retry_after"] > 0
    assert a.wait() == 0
    # Events published while the client reconnects are replayed by the other process.
    cid = reply_on(b, key, "while reconnecting")
    with (
        b.client(key, timeout=httpx.Timeout(30, read=60)) as client,
        client.stream("GET", "/api/events", headers={"Last-Event-ID": last["id"]}) as response,
    ):
        replayed = []
        for frame in sse_frames(response.iter_lines()):
            if frame["event"] is not None:
                replayed.append(frame)
            if frame["event"] == "message.completed":
                break
    assert replayed[0]["event"] == "conversation.updated"
    assert json.loads(replayed[0]["data"])["conversation_id"] == cid


def test_a_revoked_key_ends_its_streams_on_every_process(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    revoked_id, revoked = a.keys["alice"]
    _, other = a.create_key("alice")
    with (
        Listener(a, revoked, "/api/events") as on_a,
        Listener(b, revoked, "/api/events") as on_b,
        Listener(b, other, "/api/events") as kept,
    ):
        cid = reply_on(b, other, "before the revocation")
        on_a.wait_for("message.completed")
        with Listener(a, revoked, f"/api/conversations/{cid}/events") as conversation:
            started = time.monotonic()
            done = a.hubbub("keys", "revoke", revoked_id)
            assert done.returncode == 0, done.stderr
            for stream in (on_a, on_b, conversation):
                assert stream.ended.wait(20), "a stream outlived its revoked key"
            took = time.monotonic() - started
        assert not kept.ended.is_set()  # alice's other key keeps its stream
    for stream in (on_a, on_b, conversation):
        last = stream.frames[-1]
        assert last["event"] == "session.revoked"
        assert json.loads(last["data"])["session_id"] == revoked_id
    assert took < 15  # generous: the watchers look every half second
    # And the key no longer opens anything.
    with a.client(revoked) as client:
        assert client.get("/api/events").status_code == 401


def test_streams_live_through_redis_going_away_and_coming_back(
    pair: tuple[LiveServer, LiveServer], redis_server: RedisServer
) -> None:
    a, b = pair
    key = a.keys["alice"][1]
    with Listener(a, key, "/api/events") as on_a, Listener(b, key, "/api/events") as on_b:
        redis_server.kill()
        # A reply produced on A still reaches A's stream while Redis is away...
        cid = reply_on(a, key, "while redis is away")
        on_a.wait_for("message.completed")
        with a.client(key) as client:
            health = client.get("/health/ready").json()
        assert health["components"]["event_log"]["status"] == "degraded"
        assert "Redis unreachable" in health["components"]["event_log"]["detail"]
        redis_server.start()
        # ...and B's, once Redis is back; then everything flows both ways again.
        done_on_b = on_b.wait_for("message.completed", timeout=30)
        assert done_on_b["conversation_id"] == cid
        reply_on(b, key, "after redis came back")
        on_a.wait_for("message.completed", count=2, timeout=30)
        assert on_a.ended.is_set() is False
    completed = [f for f in on_a.frames if f["event"] == "message.completed"]
    assert len(completed) == 2  # each once: nothing delivered twice on A
