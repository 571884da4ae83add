"""``/api/memory`` over real HTTP: a caller's long-term memories, and nobody else's."""

from __future__ import annotations

import time

import httpx


def _add(client: httpx.Client, content: str, **fields: object) -> dict[str, object]:
    response = client.post("/api/memory", json={"content": content, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def _contents(client: httpx.Client) -> list[str]:
    response = client.get("/api/memory")
    assert response.status_code == 200, response.text
    return [item["content"] for item in response.json()["items"]]


def test_memories_are_added_listed_newest_first_and_forgotten(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    alice.delete("/api/memory")
    first = _add(alice, "prefers metric units")
    second = _add(alice, "lives in Lyon", metadata={"source": "test"})
    assert second["id"] != first["id"]
    assert str(second["id"]).startswith("mem_")
    assert _contents(alice)[:2] == ["lives in Lyon", "prefers metric units"]

    # bob sees none of it and cannot delete it
    assert "lives in Lyon" not in _contents(bob)
    denied = bob.delete(f"/api/memory/{first['id']}")
    assert denied.status_code == 404
    assert denied.headers["content-type"].startswith("application/problem+json")
    assert "prefers metric units" in _contents(alice)

    assert alice.delete(f"/api/memory/{first['id']}").status_code == 204
    assert alice.delete(f"/api/memory/{first['id']}").status_code == 404
    assert _contents(alice) == ["lives in Lyon"]

    forgotten = alice.delete("/api/memory")
    assert forgotten.status_code == 200
    assert forgotten.json() == {"deleted": 1}
    assert _contents(alice) == []


def test_memories_page_with_a_cursor(alice: httpx.Client) -> None:
    alice.delete("/api/memory")
    for i in range(5):
        _add(alice, f"fact {i}")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = alice.get("/api/memory", params=params).json()
        seen += [item["content"] for item in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == [f"fact {i}" for i in reversed(range(5))]
    forged = alice.get("/api/memory", params={"cursor": "garbage"})
    assert forged.status_code == 422
    assert forged.json()["errors"][0]["field"] == "cursor"


def test_a_memory_from_someone_elses_conversation_is_refused(
    alice: httpx.Client, bob: httpx.Client
) -> None:
    theirs = bob.post("/api/conversations", json={"title": "bob's"}).json()
    response = alice.post(
        "/api/memory", json={"content": "x", "source_conversation_id": theirs["id"]}
    )
    assert response.status_code == 404
    mine = alice.post("/api/conversations", json={}).json()
    added = _add(alice, "from my conversation", source_conversation_id=mine["id"])
    assert added["source_conversation_id"] == mine["id"]


def test_bad_memories_get_clear_errors(alice: httpx.Client) -> None:
    cases = [
        ({"content": ""}, "content"),
        ({"content": "   "}, "content"),
        ({"content": "x" * 4001}, "content"),
        ({"content": 5}, "content"),
        ({"content": "ok", "expires_at": time.time() - 10}, "expires_at"),
        ({"content": "ok", "expires_at": -1}, "expires_at"),
        ({"content": "ok", "owner": "bob"}, "owner"),
    ]
    for body, field in cases:
        response = alice.post("/api/memory", json=body)
        assert response.status_code == 422, (body, response.text)
        problem = response.json()
        assert problem["errors"][0]["field"] == field, (body, problem)


def test_memory_routes_need_credentials(anon: httpx.Client) -> None:
    for method, path in [
        ("GET", "/api/memory"),
        ("POST", "/api/memory"),
        ("DELETE", "/api/memory"),
        ("DELETE", "/api/memory/mem_x"),
    ]:
        response = anon.request(method, path, json={"content": "x"})
        assert response.status_code == 401, (method, path, response.text)


def test_a_conversation_may_carry_an_expiry(alice: httpx.Client) -> None:
    past = alice.post("/api/conversations", json={"expires_at": time.time() - 5})
    assert past.status_code == 422
    assert past.json()["errors"][0]["field"] == "expires_at"
    soon = time.time() + 3600
    made = alice.post("/api/conversations", json={"expires_at": soon})
    assert made.status_code == 201, made.text
    assert made.json()["expires_at"] == soon
    later = soon + 3600
    patched = alice.patch(f"/api/conversations/{made.json()['id']}", json={"expires_at": later})
    assert patched.json()["expires_at"] == later
    assert alice.get(f"/api/conversations/{made.json()['id']}").json()["expires_at"] == later
