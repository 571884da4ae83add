"""One huge reply must not freeze the server: a 900 KB message echoed back word by word, over
the native API (SSE events) and the OpenAI API (a streamed completion), arrives whole in a few
hundred pieces while ``/health/live`` keeps answering all along."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse
from live_support import LiveServer, metric, running

TOML = """\
[server]
max_body_bytes = 2097152

[quotas]
max_message_bytes = 1048576
"""
TEXT = " ".join(f"w{n % 100000}" for n in range(150_000))[:900_000]  # 900 KB, about 135k words
WORDS = len(TEXT.split())


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root: Path = tmp_path_factory.mktemp("big")
    with running(root, TOML, keys=("alice",)) as server:
        yield server


class HealthPoller:
    """Asks ``/health/live`` again and again in a thread; records when each answer came."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.answered: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.server.client(timeout=30) as client:
            while not self._stop.is_set():
                assert client.get("/health/live").status_code == 200
                self.answered.append(time.monotonic())

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        while not self.answered:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def longest_silence(self, start: float, end: float) -> float:
        """The longest time without an answer between ``start`` and ``end``."""
        times = [start, *(t for t in self.answered if start < t < end), end]
        return max(later - earlier for earlier, later in itertools.pairwise(times))

    def count(self, start: float, end: float) -> int:
        return sum(1 for t in self.answered if start < t < end)


def stream_native(server: LiveServer, key: str) -> tuple[list[str], str]:
    """Post TEXT in a new conversation; the deltas of the reply and the stored reply."""
    with (
        server.client(key, timeout=60) as alice,
        server.client(key, timeout=httpx.Timeout(60, read=30)) as listener,
    ):
        cid = alice.post("/api/conversations", json={}).json()["id"]
        deltas: list[str] = []
        with connect_sse(listener, "GET", f"/api/conversations/{cid}/events") as source:
            sent = alice.post(f"/api/conversations/{cid}/messages", json={"content": TEXT})
            assert sent.status_code == 202, sent.text
            for event in source.iter_sse():
                data = json.loads(event.data) if event.data else {}
                if event.event == "message.delta":
                    deltas.append(data["delta"])
                elif event.event == "error":
                    raise AssertionError(data)
                elif event.event == "message.completed":
                    return deltas, data["message"]["content"]
    raise AssertionError("the stream ended before the reply was complete")


def stream_openai(server: LiveServer, key: str) -> tuple[list[str], str]:
    """A streamed completion echoing TEXT: its content pieces, and the text they make."""
    body = {
        "model": "offline/echo",
        "stream": True,
        "messages": [{"role": "user", "content": TEXT}],
    }
    pieces: list[str] = []
    with (
        server.client(key, timeout=httpx.Timeout(60, read=30)) as alice,
        connect_sse(alice, "POST", "/v1/chat/completions", json=body) as source,
    ):
        for event in source.iter_sse():
            if event.data == "[DONE]":
                return pieces, "".join(pieces)
            choices = json.loads(event.data)["choices"]
            if choices and choices[0]["delta"].get("content"):
                pieces.append(choices[0]["delta"]["content"])
    raise AssertionError("the stream ended without [DONE]")


@pytest.mark.parametrize("api", ["native", "openai"])
def test_a_huge_reply_streams_in_few_pieces_while_health_keeps_answering(
    big_server: LiveServer, api: str
) -> None:
    key = big_server.keys["alice"][1]
    stream = stream_native if api == "native" else stream_openai
    with HealthPoller(big_server) as health:
        start = time.monotonic()
        pieces, reply = stream(big_server, key)
        end = time.monotonic()
    # Health answered all along the stream: many times, never silent for a large part of it
    # (a quarter of the stream, or half a second for a stream that is over in a blink: a
    # scheduling hiccup of this shared machine, not a frozen server).
    assert health.count(start, end) >= 10
    assert health.longest_silence(start, end) < max((end - start) / 4, 0.5)
    assert reply == f"[offline echo] You said: {TEXT}"
    assert "".join(pieces) == reply  # exact: nothing lost, nothing reordered
    assert len(pieces) < WORDS / 100  # merged: far fewer pieces than words


def test_a_client_that_leaves_a_stream_stops_the_generation(big_server: LiveServer) -> None:
    # Before: the stream merger swallowed the cancellation (an asyncio.timeout on Python 3.11),
    # so the whole reply was generated (and, with a real provider, billed) after the client
    # left. The usage of a finished reply is recorded; a reply cut short reports none.
    _, key = big_server.create_key("leaver")
    body = {
        "model": "offline/echo",
        "stream": True,
        "messages": [{"role": "user", "content": TEXT}],
    }

    def completion_tokens() -> float:
        with big_server.client(key) as client:
            text = client.get("/metrics").text
        return metric(text, "hubbub_llm_tokens_total", model="offline/echo", kind="completion")

    before = completion_tokens()
    with (
        big_server.client(key, timeout=httpx.Timeout(60, read=30)) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > 2000:
                break
    deadline = time.monotonic() + 5  # generating it all takes about 1 s here
    while time.monotonic() < deadline:
        assert completion_tokens() - before < WORDS / 2, "the reply was generated to its end"
        time.sleep(0.25)
