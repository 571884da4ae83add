"""Event streams are counted per caller and per process: past ``[events]
max_streams_per_caller`` or ``max_streams`` a new stream gets 429, and a closed stream gives its
place back."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from live_support import LiveServer, assert_problem, running

from hubbub_server.streams import StreamLimits

TOML = """\
[events]
max_streams_per_caller = 2
max_streams = 3
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root: Path = tmp_path_factory.mktemp("stream-limits")
    with running(root, TOML, keys=("alice", "bob", "carol")) as live:
        yield live


@contextlib.contextmanager
def stream(server: LiveServer, user: str) -> Iterator[httpx.Response]:
    with (
        server.client(server.keys[user][1], timeout=httpx.Timeout(10, read=10)) as client,
        client.stream("GET", "/api/events") as response,
    ):
        yield response


def opened(server: LiveServer, user: str) -> httpx.Response:
    """Try to open a stream: a refusal (read whole), or 200 (closed again at once)."""
    with server.client(server.keys[user][1], timeout=httpx.Timeout(10, read=1)) as client:
        try:
            with client.stream("GET", "/api/events") as response:
                if response.status_code != 200:
                    response.read()
                return response
        except httpx.ReadTimeout:  # no headers yet: a stream waiting for its first event
            return httpx.Response(200)


def test_past_the_per_caller_limit_a_stream_gets_429_and_a_closed_one_gives_its_place_back(
    server: LiveServer,
) -> None:
    with stream(server, "alice") as first, stream(server, "alice") as second:
        assert first.status_code == second.status_code == 200
        refused = opened(server, "alice")
        assert refused.status_code == 429
        body = refused.json()
        assert body["code"] == "too_many_requests"
        assert "2 event streams open" in body["detail"]
        assert opened(server, "bob").status_code == 200  # another caller is not affected
    # Both closed: the server notices the disconnects and gives the places back.
    deadline = time.monotonic() + 10
    while (status := opened(server, "alice").status_code) == 429 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200


def test_past_the_process_limit_every_caller_gets_429(server: LiveServer) -> None:
    with (
        stream(server, "alice") as a,
        stream(server, "alice") as b,
        stream(server, "bob") as c,
    ):
        assert {a.status_code, b.status_code, c.status_code} == {200}
        refused = opened(server, "carol")
        assert refused.status_code == 429
        assert "as many event streams open" in refused.json()["detail"]


def test_a_slot_is_given_back_once() -> None:
    limits = StreamLimits(per_caller=1, total=10)
    slot = limits.reserve("ada")
    with pytest.raises(Exception, match="1 event streams open"):
        limits.reserve("ada")
    slot.release()
    slot.release()
    assert (limits.open, limits.held_by("ada")) == (0, 0)
    limits.reserve("ada")
    assert limits.open == 1


def test_the_refusal_is_a_problem_document(server: LiveServer) -> None:
    with stream(server, "carol") as ok, stream(server, "carol"):
        assert ok.status_code == 200
        with server.client(server.keys["carol"][1]) as client:
            assert_problem(client.get("/api/events", timeout=httpx.Timeout(5, read=1)), 429)
