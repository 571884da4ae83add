"""Process lifecycle over real HTTP: graceful shutdown with a stream in flight, and SSE
heartbeats on idle streams."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_support import LiveServer, data_frames, sse_frames

SLOW_TOML = """\
[server]
grace_period = 10
heartbeat_interval = 0.2

[plugins.offline_provider]
token_delay = 0.05
"""
PROMPT = " ".join(f"word{i}" for i in range(60))  # a 64-word reply: about 3 s at 0.05 s/word
EXPECTED = f"[offline echo] You said: {PROMPT}"


@dataclass
class Shutdown:
    """What happened when SIGTERM arrived in the middle of a streamed completion."""

    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    new_request: Any = None
    events_ended: bool = False
    returncode: int | None = None
    log: str = ""


def _new_request(url: str) -> Any:
    """A fresh connection after SIGTERM: ``"refused"`` or the response."""
    try:
        with httpx.Client(trust_env=False, timeout=5) as client:
            return client.get(f"{url}/v1/models")
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
        return "refused"


@pytest.fixture(scope="module")
def shutdown(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shutdown]:
    root: Path = tmp_path_factory.mktemp("shutdown")
    server = LiveServer(root, SLOW_TOML)  # no key: local mode, on loopback
    result = Shutdown()
    timeout = httpx.Timeout(20, read=5)
    try:
        server.start()
        with (
            httpx.Client(base_url=server.url, trust_env=False, timeout=timeout) as client,
            httpx.Client(base_url=server.url, trust_env=False, timeout=timeout) as listener,
            listener.stream("GET", "/api/events") as events,
            client.stream(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "offline/echo",
                    "stream": True,
                    "messages": [{"role": "user", "content": PROMPT}],
                },
            ) as response,
        ):
            assert response.status_code == 200
            lines = response.iter_lines()
            for line in lines:
                if line:
                    result.before.append(line)
                if len(result.before) >= 4:  # the role chunk and three words
                    break
            server.signal()
            time.sleep(0.3)  # let the server notice (it checks every 0.1 s)
            result.new_request = _new_request(server.url)
            result.after = [line for line in lines if line]
            # The idle event stream ends too, instead of holding the shutdown.
            deadline = time.monotonic() + 5
            with contextlib.suppress(httpx.TransportError):
                for _ in events.iter_lines():
                    if time.monotonic() > deadline:
                        break
                else:
                    result.events_ended = True
        try:
            result.returncode = server.wait(20)
        except subprocess.TimeoutExpired:
            result.returncode = None
        result.log = server.log()
        yield result
    finally:
        server.stop()


def test_stream_in_flight_completes_after_sigterm(shutdown: Shutdown) -> None:
    assert len(shutdown.after) >= 20, "SIGTERM should arrive well before the stream ends"
    frames = data_frames(shutdown.before + shutdown.after)
    assert frames[-1] == "[DONE]"
    chunks = frames[:-1]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == EXPECTED
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_new_requests_are_refused_while_draining(shutdown: Shutdown) -> None:
    outcome = shutdown.new_request
    if outcome != "refused":
        assert outcome.status_code == 503, outcome.text
        assert outcome.headers["content-type"].startswith("application/problem+json")
        assert outcome.headers["connection"] == "close"


def test_event_streams_end_on_shutdown(shutdown: Shutdown) -> None:
    assert shutdown.events_ended


def test_process_exits_after_the_stream(shutdown: Shutdown) -> None:
    assert shutdown.returncode is not None, shutdown.log
    assert "draining requests" in shutdown.log


def test_process_exits_zero_after_stopping_the_runtime(shutdown: Shutdown) -> None:
    assert shutdown.returncode == 0, shutdown.log[-2000:]
    assert "runtime stopped" in shutdown.log


# -- heartbeats ----------------------------------------------------------------------------


@pytest.fixture
def idle_events(live_server: LiveServer) -> Iterator[httpx.Response]:
    """``/api/events`` of a user nothing happens to (the server's heartbeat is 0.2 s)."""
    _, key = live_server.create_key("idler")
    with (
        live_server.client(key, timeout=httpx.Timeout(10, read=3)) as client,
        client.stream("GET", "/api/events") as response,
    ):
        assert response.status_code == 200
        yield response


def test_idle_event_stream_gets_comment_heartbeats(idle_events: httpx.Response) -> None:
    started = time.monotonic()
    comments = []
    for line in idle_events.iter_lines():
        if line.startswith(":"):
            comments.append(time.monotonic() - started)
            if len(comments) == 2:
                break
        assert time.monotonic() - started < 3, "no heartbeat within 3 s"
    assert comments[0] < 2


def test_heartbeat_dispatches_no_event(idle_events: httpx.Response) -> None:
    frames = []
    for frame in sse_frames(idle_events.iter_lines()):
        frames.append(frame)
        if len(frames) == 3:
            break
    assert all(frame["comments"] for frame in frames), frames
    assert [frame for frame in frames if frame["data"] is not None] == [], json.dumps(frames)


def test_a_stream_longer_than_the_grace_period_is_cut_cleanly(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """When the grace period runs out the stream ends early, with a final chunk and [DONE]
    (tests/server/test_shutdown.py has the details), and the process still stops the runtime
    and exits 0, without a traceback."""
    server = LiveServer(
        tmp_path_factory.mktemp("cut"),
        "[server]\ngrace_period = 1\n[plugins.offline_provider]\ntoken_delay = 0.1\n",
    )
    server.start()
    lines: list[str] = []
    body = {
        "model": "offline/echo",
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT}],
    }  # about 6 s at 0.1 s/word
    try:
        with (
            httpx.Client(base_url=server.url, timeout=30, trust_env=False) as client,
            client.stream("POST", "/v1/chat/completions", json=body) as response,
        ):
            for line in response.iter_lines():
                lines.append(line)
                if len(lines) == 6:
                    server.signal()
    except httpx.HTTPError:
        pass  # the connection may close abruptly
    returncode = server.wait()
    log = server.log()
    assert returncode == 0, log
    assert [line for line in lines if line][-1] == "data: [DONE]"
    assert "Traceback" not in log
    assert "runtime stopped" in log
