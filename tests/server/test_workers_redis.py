"""``hubbub serve --workers 2`` on a shared Redis (event log and cache): one SSE client sees the
replies every worker produces, one conversation never gets two replies at once whichever worker
is asked, and ``/metrics`` adds up over the workers, so two scrapes agree whichever worker
answers them.

Every request below opens a connection of its own, so that the kernel hands requests to both
workers (they accept from one shared socket)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_support import LiveServer, metric, sse_frames
from redis_support import RedisServer

TOML = """\
[redis]
url = "{url}"
[events]
backend = "redis"
[cache]
backend = "redis"
[server]
heartbeat_interval = 0.2
[plugins.offline_provider]
token_delay = 0.05
"""
PROMPT = " ".join(f"w{i}" for i in range(30))  # about 1.7 s of reply at 0.05 s a word
REPLIES = 8


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer) -> Iterator[Any]:
    root: Path = tmp_path_factory.mktemp("workers-redis")
    server = LiveServer(root, TOML.format(url=redis.url))
    _, key = server.create_key("ada")
    server.start("--workers", "2")
    try:
        yield server, key
    finally:
        server.stop()


def _fresh(server: LiveServer, key: str, **kwargs: Any) -> httpx.Client:
    """A client whose every request uses a new connection (so either worker may answer)."""
    limits = httpx.Limits(max_keepalive_connections=0)
    return server.client(key, limits=limits, **kwargs)


def test_one_stream_sees_every_workers_replies_and_no_conversation_replies_twice(
    workers: Any,
) -> None:
    server, key = workers
    completed: list[dict[str, Any]] = []
    subscribed = threading.Event()
    done = threading.Event()

    def listen() -> None:
        with (
            server.client(key, timeout=httpx.Timeout(60, read=20)) as client,
            client.stream("GET", "/api/events") as response,
        ):
            assert response.status_code == 200
            for frame in sse_frames(response.iter_lines()):
                subscribed.set()  # the first heartbeat: the stream is live
                if frame["event"] == "message.completed":
                    completed.append(frame)
                    assistant = [f for f in completed if '"role":"assistant"' in f["data"]]
                    if len(assistant) == REPLIES:
                        done.set()
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert subscribed.wait(10), server.log()[-3000:]
    with _fresh(server, key) as client:
        ids = [client.post("/api/conversations", json={}).json()["id"] for _ in range(REPLIES)]
        refused = []
        for conversation_id in ids:
            path = f"/api/conversations/{conversation_id}/messages"
            first = client.post(path, json={"content": PROMPT})
            assert first.status_code == 202, first.text
            second = client.post(path, json={"content": "while the first reply runs"})
            refused.append(second.status_code)
    assert refused == [409] * REPLIES  # whichever worker got the second message
    assert done.wait(60), (len(completed), server.log()[-3000:])
    listener.join(5)
    assistant = [f for f in completed if '"role":"assistant"' in f["data"]]
    seen = sorted(
        conversation_id
        for frame in assistant
        for conversation_id in ids
        if conversation_id in frame["data"]
    )
    assert seen == sorted(ids)  # every reply, each once, whichever worker produced it
    with _fresh(server, key) as client:
        for conversation_id in ids:
            items = client.get(f"/api/conversations/{conversation_id}/messages").json()["items"]
            assert [m["role"] for m in items] == ["user", "assistant"]
            assert "while the first reply runs" not in {m["content"] for m in items}


def _scrape(server: LiveServer, key: str) -> str:
    with _fresh(server, key) as client:
        response = client.get("/metrics")
        assert response.status_code == 200
        return response.text


def test_two_scrapes_agree_on_the_request_count_of_both_workers(workers: Any) -> None:
    server, key = workers
    requests = 40
    with _fresh(server, key) as client:
        for _ in range(requests):
            assert client.get("/v1/models").status_code == 200
    time.sleep(0.2)  # each request is counted just after its response was sent
    first = _scrape(server, key)
    time.sleep(0.2)
    second = _scrape(server, key)
    labels = {"method": "GET", "route": "/v1/models", "status": "200"}
    assert metric(first, "hubbub_http_requests_total", **labels) == requests
    assert metric(second, "hubbub_http_requests_total", **labels) == requests
    scrapes = {"method": "GET", "route": "/metrics", "status": "200"}
    assert metric(second, "hubbub_http_requests_total", **scrapes) == (
        metric(first, "hubbub_http_requests_total", **scrapes) + 1
    )


def test_every_scrape_counts_the_stream_open_on_either_worker(workers: Any) -> None:
    server, key = workers
    with (
        server.client(key, timeout=httpx.Timeout(10, read=5)) as client,
        client.stream("GET", "/api/events") as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()  # kept: a discarded iterator closes the response
        for line in lines:
            if line.startswith(":"):  # a heartbeat: the stream is open on one of the workers
                break
        streams = [metric(_scrape(server, key), "hubbub_active_streams") for _ in range(6)]
    assert streams == [1.0] * 6, streams
