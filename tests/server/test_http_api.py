"""The native API over real HTTP: conversations, ownership, events, tools, metrics, OpenAPI and
request ids."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from live_support import LiveServer, assert_problem, metric, sse_frames


def create(client: httpx.Client, title: str = "", **fields: Any) -> dict[str, Any]:
    response = client.post("/api/conversations", json={"title": title, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
def user(
    live_server: LiveServer, make_key: Callable[[str], tuple[str, str]]
) -> Iterator[Callable[[str], httpx.Client]]:
    """``user(name)``: a client with a fresh key for ``name`` (a user nobody else uses)."""
    clients: list[httpx.Client] = []

    def make(name: str) -> httpx.Client:
        client = live_server.client(make_key(name)[1])
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def read_frames(
    response: httpx.Response, until: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> list[dict]:
    """Event frames of ``response`` up to and including the first for which ``until`` holds
    (heartbeats keep an idle stream from timing out, hence the deadline)."""
    frames = []
    deadline = time.monotonic() + timeout
    for frame in sse_frames(response.iter_lines()):
        frames.append(frame)
        if until(frame):
            return frames
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"the expected frame did not arrive: {frames}")


# -- conversations -------------------------------------------------------------------------


def test_conversation_lifecycle(alice: httpx.Client) -> None:
    conversation = create(alice, "groceries")
    cid = conversation["id"]
    assert conversation["title"] == "groceries"
    assert conversation["owner"] == "alice"

    assert alice.get(f"/api/conversations/{cid}").json()["title"] == "groceries"

    renamed = alice.patch(f"/api/conversations/{cid}", json={"title": "shopping"})
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "shopping"
    assert alice.get(f"/api/conversations/{cid}").json()["title"] == "shopping"

    deleted = alice.delete(f"/api/conversations/{cid}")
    assert deleted.status_code == 204
    assert_problem(alice.get(f"/api/conversations/{cid}"), 404)
    assert cid not in [c["id"] for c in alice.get("/api/conversations").json()["items"]]
    assert_problem(alice.delete(f"/api/conversations/{cid}"), 404)


def test_list_pagination_with_limit_and_cursor(user: Callable[[str], httpx.Client]) -> None:
    pager = user("pager")
    made = [create(pager, f"c{i}")["id"] for i in range(5)]
    seen: list[str] = []
    sizes = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = pager.get("/api/conversations", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        sizes.append(len(body["items"]))
        seen.extend(c["id"] for c in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert sizes == [2, 2, 1]
    assert sorted(seen) == sorted(made)
    assert seen == list(reversed(made))  # most recently active first
    everything = pager.get("/api/conversations", params={"limit": 50}).json()
    assert [c["id"] for c in everything["items"]] == seen
    assert everything["next_cursor"] is None


def test_list_limit_is_validated(alice: httpx.Client) -> None:
    for bad in ("0", "1000", "many"):
        response = alice.get("/api/conversations", params={"limit": bad})
        assert response.status_code in (400, 422), response.text
        body = assert_problem(response, response.status_code)
        assert "limit" in body["detail"]


def test_post_message_and_wait_for_the_reply(alice: httpx.Client) -> None:
    cid = create(alice, "waiting")["id"]
    response = alice.post(
        f"/api/conversations/{cid}/messages", json={"content": "hello, waiter", "wait": True}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"]["role"] == "user"
    assert body["message"]["content"] == "hello, waiter"
    assert body["reply"]["role"] == "assistant"
    assert "offline" in body["reply"]["content"]
    assert "hello, waiter" in body["reply"]["content"]
    listed = alice.get(f"/api/conversations/{cid}/messages").json()
    assert [(m["role"], m["content"]) for m in listed["items"]] == [
        ("user", "hello, waiter"),
        ("assistant", body["reply"]["content"]),
    ]


def test_post_message_without_wait_streams_the_reply_as_events(
    live_server: LiveServer, alice_key: str, alice: httpx.Client
) -> None:
    cid = create(alice, "streamed")["id"]
    with (
        live_server.client(alice_key, timeout=httpx.Timeout(10, read=5)) as listener,
        listener.stream("GET", f"/api/conversations/{cid}/events") as events,
    ):
        assert events.status_code == 200
        # The subscription exists once the headers are in: post now.
        sent = alice.post(f"/api/conversations/{cid}/messages", json={"content": "stream me"})
        assert sent.status_code == 202, sent.text
        assert "reply" not in sent.json()
        assert sent.json()["message"]["content"] == "stream me"
        frames = read_frames(
            events,
            lambda f: (
                f["event"] == "message.completed"
                and json.loads(f["data"])["message"]["role"] == "assistant"
            ),
        )
    # Every event frame has an id, a type, and JSON data of that type for this conversation.
    # (Heartbeat frames are comments; see test_heartbeat_dispatches_no_event for their data.)
    real = [f for f in frames if f["event"] is not None]
    for frame in real:
        assert frame["id"], frame
        data = json.loads(frame["data"])
        assert data["type"] == frame["event"]
        assert data["id"] == frame["id"]
        assert data["conversation_id"] == cid
    types = [f["event"] for f in real]
    assert "message.created" in types
    assert types.count("message.delta") >= 1  # words that stream in together are merged
    deltas = "".join(json.loads(f["data"])["delta"] for f in real if f["event"] == "message.delta")
    completed = json.loads(real[-1]["data"])["message"]
    assert deltas == completed["content"]
    assert "stream me" in completed["content"]
    assert "offline" in completed["content"]
    # The reply was stored as well.
    listed = alice.get(f"/api/conversations/{cid}/messages").json()["items"]
    assert listed[-1]["content"] == completed["content"]


def test_unknown_model_for_a_message_is_404_and_stores_nothing(alice: httpx.Client) -> None:
    cid = create(alice)["id"]
    response = alice.post(
        f"/api/conversations/{cid}/messages", json={"content": "x", "model": "no/such"}
    )
    assert_problem(response, 404)
    assert alice.get(f"/api/conversations/{cid}/messages").json()["items"] == []


# -- ownership -----------------------------------------------------------------------------


def test_other_callers_get_404_for_a_conversation(alice: httpx.Client, bob: httpx.Client) -> None:
    cid = create(alice, "alice's secret")["id"]
    path = f"/api/conversations/{cid}"
    attempts = {
        "GET": bob.get(path),
        "PATCH": bob.patch(path, json={"title": "bob was here"}),
        "DELETE": bob.delete(path),
        "POST messages": bob.post(f"{path}/messages", json={"content": "hi", "wait": True}),
        "GET messages": bob.get(f"{path}/messages"),
        "GET events": bob.get(f"{path}/events"),
    }
    missing = bob.get("/api/conversations/conv_doesnotexist")
    reference = assert_problem(missing, 404)
    for what, response in attempts.items():
        body = assert_problem(response, 404)
        assert body["code"] == reference["code"], what  # indistinguishable from a missing one
        assert "alice" not in response.text, what
    # Nothing bob did touched it.
    mine = alice.get(path).json()
    assert mine["title"] == "alice's secret"
    assert alice.get(f"{path}/messages").json()["items"] == []


def test_lists_show_only_own_conversations(alice: httpx.Client, bob: httpx.Client) -> None:
    alices = create(alice, "alice only")["id"]
    bobs = create(bob, "bob only")["id"]
    alice_ids = [
        c["id"] for c in alice.get("/api/conversations", params={"limit": 200}).json()["items"]
    ]
    bob_ids = [
        c["id"] for c in bob.get("/api/conversations", params={"limit": 200}).json()["items"]
    ]
    assert alices in alice_ids
    assert bobs not in alice_ids
    assert bobs in bob_ids
    assert alices not in bob_ids
    assert all(
        c["owner"] == "bob"
        for c in bob.get("/api/conversations", params={"limit": 200}).json()["items"]
    )


def test_event_stream_shows_only_own_events(
    live_server: LiveServer, alice_key: str, bob_key: str, alice: httpx.Client
) -> None:
    cid = create(alice, "private events")["id"]
    timeout = httpx.Timeout(10, read=5)
    with (
        live_server.client(alice_key, timeout=timeout) as alice_listener,
        live_server.client(bob_key, timeout=timeout) as bob_listener,
        alice_listener.stream("GET", "/api/events") as alice_events,
        bob_listener.stream("GET", "/api/events") as bob_events,
    ):
        sent = alice.post(f"/api/conversations/{cid}/messages", json={"content": "x", "wait": True})
        assert sent.status_code == 200
        seen = read_frames(alice_events, lambda f: f["event"] == "message.completed")
        assert any(f["event"] == "message.created" for f in seen)
        # bob's stream carries heartbeats only; read it for a while.
        bob_frames: list[dict] = []
        deadline = time.monotonic() + 1.0
        for frame in sse_frames(bob_events.iter_lines()):
            bob_frames.append(frame)
            if time.monotonic() > deadline:
                break
    assert bob_frames, "bob's stream should at least carry heartbeats"
    assert [f for f in bob_frames if f["event"] is not None] == []
    assert cid not in json.dumps(bob_frames)


# -- tools, metrics, OpenAPI ---------------------------------------------------------------


def test_tools_are_listed_with_json_schemas(alice: httpx.Client) -> None:
    response = alice.get("/api/tools")
    assert response.status_code == 200
    tools = {tool["name"]: tool for tool in response.json()["tools"]}
    assert {"basic.calculator", "basic.current_time"} <= set(tools)
    calculator = tools["basic.calculator"]["parameters"]
    assert calculator["type"] == "object"
    assert calculator["properties"]["expression"]["type"] == "string"
    assert calculator["required"] == ["expression"]
    clock = tools["basic.current_time"]["parameters"]
    assert clock["type"] == "object"
    assert clock["properties"]["timezone"]["type"] == "string"
    assert tools["basic.calculator"]["description"]


def test_tools_need_authentication(anon: httpx.Client) -> None:
    assert_problem(anon.get("/api/tools"), 401)


def test_metrics_count_requests_and_tokens(alice: httpx.Client, anon: httpx.Client) -> None:
    def scrape() -> str:
        response = anon.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return response.text

    route = {"method": "POST", "route": "/v1/chat/completions", "status": "200"}
    before = scrape()
    completion = alice.post(
        "/v1/chat/completions",
        json={"model": "offline/echo", "messages": [{"role": "user", "content": "count me in"}]},
    )
    assert completion.status_code == 200
    usage = completion.json()["usage"]
    deadline = time.monotonic() + 2
    after = scrape()
    while (
        metric(after, "hubbub_http_requests_total", **route)
        == metric(before, "hubbub_http_requests_total", **route)
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
        after = scrape()

    def grew(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew("hubbub_http_requests_total", **route) == 1
    assert (
        grew("hubbub_llm_tokens_total", model="offline/echo", kind="prompt")
        == usage["prompt_tokens"]
    )
    assert (
        grew("hubbub_llm_tokens_total", model="offline/echo", kind="completion")
        == usage["completion_tokens"]
    )
    assert "hubbub_http_request_duration_seconds_bucket" in after
    assert "hubbub_active_streams" in after
    assert metric(after, "hubbub_component_health", component="runtime") == 1.0


DESIGN_PATHS = {
    "/health/live": {"get"},
    "/health/ready": {"get"},
    "/v1/models": {"get"},
    "/v1/chat/completions": {"post"},
    "/api/conversations": {"get", "post"},
    "/api/conversations/{conversation_id}": {"get", "patch", "delete"},
    "/api/conversations/{conversation_id}/messages": {"get", "post"},
    "/api/conversations/{conversation_id}/events": {"get"},
    "/api/events": {"get"},
    "/api/tools": {"get"},
    "/metrics": {"get"},
}


def test_openapi_lists_the_design_paths(anon: httpx.Client) -> None:
    response = anon.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    paths = document["paths"]
    for path, methods in DESIGN_PATHS.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, sorted(paths[path]))
    assert anon.get("/schema").status_code == 200


def test_health(anon: httpx.Client) -> None:
    assert anon.get("/health/live").status_code == 200
    ready = anon.get("/health/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] in ("ok", "degraded")
    assert body["components"]
    for name, component in body["components"].items():
        assert component["status"] in ("ok", "degraded", "down"), name


# -- request ids ---------------------------------------------------------------------------


def test_request_id_is_echoed(alice: httpx.Client) -> None:
    response = alice.get("/api/tools", headers={"X-Request-ID": "trace-me-42"})
    assert response.headers["x-request-id"] == "trace-me-42"


def test_request_id_is_generated_and_in_problems(anon: httpx.Client) -> None:
    first = anon.get("/v1/models")
    second = anon.get("/v1/models")
    body = assert_problem(first, 401)
    generated = first.headers["x-request-id"]
    assert re.fullmatch(r"[\x21-\x7e]{8,128}", generated)
    assert second.headers["x-request-id"] != generated
    assert body["request_id"] == generated


def test_insane_request_id_is_replaced(alice: httpx.Client) -> None:
    for bad in ("x" * 500, "has space"):
        response = alice.get("/api/tools", headers={"X-Request-ID": bad})
        assert response.status_code == 200
        assert response.headers["x-request-id"] not in (bad, "")


@pytest.mark.parametrize(("method", "path"), [("GET", "/no/such/route"), ("DELETE", "/v1/models")])
def test_request_id_on_unrouted_requests(anon: httpx.Client, method: str, path: str) -> None:
    response = anon.request(method, path, headers={"X-Request-ID": "lost-one"})
    assert response.status_code in (404, 405)
    assert response.headers.get("x-request-id") == "lost-one"


def test_unrouted_requests_are_counted(anon: httpx.Client) -> None:
    labels = {"method": "GET", "route": "unmatched", "status": "404"}
    before = metric(anon.get("/metrics").text, "hubbub_http_requests_total", **labels)
    assert anon.get("/nothing/here").status_code == 404
    deadline = time.monotonic() + 2
    after = before
    while after == before and time.monotonic() < deadline:
        after = metric(anon.get("/metrics").text, "hubbub_http_requests_total", **labels)
    assert after == before + 1


# -- content types of streams --------------------------------------------------------------


def test_event_stream_content_type(live_server: LiveServer, alice_key: str) -> None:
    with (
        live_server.client(alice_key) as client,
        client.stream("GET", "/api/events") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("which", ["chat completion stream", "conversation events"])
def test_stream_content_type_is_event_stream(
    live_server: LiveServer, alice_key: str, alice: httpx.Client, which: str
) -> None:
    if which == "conversation events":
        request = ("GET", f"/api/conversations/{create(alice)['id']}/events", None)
    else:
        body = {
            "model": "offline/echo",
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        }
        request = ("POST", "/v1/chat/completions", body)
    method, path, payload = request
    with (
        live_server.client(alice_key) as client,
        client.stream(method, path, json=payload) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")


def test_a_reconnecting_client_resumes_with_last_event_id(
    live_server: LiveServer, alice_key: str, alice: httpx.Client
) -> None:
    cid = create(alice, "resumable")["id"]
    path = f"/api/conversations/{cid}/events"
    timeout = httpx.Timeout(10, read=5)
    with (
        live_server.client(alice_key, timeout=timeout) as listener,
        listener.stream("GET", path) as events,
    ):
        sent = alice.post(f"/api/conversations/{cid}/messages", json={"content": "x", "wait": True})
        assert sent.status_code == 200
        first = read_frames(
            events, lambda f: f["event"] == "status" and '"idle"' in (f["data"] or "")
        )
    seen = [f for f in first if f["event"]]
    assert len(seen) > 3
    # Reconnect as a browser does, naming the last event it handled (the second one).
    headers = {"Last-Event-ID": seen[1]["id"]}
    with (
        live_server.client(alice_key, timeout=timeout) as listener,
        listener.stream("GET", path, headers=headers) as events,
    ):
        resumed = read_frames(events, lambda f: f["id"] == seen[-1]["id"])
    assert [f["id"] for f in resumed if f["event"]] == [f["id"] for f in seen[2:]]
    # A client that cannot send the header names the event in the query, on both streams.
    for stream_path in (path, "/api/events"):
        with (
            live_server.client(alice_key, timeout=timeout) as listener,
            listener.stream("GET", stream_path, params={"last_event_id": seen[1]["id"]}) as events,
        ):
            resumed = read_frames(events, lambda f: f["id"] == seen[-1]["id"])
        replayed = [f["id"] for f in resumed if f["event"]]
        assert replayed[: len(seen) - 2] == [f["id"] for f in seen[2:]], stream_path


def test_resuming_from_a_forgotten_event_says_so(
    live_server: LiveServer, alice_key: str, alice: httpx.Client
) -> None:
    cid = create(alice, "too old")["id"]
    with (
        live_server.client(alice_key, timeout=httpx.Timeout(10, read=5)) as listener,
        listener.stream(
            "GET", f"/api/conversations/{cid}/events", headers={"Last-Event-ID": "1-1"}
        ) as events,
    ):
        (frame,) = read_frames(events, lambda f: f["event"] is not None)
    assert frame["event"] == "reset"
    assert json.loads(frame["data"])["last_event_id"] == "1-1"
