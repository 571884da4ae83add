"""Hostile clients of long-term memory, conversation expiry and ``[quotas]``, over real HTTP:
quotas raced by concurrent requests, expiry times that are not times, another user's busy
conversation, bodies that are not JSON or not UTF-8, and cursors and ids of other users."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from live_support import LiveServer, assert_problem, running
from support import keyring_toml

from hubbub.models import MemoryItem, stored_size

MAX_CONVERSATIONS = 4
MAX_STORED_BYTES = 20_000
TOML = f"""\
[plugins.offline_provider]
token_delay = 0.05
[quotas]
max_message_bytes = 4000
max_stored_bytes = {MAX_STORED_BYTES}
max_conversations = {MAX_CONVERSATIONS}
conversations_per_minute = 0
"""
USERS = ("alice", "bob", "racer", "hoarder", "writer", "timer", "probe")
SLOW = " ".join(f"w{i}" for i in range(100))  # about 5 s of streaming at 0.05 s a word


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running(tmp_path_factory.mktemp("hostile-memory"), TOML, keys=USERS) as live:
        yield live


def client(server: LiveServer, user: str) -> httpx.Client:
    return server.client(server.keys[user][1])


async def _burst(
    server: LiveServer, user: str, path: str, bodies: list[dict[str, object]]
) -> list[httpx.Response]:
    """POST every body at once (one connection each), as a client racing a quota would."""
    headers = {"Authorization": f"Bearer {server.keys[user][1]}"}
    async with httpx.AsyncClient(
        base_url=server.url,
        headers=headers,
        trust_env=False,
        timeout=60,
        limits=httpx.Limits(max_connections=len(bodies)),
    ) as racing:
        return list(await asyncio.gather(*(racing.post(path, json=body) for body in bodies)))


def burst(
    server: LiveServer, user: str, path: str, bodies: list[dict[str, object]]
) -> list[httpx.Response]:
    return asyncio.run(_burst(server, user, path, bodies))


# -- quotas raced by concurrent requests ----------------------------------------------------------


def test_concurrent_creations_stop_at_max_conversations(server: LiveServer) -> None:
    """30 creations sent at once by a user allowed 4 conversations: 4 are created, the others
    are refused with the quota's problem document, and 4 are stored."""
    responses = burst(server, "racer", "/api/conversations", [{}] * 30)
    created = [r for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    for response in refused:
        body = assert_problem(response, 429)
        assert (body["code"], body["quota"]) == ("quota_exceeded", "conversations"), body
    with client(server, "racer") as racer:
        stored = racer.get("/api/conversations", params={"limit": 200}).json()["items"]
    assert len(stored) == len(created) == MAX_CONVERSATIONS


def test_concurrent_memories_stop_at_the_stored_bytes_quota(server: LiveServer) -> None:
    """Memories of about 4 KB sent 30 at once by a user with a 20,000-byte quota: what is
    stored stays within the quota (the rest refused with 429 ``stored_bytes``)."""
    responses = burst(server, "hoarder", "/api/memory", [{"content": "m" * 3900}] * 30)
    for response in responses:
        if response.status_code != 201:
            body = assert_problem(response, 429)
            assert body["quota"] == "stored_bytes", body
    with client(server, "hoarder") as hoarder:
        listed = hoarder.get("/api/memory", params={"limit": 200}).json()["items"]
    kept = sum(stored_size(msgspec.convert(item, MemoryItem)) for item in listed)
    assert listed
    assert kept <= MAX_STORED_BYTES, f"{len(listed)} memories take {kept} bytes"
    assert len(listed) == sum(r.status_code == 201 for r in responses)


def test_concurrent_messages_to_several_conversations_stop_at_the_stored_bytes_quota(
    server: LiveServer,
) -> None:
    """A user with about 8,800 of 20,000 bytes used sends a 3,900-byte message to each of four
    conversations at once: two fit, at most; the others are refused with 429 and not stored."""
    with client(server, "writer") as writer:
        for _ in range(2):
            assert writer.post("/api/memory", json={"content": "f" * 3900}).status_code == 201
        conversations = [writer.post("/api/conversations", json={}).json()["id"] for _ in range(4)]

    async def send_all() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {server.keys['writer'][1]}"}
        async with httpx.AsyncClient(
            base_url=server.url, headers=headers, trust_env=False, timeout=60
        ) as racing:
            return list(
                await asyncio.gather(
                    *(
                        racing.post(
                            f"/api/conversations/{conversation}/messages",
                            json={"content": f"{n} " + "w" * 3898},
                        )
                        for n, conversation in enumerate(conversations)
                    )
                )
            )

    responses = asyncio.run(send_all())
    accepted = [r for r in responses if r.status_code == 202]
    for response in responses:
        if response.status_code != 202:
            assert assert_problem(response, 429)["quota"] == "stored_bytes"
    assert 1 <= len(accepted) <= 2, [r.status_code for r in responses]
    with client(server, "writer") as writer:
        stored = [
            m
            for conversation in conversations
            for m in writer.get(f"/api/conversations/{conversation}/messages").json()["items"]
            if m["role"] == "user"
        ]
    assert len(stored) == len(accepted)


# -- another user's conversation ---------------------------------------------------------------


def test_a_busy_conversation_of_another_user_is_not_found_not_a_conflict(
    server: LiveServer,
) -> None:
    """While bob's reply is being written, alice posting to his conversation gets the 404 any
    conversation of another user gets, not a 409 that says it exists and is busy."""
    with client(server, "bob") as bob, client(server, "alice") as alice:
        conversation = bob.post("/api/conversations", json={}).json()["id"]
        path = f"/api/conversations/{conversation}/messages"
        assert bob.post(path, json={"content": SLOW}).status_code == 202
        try:
            busy = bob.post(path, json={"content": "again"})
            assert_problem(busy, 409)  # bob's reply runs: his second message is a conflict
            answer = alice.post(path, json={"content": "who is there?"})
            body = assert_problem(answer, 404)
            assert body["code"] == "not_found"
            assert conversation in body["detail"]
        finally:
            bob.post(f"/api/conversations/{conversation}/cancel")
        contents = [m.get("content") for m in bob.get(path).json()["items"]]
        assert "who is there?" not in contents


# -- expiry times ------------------------------------------------------------------------------

NOT_TIMES: list[object] = ["inf", "Infinity", "1e301", 1e301, 1.7e308]
"""``expires_at`` values that are no time: infinity (a string the lenient decoder turns into
``inf``, then encoded back as ``null``) and numbers past any calendar."""


@pytest.mark.parametrize("value", NOT_TIMES, ids=[repr(v) for v in NOT_TIMES])
def test_an_expiry_that_is_not_a_time_is_refused(server: LiveServer, value: object) -> None:
    with client(server, "timer") as timer:
        before_memories = timer.get("/api/memory").json()["items"]
        before = timer.get("/api/conversations").json()["items"]
        memory = timer.post("/api/memory", json={"content": "x", "expires_at": value})
        assert_problem(memory, 422, field="expires_at")
        made = timer.post("/api/conversations", json={"expires_at": value})
        assert_problem(made, 422, field="expires_at")
        assert timer.get("/api/memory").json()["items"] == before_memories
        assert timer.get("/api/conversations").json()["items"] == before
        if len(before) >= MAX_CONVERSATIONS:
            timer.delete(f"/api/conversations/{before[-1]['id']}")
        conversation = timer.post("/api/conversations", json={}).json()
        patched = timer.patch(
            f"/api/conversations/{conversation['id']}", json={"expires_at": value}
        )
        assert_problem(patched, 422, field="expires_at")
        after = timer.get(f"/api/conversations/{conversation['id']}").json()
        assert "expires_at" not in after
        timer.delete(f"/api/conversations/{conversation['id']}")


def test_a_far_but_real_expiry_is_kept_exactly(server: LiveServer) -> None:
    """A time in a far year (but a calendar's) is a valid expiry, echoed and read back as is."""
    far = 253_402_300_000.0  # in the year 9999
    with client(server, "timer") as timer:
        memory = timer.post("/api/memory", json={"content": "far", "expires_at": far})
        assert memory.status_code == 201, memory.text
        assert memory.json()["expires_at"] == far
        listed = timer.get("/api/memory").json()["items"]
        assert any(item["expires_at"] == far for item in listed)
        timer.delete(f"/api/memory/{memory.json()['id']}")


# -- what held: bodies, ids and cursors ---------------------------------------------------------

MALFORMED = [
    b'{"content": "\\ud800"}',  # a lone surrogate
    b'{"content": "\xff\xfe"}',  # not UTF-8
    b'{"content": "x", "expires_at": NaN}',
    b'{"content": "x", "expires_at": 1e400}',
    b'{"content": "x", "metadata": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
]


def test_malformed_bodies_are_400_and_store_nothing(server: LiveServer) -> None:
    with client(server, "probe") as probe:
        before = probe.get("/api/memory").json()["items"]
        for body in MALFORMED:
            response = probe.post(
                "/api/memory", content=body, headers={"content-type": "application/json"}
            )
            problem = assert_problem(response, 400)
            assert problem["code"] == "malformed_json", (body[:40], problem)
        assert probe.get("/api/memory").json()["items"] == before


def test_nul_and_odd_ids_are_stored_or_not_found_never_an_error(server: LiveServer) -> None:
    with client(server, "probe") as probe:
        added = probe.post("/api/memory", json={"content": "a\x00b", "metadata": {"k\x00": "\x00"}})
        assert added.status_code == 201, added.text
        assert added.json()["content"] == "a\x00b"
        listed = probe.get("/api/memory").json()["items"]
        assert listed[0]["metadata"] == {"k\x00": "\x00"}
        for odd in ("mem_%00x", "a%0d%0ab", "c" * 6000, "mem_" + "%E2%80%AE" * 10):
            assert_problem(probe.delete(f"/api/memory/{odd}"), 404)
            assert_problem(probe.get(f"/api/conversations/{odd}"), 404)
        refused = probe.post(
            "/api/memory", json={"content": "x", "source_conversation_id": "conv_\x00"}
        )
        assert_problem(refused, 404)
        probe.delete(f"/api/memory/{added.json()['id']}")


def test_another_users_cursor_and_ids_reach_nothing_of_theirs(server: LiveServer) -> None:
    with client(server, "alice") as alice, client(server, "bob") as bob:
        theirs = [bob.post("/api/memory", json={"content": f"bob's {i}"}).json() for i in range(3)]
        cursor = bob.get("/api/memory", params={"limit": 1}).json()["next_cursor"]
        assert cursor
        page = alice.get("/api/memory", params={"cursor": cursor})
        assert page.status_code in (200, 422), page.text
        if page.status_code == 200:
            assert all(item["owner"] == "alice" for item in page.json()["items"])
        for item in theirs:
            assert_problem(alice.delete(f"/api/memory/{item['id']}"), 404)
        alice.delete("/api/memory")
        still = [item["id"] for item in bob.get("/api/memory").json()["items"]]
        assert all(item["id"] in still for item in theirs)
        bob.delete("/api/memory")


def test_expired_memories_are_neither_listed_nor_shown(server: LiveServer) -> None:
    """A memory past its expiry is gone for its owner before the sweeper deletes it."""
    with client(server, "probe") as probe:
        soon = time.time() + 1.0
        added = probe.post("/api/memory", json={"content": "brief", "expires_at": soon})
        assert added.status_code == 201, added.text
        time.sleep(max(0.0, soon - time.time()) + 0.2)
        listed = [item["id"] for item in probe.get("/api/memory").json()["items"]]
        assert added.json()["id"] not in listed


# -- the same on the shared stores -------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres", "redis"])
def test_the_shared_stores_hold_the_same_line(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """On PostgreSQL and on Redis: creations raced past ``max_conversations`` stop at it, an
    expiry that is no time is a 422, NUL characters are stored as sent, and ids with NUL,
    control characters or thousands of characters are simply not found."""
    if backend == "postgres":
        url = request.getfixturevalue("postgres_session").create_database()
        extra = f'[memory]\nbackend = "postgres"\n[plugins.postgres_store]\nurl = "{url}"\n'
    else:
        url = request.getfixturevalue("redis_server").url
        extra = f'[redis]\nurl = "{url}"\n[memory]\nbackend = "redis"\n'
    extra += keyring_toml(tmp_path)  # servers sharing an account store share a keyring
    with running(tmp_path / backend, TOML + extra, keys=("racer", "probe")) as live:
        responses = burst(live, "racer", "/api/conversations", [{}] * 20)
        assert sum(r.status_code == 201 for r in responses) == MAX_CONVERSATIONS
        with client(live, "probe") as probe:
            for value in ("inf", 1e301):
                memory = probe.post("/api/memory", json={"content": "x", "expires_at": value})
                assert_problem(memory, 422, field="expires_at")
                made = probe.post("/api/conversations", json={"expires_at": value})
                assert_problem(made, 422, field="expires_at")
            added = probe.post("/api/memory", json={"content": "a\x00b", "metadata": {"\x00": 1}})
            assert added.status_code == 201, added.text
            assert probe.get("/api/memory").json()["items"] == [added.json()]
            conversation = probe.post("/api/conversations", json={"title": "t\x00"}).json()
            sent = probe.post(
                f"/api/conversations/{conversation['id']}/messages",
                json={"content": "hi\x00there"},
            )
            assert sent.status_code == 202, sent.text
            for odd in ("conv_%00x", "a%0d%0a:b", "c" * 6000):
                assert_problem(probe.get(f"/api/conversations/{odd}"), 404)
                assert_problem(probe.delete(f"/api/memory/{odd}"), 404)
                assert_problem(
                    probe.post(f"/api/conversations/{odd}/messages", json={"content": "x"}), 404
                )
            assert probe.get("/health/ready").status_code == 200
