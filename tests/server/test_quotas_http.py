"""``[quotas]`` over real HTTP: 413 for a message too large, 429 with a problem document that
names the quota for the rest; nothing is stored by a refused request."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from live_support import LiveServer, running

QUOTAS_TOML = """\
[quotas]
max_message_bytes = 2000
max_stored_bytes = 30000
max_conversations = 4
conversations_per_minute = 6
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with running(
        tmp_path_factory.mktemp("quotas"), QUOTAS_TOML, keys=("carol", "dave", "erin")
    ) as live:
        yield live


def _client(server: LiveServer, user: str) -> httpx.Client:
    return server.client(server.keys[user][1])


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    assert body["code"] == code
    return body


def _away_from_a_minute_boundary() -> None:
    """The creation rate is counted per clock minute: start a test well inside one."""
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)


def test_a_message_over_the_size_limit_is_413_and_not_stored(server: LiveServer) -> None:
    with _client(server, "carol") as carol:
        conversation = carol.post("/api/conversations", json={}).json()
        path = f"/api/conversations/{conversation['id']}/messages"
        body = _problem(carol.post(path, json={"content": "é" * 1001}), 413, "content_too_large")
        assert "2000" in str(body["detail"])
        assert body["errors"] == [{"field": "content", "message": body["errors"][0]["message"]}]  # type: ignore[index]
        assert carol.get(path).json()["items"] == []
        fits = carol.post(path, json={"content": "é" * 1000, "wait": True})
        assert fits.status_code == 200, fits.text


def test_too_many_conversations_is_429_until_one_is_deleted(server: LiveServer) -> None:
    _away_from_a_minute_boundary()
    with _client(server, "dave") as dave:
        made = [dave.post("/api/conversations", json={}) for _ in range(4)]
        assert [r.status_code for r in made] == [201] * 4
        body = _problem(dave.post("/api/conversations", json={}), 429, "quota_exceeded")
        assert (body["quota"], body["used"], body["limit"]) == ("conversations", 4, 4)
        assert len(dave.get("/api/conversations").json()["items"]) == 4
        assert dave.delete(f"/api/conversations/{made[0].json()['id']}").status_code == 204
        assert dave.post("/api/conversations", json={}).status_code == 201
        # the creation rate (6 a minute) is next: delete and create until it is reached
        for _ in range(2):
            first = dave.get("/api/conversations").json()["items"][0]["id"]
            dave.delete(f"/api/conversations/{first}")
            assert dave.post("/api/conversations", json={}).status_code in (201, 429)
        first = dave.get("/api/conversations").json()["items"][0]["id"]
        dave.delete(f"/api/conversations/{first}")
        limited = dave.post("/api/conversations", json={})
        body = _problem(limited, 429, "quota_exceeded")
        assert body["quota"] == "conversations_per_minute"
        assert 1 <= int(limited.headers["retry-after"]) <= 60


def test_stored_bytes_quota_refuses_writes_until_space_is_freed(server: LiveServer) -> None:
    with _client(server, "erin") as erin:
        conversation = erin.post("/api/conversations", json={}).json()
        path = f"/api/conversations/{conversation['id']}/messages"
        refused = None
        for i in range(40):
            response = erin.post(path, json={"content": f"{i} " + "x" * 1900, "wait": True})
            if response.status_code != 200:
                refused = response
                break
        assert refused is not None, "the stored bytes quota was never reached"
        body = _problem(refused, 429, "quota_exceeded")
        assert body["quota"] == "stored_bytes"
        assert body["limit"] == 30000
        stored = erin.get(path, params={"limit": 200}).json()["items"]
        assert not any(m["content"].startswith(f"{i} ") for m in stored if m["role"] == "user")
        # memories count against it too
        memory = erin.post("/api/memory", json={"content": "y" * 1500})
        _problem(memory, 429, "quota_exceeded")
        assert erin.delete(f"/api/conversations/{conversation['id']}").status_code == 204
        assert erin.post("/api/memory", json={"content": "y" * 1500}).status_code == 201
