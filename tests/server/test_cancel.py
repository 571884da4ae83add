"""``POST /api/conversations/{id}/cancel`` over real HTTP, and replies stopped early keeping their
text: cancelled on the same server or on another one sharing Redis, left by a ``"wait": true``
client, refused for anyone but the owner."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_support import Listener, LiveServer, assert_problem, running, running_pair
from redis_support import RedisServer

SLOW = """\
[plugins.offline_provider]
token_delay = 0.02
[server]
heartbeat_interval = 0.2
"""
LONG = " ".join(f"w{i}" for i in range(300))  # about 6 s of streaming at 0.02 s a word
FULL = f"[offline echo] You said: {LONG}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running(tmp_path_factory.mktemp("cancel"), SLOW, keys=("alice", "bob")) as live:
        yield live


@pytest.fixture
def alice(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client(server.keys["alice"][1]) as client:
        yield client


@pytest.fixture
def bob(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client(server.keys["bob"][1]) as client:
        yield client


@pytest.fixture
def anon(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def conversation(client: httpx.Client) -> str:
    response = client.post("/api/conversations", json={})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def stored(client: httpx.Client, cid: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/conversations/{cid}/messages")
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def last_assistant(client: httpx.Client, cid: str, timeout: float = 30) -> dict[str, Any]:
    """The conversation's stored reply, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = stored(client, cid)
        if items and items[-1]["role"] == "assistant":
            return items[-1]
        time.sleep(0.05)
    raise AssertionError(f"no reply stored within {timeout} s")


def test_cancel_stops_the_running_reply_and_keeps_its_text(
    server: LiveServer, alice: httpx.Client
) -> None:
    cid = conversation(alice)
    with Listener(server, server.keys["alice"][1], f"/api/conversations/{cid}/events") as events:
        sent = alice.post(f"/api/conversations/{cid}/messages", json={"content": LONG})
        assert sent.status_code == 202, sent.text
        events.wait_for("message.delta")  # the reply is streaming
        cancelled = alice.post(f"/api/conversations/{cid}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json() == {"reply_running": True}
        completed = events.wait_for("message.completed")
        events.wait_for("status", state="idle")
        types = events.types()
    message = completed["message"]
    assert message["interrupted"] == "cancelled"
    assert message["content"]
    assert FULL.startswith(message["content"])
    assert len(message["content"]) < len(FULL)
    assert "reply.cancel" in types
    tail = [t for t in types if t not in ("message.delta", "usage", "reply.cancel")]
    assert tail[-3:] == ["message.completed", "typing", "status"]
    assert "error" not in types  # a cancel is not a failure
    kept = stored(alice, cid)[-1]
    assert kept == message
    # the conversation is free again at once
    again = alice.post(f"/api/conversations/{cid}/messages", json={"content": "hi", "wait": True})
    assert again.status_code == 200, again.text
    assert again.json()["reply"]["content"] == "[offline echo] You said: hi"
    assert "interrupted" not in again.json()["reply"]


def test_cancel_when_nothing_runs_says_so(alice: httpx.Client) -> None:
    cid = conversation(alice)
    nothing = alice.post(f"/api/conversations/{cid}/cancel")
    assert nothing.status_code == 200, nothing.text
    assert nothing.json() == {"reply_running": False}
    done = alice.post(f"/api/conversations/{cid}/messages", json={"content": "hi", "wait": True})
    assert done.status_code == 200
    after = alice.post(f"/api/conversations/{cid}/cancel")
    assert after.json() == {"reply_running": False}
    assert [m.get("interrupted") for m in stored(alice, cid)] == [None, None]


def test_cancelling_someone_elses_conversation_is_404_like_reading_it(
    server: LiveServer, alice: httpx.Client, bob: httpx.Client, anon: httpx.Client
) -> None:
    cid = conversation(alice)
    words = " ".join(["word"] * 40)  # about 1 s of streaming
    sent = alice.post(f"/api/conversations/{cid}/messages", json={"content": words})
    assert sent.status_code == 202
    read = assert_problem(bob.get(f"/api/conversations/{cid}"), 404)
    cancel = assert_problem(bob.post(f"/api/conversations/{cid}/cancel"), 404)
    assert (cancel["code"], cancel["detail"]) == (read["code"], read["detail"])
    assert_problem(bob.post("/api/conversations/conv_nosuch/cancel"), 404)
    assert_problem(anon.post(f"/api/conversations/{cid}/cancel"), 401)
    # bob stopped nothing: alice's reply ends whole
    reply = last_assistant(alice, cid)
    assert reply.get("interrupted") is None
    assert reply["content"] == f"[offline echo] You said: {words}"


def test_a_waiting_client_that_leaves_stops_its_reply_as_disconnected(
    server: LiveServer, alice: httpx.Client
) -> None:
    cid = conversation(alice)
    key = server.keys["alice"][1]
    body = json.dumps({"content": LONG, "wait": True}).encode()
    head = (
        f"POST /api/conversations/{cid}/messages HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with Listener(server, key, f"/api/conversations/{cid}/events") as events:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(head + body)
            events.wait_for("message.delta")  # the reply is streaming
        # the client has gone: the reply stops and keeps its text
        completed = events.wait_for("message.completed")
    assert completed["message"]["interrupted"] == "disconnected"
    assert FULL.startswith(completed["message"]["content"])
    assert len(completed["message"]["content"]) < len(FULL)
    kept = last_assistant(alice, cid)
    assert kept["interrupted"] == "disconnected"
    assert "Traceback" not in server.log()


def test_the_cancel_route_is_documented(anon: httpx.Client) -> None:
    schema = anon.get("/schema/openapi.json").json()
    operation = schema["paths"]["/api/conversations/{conversation_id}/cancel"]["post"]
    assert operation["summary"] == "Stop the reply being written"
    assert {"200", "202", "404"} <= set(operation["responses"])


# -- two servers sharing Redis ------------------------------------------------------------------


@pytest.fixture
def pair(tmp_path: Path, redis_server: RedisServer) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Servers A and B on one Redis (events and cache) and one data directory."""
    toml = (
        f'[redis]\nurl = "{redis_server.url}"\n[events]\nbackend = "redis"\n'
        f'[cache]\nbackend = "redis"\n' + SLOW
    )
    with running_pair(tmp_path, toml) as servers:
        yield servers


def test_a_reply_on_one_server_is_refused_and_cancelled_on_the_other(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    key = a.keys["alice"][1]
    with a.client(key) as on_a, b.client(key) as on_b:
        cid = conversation(on_a)
        with Listener(a, key, f"/api/conversations/{cid}/events") as events:
            sent = on_a.post(f"/api/conversations/{cid}/messages", json={"content": LONG})
            assert sent.status_code == 202, sent.text
            events.wait_for("message.delta")
            # one reply at a time, across the two processes
            busy = on_b.post(f"/api/conversations/{cid}/messages", json={"content": "me too"})
            assert_problem(busy, 409)
            cancelled = on_b.post(f"/api/conversations/{cid}/cancel")
            assert cancelled.status_code == 202, cancelled.text
            assert cancelled.json() == {"reply_running": True}
            completed = events.wait_for("message.completed")
            request = events.wait_for("reply.cancel")
        assert request["reply_id"].startswith("reply_")  # B named A's reply, read from its lease
        assert completed["message"]["interrupted"] == "cancelled"
        assert FULL.startswith(completed["message"]["content"])
        assert len(completed["message"]["content"]) < len(FULL)
        kept = last_assistant(on_b, cid)
        assert kept["interrupted"] == "cancelled"
        assert "me too" not in [m["content"] for m in stored(on_b, cid)]
        # freed on both: B replies now
        again = on_b.post(
            f"/api/conversations/{cid}/messages", json={"content": "now", "wait": True}
        )
        assert again.status_code == 200, again.text


# -- joining a reply in progress ------------------------------------------------------------


def joined_late(server: LiveServer, key: str, cid: str) -> tuple[list[str], dict[str, Any]]:
    """Open ``cid``'s stream (no Last-Event-ID) while its reply runs; the event types it got
    and the completed reply."""
    with Listener(server, key, f"/api/conversations/{cid}/events") as late:
        completed = late.wait_for("message.completed")
        frames = list(late.frames)
    deltas = "".join(
        json.loads(f["data"])["delta"] for f in frames if f["event"] == "message.delta"
    )
    assert deltas == completed["message"]["content"]  # caught up: nothing missing
    ids = [f["id"] for f in frames]
    assert len(set(ids)) == len(ids)  # nothing twice
    return [f["event"] for f in frames], completed


def test_a_stream_that_joins_a_reply_late_catches_up(
    server: LiveServer, alice: httpx.Client
) -> None:
    cid = conversation(alice)
    with Listener(server, server.keys["alice"][1], f"/api/conversations/{cid}/events") as early:
        sent = alice.post(f"/api/conversations/{cid}/messages", json={"content": LONG})
        assert sent.status_code == 202, sent.text
        early.wait_for("message.delta", count=20)  # well under way
        types, completed = joined_late(server, server.keys["alice"][1], cid)
    assert types[0] == "message.created"  # from the user's message on
    assert completed["message"]["content"] == FULL
    # A stream opened when nothing runs replays nothing.
    with Listener(server, server.keys["alice"][1], f"/api/conversations/{cid}/events") as idle:
        time.sleep(0.5)
    assert idle.frames == []


def test_a_stream_on_another_process_joins_a_reply_late(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    key = a.keys["alice"][1]
    with a.client(key) as on_a:
        cid = conversation(on_a)
        with Listener(a, key, f"/api/conversations/{cid}/events") as early:
            sent = on_a.post(f"/api/conversations/{cid}/messages", json={"content": LONG})
            assert sent.status_code == 202, sent.text
            early.wait_for("message.delta", count=20)
            types, completed = joined_late(b, key, cid)
    assert types[0] == "message.created"
    assert completed["message"]["content"] == FULL


def test_a_conversation_stream_opens_while_the_cache_is_unreachable(
    pair: tuple[LiveServer, LiveServer], redis_server: RedisServer
) -> None:
    a, _ = pair
    key = a.keys["alice"][1]
    with a.client(key) as on_a:
        cid = conversation(on_a)
    redis_server.kill()  # the cache (and the event log) on Redis are gone
    started = time.monotonic()
    with Listener(a, key, f"/api/conversations/{cid}/events") as stream:
        assert stream.opened.is_set()
        assert not stream.ended.is_set()  # open: it just does not catch up with anything
    assert time.monotonic() - started < 15  # not held up for long by the dead cache
    assert "cannot tell whether a reply runs" in a.log()
