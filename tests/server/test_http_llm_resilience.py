"""Retries, fallbacks, deadlines, breakers and cancellation through ``hubbub serve`` in front of a
real HTTP upstream speaking the OpenAI API (tests/openai_upstream.py), over real HTTP.

The upstream is scripted per request (``status:500``, ``hang``, ``drop_after:N``...); the
server routes ``up-gpt`` to it, with ``up-backup`` (the same upstream, another model id) and
``offline/echo`` as its fallbacks.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from live_support import Listener, LiveServer, assert_problem, data_frames, running
from openai_upstream import OpenAIUpstream


def config(upstream: OpenAIUpstream, dead_port: int) -> str:
    return f"""\
[llm]
request_timeout = 1.0
deadline = 6.0
retries = 1
retry_delay = 0.05
breaker_failures = 6
breaker_reset = 600
[llm.fallbacks]
"up-gpt" = ["up-backup", "offline/echo"]
"up-flaky" = ["up-backup"]
[server]
heartbeat_interval = 0.2
[[plugins.openai_provider.models]]
name = "up-gpt"
model = "gpt-4o-mini"
api_base = "{upstream.url}"
[[plugins.openai_provider.models]]
name = "up-backup"
model = "backup-model"
api_base = "{upstream.url}"
[[plugins.openai_provider.models]]
name = "up-alone"
model = "alone-model"
api_base = "{upstream.url}"
[[plugins.openai_provider.models]]
name = "up-flaky"
model = "flaky-model"
api_base = "{upstream.url}"
[[plugins.openai_provider.models]]
name = "up-dead"
model = "dead-model"
api_base = "http://127.0.0.1:{dead_port}/v1"
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream() as served:
        yield served


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, upstream: OpenAIUpstream
) -> Iterator[LiveServer]:
    import socket

    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    root = tmp_path_factory.mktemp("resilience")
    with running(root, config(upstream, dead_port), keys=("alice",)) as live:
        yield live


@pytest.fixture
def alice(server: LiveServer, upstream: OpenAIUpstream) -> Iterator[httpx.Client]:
    upstream.reset()
    with server.client(server.keys["alice"][1], timeout=30) as client:
        yield client


def chat(model: str, *, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return body


def models_asked(upstream: OpenAIUpstream) -> list[str]:
    return [r.body["model"] for r in upstream.chat_requests()]


@pytest.mark.parametrize("stream", [False, True])
def test_a_500_then_a_hang_falls_back_within_the_deadline_with_status_events(
    server: LiveServer, alice: httpx.Client, upstream: OpenAIUpstream, stream: bool
) -> None:
    upstream.script("status:500", "hang", model="gpt-4o-mini")
    with Listener(server, server.keys["alice"][1], "/api/events") as events:
        started = time.monotonic()
        response = alice.post("/v1/chat/completions", json=chat("up-gpt", stream=stream))
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        retrying = events.wait_for("status", state="retrying")
        fallback = events.wait_for("status", state="fallback")
    assert elapsed < 6.0  # the deadline: one try failed, the second hung for its 1 s timeout
    assert models_asked(upstream) == ["gpt-4o-mini", "gpt-4o-mini", "backup-model"]
    if stream:
        frames = data_frames(response.text.splitlines())
        assert frames[-1] == "[DONE]"
        assert {f["model"] for f in frames[:-1]} == {"up-gpt"}  # the id the client asked for
        text = "".join(
            f["choices"][0]["delta"].get("content") or "" for f in frames[:-1] if f["choices"]
        )
    else:
        text = response.json()["choices"][0]["message"]["content"]
    assert text.startswith("Hello!")
    assert "up-gpt" in retrying["detail"]
    assert "trying up-backup" in fallback["detail"]
    # The hung request was abandoned: the upstream saw its client leave.
    hung = upstream.chat_requests()[1]
    upstream.wait_until(lambda: hung.disconnected_at is not None, timeout=5)


def test_a_stream_whose_upstream_fails_before_its_first_chunk_is_an_error_not_a_200(
    alice: httpx.Client, upstream: OpenAIUpstream
) -> None:
    upstream.script("status:500", "status:502", model="alone-model")
    response = alice.post("/v1/chat/completions", json=chat("up-alone", stream=True))
    body = assert_problem(response, 502)
    assert "502" in body["detail"] or "upstream" in body["detail"].lower()
    assert models_asked(upstream) == ["alone-model", "alone-model"]


def test_a_stream_cut_midway_ends_with_a_clean_error_chunk(
    alice: httpx.Client, upstream: OpenAIUpstream
) -> None:
    upstream.script("drop_after:3", model="alone-model")
    response = alice.post("/v1/chat/completions", json=chat("up-alone", stream=True))
    assert response.status_code == 200
    frames = data_frames(response.text.splitlines())
    assert "error" in frames[-1], frames[-1]
    assert frames[-1]["error"]["type"] == "provider_error"
    assert any(f.get("choices") and f["choices"][0]["delta"].get("content") for f in frames[:-1])
    assert models_asked(upstream) == ["alone-model"]  # text was sent: never replayed


def test_a_429_waits_for_retry_after(alice: httpx.Client, upstream: OpenAIUpstream) -> None:
    upstream.script("status:429:retry_after=1", model="alone-model")
    response = alice.post("/v1/chat/completions", json=chat("up-alone"))
    assert response.status_code == 200, response.text
    first, second = upstream.chat_requests()
    assert second.received_at - first.received_at >= 0.9


def test_a_context_overflow_falls_back_at_once(
    alice: httpx.Client, upstream: OpenAIUpstream
) -> None:
    upstream.script("context_overflow", model="flaky-model")
    response = alice.post("/v1/chat/completions", json=chat("up-flaky"))
    assert response.status_code == 200, response.text
    assert models_asked(upstream) == ["flaky-model", "backup-model"]


def test_an_unreachable_upstream_opens_its_breaker_and_health_says_so(
    server: LiveServer, alice: httpx.Client
) -> None:
    # Each request tries twice (retries = 1): the breaker opens at the sixth failure.
    for _ in range(3):
        failed = alice.post("/v1/chat/completions", json=chat("up-dead"))
        body = assert_problem(failed, 502)
        assert "could not connect" in body["detail"]
    refused = alice.post("/v1/chat/completions", json=chat("up-dead"))
    body = assert_problem(refused, 503)
    assert body["code"] == "circuit_open"
    assert int(refused.headers["retry-after"]) > 0
    with server.client() as anon:
        ready = anon.get("/health/ready").json()
    llm = ready["components"]["llm"]  # the LLM client, which routes
    assert llm["status"] == "degraded", ready
    assert "up-dead" in llm["detail"]


def test_a_client_leaving_a_stream_stops_the_upstream_within_a_second(
    server: LiveServer, upstream: OpenAIUpstream
) -> None:
    upstream.script("slow:200", model="alone-model")
    key = server.keys["alice"][1]
    with (
        server.client(key, timeout=30) as client,
        client.stream(
            "POST", "/v1/chat/completions", json=chat("up-alone", stream=True)
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        while "content" not in next(lines):
            pass
        left = time.monotonic()
    (request,) = upstream.chat_requests()
    upstream.wait_until(lambda: request.disconnected_at is not None, timeout=5)
    assert request.disconnected_at is not None
    assert request.disconnected_at - left < 1.0
    assert request.completed_at is None


def test_cancelling_a_reply_stops_the_upstream_and_keeps_the_partial_reply(
    server: LiveServer, alice: httpx.Client, upstream: OpenAIUpstream
) -> None:
    upstream.script("slow:200", model="alone-model")
    created = alice.post("/api/conversations", json={"model": "up-alone"})
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    with Listener(server, server.keys["alice"][1], f"/api/conversations/{cid}/events") as events:
        sent = alice.post(f"/api/conversations/{cid}/messages", json={"content": "hi"})
        assert sent.status_code == 202, sent.text
        events.wait_for("message.delta")
        cancelled_at = time.monotonic()
        assert alice.post(f"/api/conversations/{cid}/cancel").status_code == 202
        completed = events.wait_for("message.completed")
        usage = events.wait_for("usage")
    (request,) = upstream.chat_requests()
    upstream.wait_until(lambda: request.disconnected_at is not None, timeout=5)
    assert request.disconnected_at is not None
    assert request.disconnected_at - cancelled_at < 1.0
    message = completed["message"]
    assert message["interrupted"] == "cancelled"
    assert message["content"]
    assert "Hello! I'm doing well".startswith(message["content"].strip()[:10])
    # The partial reply was billed: its tokens are counted though the upstream never said.
    assert usage["usage"]["completion_tokens"] > 0
    assert usage["usage"]["prompt_tokens"] > 0
    stored = alice.get(f"/api/conversations/{cid}/messages").json()["items"][-1]
    assert stored["content"] == message["content"]


def test_clients_that_leave_at_once_leave_no_stream_behind(
    server: LiveServer, upstream: OpenAIUpstream
) -> None:
    """Clients that send a streamed request and leave before reading anything: Litestar then
    never starts the response body, so the stream must be closed by the response itself (one
    close, every layer in order), never left to the garbage collector."""
    import socket

    key = server.keys["alice"][1]
    body = json.dumps(chat("up-alone", stream=True)).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    for round_ in range(6):
        sockets = []
        for _ in range(16):
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(head + body)
            sockets.append(sock)
        time.sleep(0.002 * round_)  # leave at different points of the reply
        for sock in sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset: the server sees the client gone at once
    asked = upstream.chat_requests()
    assert asked  # the streams reached the upstream
    upstream.wait_until(
        lambda: all(r.completed_at or r.disconnected_at for r in upstream.chat_requests()),
        timeout=10,
    )
    time.sleep(0.5)  # finalizers, had there been any, run by now
    log = server.log()
    assert "never retrieved" not in log
    assert "already running" not in log
    assert "failed while closing" not in log
