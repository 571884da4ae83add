"""``/api/keys`` over real HTTP, against a real ``hubbub serve``: a user's own keys (create, shown
once, list, revoke), nobody else's (404), nobody granting more than they hold (403), keys
restricted to models, expired keys, and the per-key request limit (429 with ``Retry-After``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_support import LiveServer, assert_problem, running

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def new_key(client: httpx.Client, **body: Any) -> dict[str, Any]:
    """``POST /api/keys``: the answer, which must be 201."""
    response = client.post("/api/keys", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def chat(client: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    return client.post("/v1/chat/completions", json={**CHAT, "model": model, **extra})


@pytest.fixture
def root_key(live_server: LiveServer) -> str:
    """A key of the administrator ``root``."""
    done = live_server.hubbub("keys", "create", "--user", "root", "--admin")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_create_list_and_revoke_your_own_key(live_server: LiveServer, alice: httpx.Client) -> None:
    created = new_key(alice, name="laptop")
    key = created["key"]
    assert key.startswith(f"hbk_{created['id']}_")
    assert created["owner"] == "alice"
    assert (created["name"], created["roles"], created["scopes"], created["models"]) == (
        "laptop",
        ["user"],
        [],
        [],
    )
    assert created["revoked_at"] is None
    with live_server.client(key) as laptop:
        assert laptop.get("/v1/models").status_code == 200
        listed = alice.get("/api/keys")
        assert listed.status_code == 200
        mine = {k["id"]: k for k in listed.json()["keys"]}
        assert mine[created["id"]]["name"] == "laptop"
        assert all(k["owner"] == "alice" for k in mine.values())
        secret = key.split("_", 2)[2]
        assert secret not in listed.text
        assert "key" not in mine[created["id"]]
        gone = alice.delete(f"/api/keys/{created['id']}")
        assert gone.status_code == 204, gone.text
        assert_problem(laptop.get("/v1/models"), 401)  # revoked by this process: at once
    after = {k["id"]: k for k in alice.get("/api/keys").json()["keys"]}
    assert after[created["id"]]["revoked_at"] is not None
    assert_problem(alice.delete(f"/api/keys/{created['id']}"), 404)  # once


def test_another_user_s_key_is_not_found(
    live_server: LiveServer, alice: httpx.Client, bob: httpx.Client
) -> None:
    alices = new_key(alice, name="alice's")
    assert alices["id"] not in {k["id"] for k in bob.get("/api/keys").json()["keys"]}
    body = assert_problem(bob.delete(f"/api/keys/{alices['id']}"), 404)
    assert body["code"] == "not_found"
    assert_problem(bob.delete("/api/keys/0123456789abcdef"), 404)  # the same as no key at all
    with live_server.client(alices["key"]) as client:
        assert client.get("/v1/models").status_code == 200  # untouched


def test_nobody_grants_more_than_they_hold(
    live_server: LiveServer, alice: httpx.Client, root_key: str
) -> None:
    body = assert_problem(alice.post("/api/keys", json={"roles": ["admin"]}), 403)
    assert "admin" in body["detail"]
    with live_server.client(root_key) as root:
        assert new_key(root)["roles"] == ["user"]  # admin only when asked for
        assert new_key(root, roles=["admin"])["roles"] == ["admin", "user"]
    scoped = new_key(alice, scopes=["chat", "keys"], models=["offline/echo"])
    with live_server.client(scoped["key"]) as client:  # "keys": it may make keys
        assert_problem(client.post("/api/keys", json={"scopes": ["chat", "memory"]}), 403)
        assert_problem(client.post("/api/keys", json={"models": ["offline/tools"]}), 403)
        assert_problem(client.post("/api/keys", json={"roles": ["admin"]}), 403)
        inherited = new_key(client, name="from a scoped key")
        assert (inherited["scopes"], inherited["models"]) == (["chat", "keys"], ["offline/echo"])
        assert inherited["owner"] == "alice"
    mine = {k["id"] for k in alice.get("/api/keys").json()["keys"]}
    assert inherited["id"] in mine


def test_a_key_restricted_to_a_model_is_refused_the_others(
    live_server: LiveServer, alice: httpx.Client
) -> None:
    restricted = new_key(alice, models=["offline/echo"])
    with live_server.client(restricted["key"]) as client:
        assert chat(client, "offline/echo").status_code == 200
        for extra in ({}, {"stream": True}):
            body = assert_problem(chat(client, "offline/tools", **extra), 403)
            assert "offline/tools" in body["detail"]
            assert body["error"]["type"] == "forbidden"  # what OpenAI clients show
    assert chat(alice, "offline/tools").status_code == 200  # alice's other key may
    with live_server.client(restricted["key"]) as client:  # and it lists only what it may use
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["offline/echo"]
        assert_problem(client.get("/v1/models/offline/tools"), 404)
        assert client.get("/v1/models/offline/echo").status_code == 200


def test_a_key_restricted_to_a_model_cannot_reach_another_through_conversations(
    live_server: LiveServer, alice: httpx.Client
) -> None:
    restricted = new_key(alice, models=["offline/echo"])
    with live_server.client(restricted["key"]) as client:
        plain = client.post("/api/conversations", json={"title": "echo"}).json()
        other = client.post("/api/conversations", json={"model": "offline/tools"}).json()
        for conversation, body in (
            (plain, {"content": "hi", "model": "offline/tools"}),
            (other, {"content": "hi"}),  # the conversation's own model
        ):
            path = f"/api/conversations/{conversation['id']}/messages"
            assert_problem(client.post(path, json=body), 403)
            assert client.get(path).json()["items"] == []  # nothing stored
        sent = client.post(
            f"/api/conversations/{plain['id']}/messages", json={"content": "hi", "wait": True}
        )
        assert sent.status_code == 200, sent.text  # the default model, offline/echo, is allowed


def test_an_expired_key_is_refused(live_server: LiveServer, alice: httpx.Client) -> None:
    expiring = new_key(alice, expires_at=time.time() + 5)
    with live_server.client(expiring["key"]) as client:
        assert client.get("/v1/models").status_code == 200
        deadline = time.monotonic() + 30
        while (response := client.get("/v1/models")).status_code == 200:
            assert time.monotonic() < deadline, "the key outlived its expiry"
            time.sleep(0.2)
        assert_problem(response, 401)
    listed = {k["id"]: k for k in alice.get("/api/keys").json()["keys"]}
    assert listed[expiring["id"]]["expires_at"] == pytest.approx(expiring["expires_at"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["has space"]}, "scopes[0]"),
        ({"models": ["offline/nope"]}, "models"),
        ({"expires_at": 1.0}, "expires_at"),
        ({"name": "x" * 101}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"scopes": ["s"] * 33}, "scopes"),
    ],
)
def test_bad_requests_name_their_field(
    alice: httpx.Client, body: dict[str, Any], field: str
) -> None:
    before = len(alice.get("/api/keys").json()["keys"])
    response = alice.post("/api/keys", json=body)
    assert response.status_code in (400, 422), response.text
    problem = assert_problem(response, response.status_code)
    assert field in problem["detail"] or field in str(problem.get("errors")), problem
    assert len(alice.get("/api/keys").json()["keys"]) == before  # nothing was made


# -- requests per key -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root: Path = tmp_path_factory.mktemp("limited")
    toml = "[server]\ngrace_period = 2\n[auth]\nrequests_per_minute_per_key = 5\n"
    with running(root, toml, keys=("alice",)) as server:
        yield server


def test_a_key_past_its_requests_per_minute_gets_429(limited: LiveServer) -> None:
    _, first = limited.keys["alice"]
    _, second = limited.create_key("alice")
    statuses: list[int] = []
    with limited.client(first) as client:
        # Five a minute: a 429 comes by the 11th request even if a minute turns meanwhile.
        while len(statuses) < 16:
            response = client.get("/v1/models")
            statuses.append(response.status_code)
            if response.status_code != 200:
                break
    assert statuses[-1] == 429, statuses
    assert 5 <= statuses.count(200) <= 10, statuses
    body = assert_problem(response, 429)
    assert body["code"] == "too_many_requests"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    with limited.client(second) as other:
        assert other.get("/v1/models").status_code == 200  # counted per key
