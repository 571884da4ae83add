"""What an idle event stream costs the server, and that it is all given back (issue 16, figure
(a): 20,000 idle streams in one process under 400 MB).

Over real HTTP: the reference app under uvicorn with hubbub's connection protocol, on uvloop and
httptools as ``hubbub serve`` runs it, in a thread of this process so that its tasks, its
subscriptions and the memory it allocates can be counted. Bounds are generous: an idle stream
used to cost three tasks (the request's, listening for the disconnect, Litestar's sender and a
drain watcher) and about 34 KB of Python objects; it now costs the request's task and about 15 KB.
Closed streams used to stay in memory (blinker kept their subscriptions); they must not.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from litestar import Litestar

from hubbub.events import Subscription
from hubbub.testing import config_for, runtime_for
from hubbub_server import create_app
from hubbub_server.connections import ConnectionConfig, ConnectionLimits
from hubbub_server.heartbeat import Heartbeat

T = TypeVar("T")

STREAMS = 300
# A heartbeat far longer than the test: a client that leaves is noticed without it.
TOML = """\
[server]
heartbeat_interval = 600
[events]
max_streams_per_caller = 1000
max_streams = 1000
[logging]
level = "WARNING"
"""
TASKS_PER_STREAM = 1.5  # was 3
TRACED_BYTES_PER_STREAM = 24_000  # was about 34,500 (uvicorn, Litestar and hubbub together)


@dataclass
class Served:
    """The app, the event loop it runs on, its port and a key of bob's."""

    app: Litestar
    loop: asyncio.AbstractEventLoop
    port: int
    key: str

    def on_loop(self, read: Callable[[], T]) -> T:
        """``read()`` on the server's event loop, between two of its steps."""

        async def call() -> T:
            return read()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=30)

    def state(self) -> dict[str, int]:
        """What the server holds for event streams now."""
        app_state = self.app.state
        return self.on_loop(
            lambda: {
                "tasks": len(asyncio.all_tasks()),
                "streams": app_state.streams.open,
                "heartbeat": app_state.heartbeat.watched,
                "subscribers": app_state.runtime.events.subscriber_count,
            }
        )

    def open_stream(self) -> socket.socket:
        """``GET /api/events`` on a raw socket, read up to the end of the response head."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.sendall(
            f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {self.key}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, f"closed before the head: {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 200 "), head[:200]
        return sock


async def make_key(home: Path, user: str) -> str:
    async with runtime_for(config_for(home)) as runtime:  # keys live in its account store
        return (await runtime.api_keys.create(user))[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("sse-footprint")
    key = asyncio.run(make_key(home, "bob"))
    config = config_for(home, TOML)
    app = create_app(config)
    loops: list[asyncio.AbstractEventLoop] = []
    app.on_startup.append(lambda _: loops.append(asyncio.get_running_loop()))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        ConnectionConfig(
            app,
            log_config=None,
            log_level="warning",
            limits=ConnectionLimits.from_config(config.server),
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    try:
        while not (server.started and loops):
            assert thread.is_alive(), "the server stopped while starting"
            assert time.monotonic() < deadline, "the server did not start in 20 s"
            time.sleep(0.02)
        yield Served(app, loops[0], port, key)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def wait_until(served: Served, done: Callable[[dict[str, int]], bool]) -> dict[str, int]:
    deadline = time.monotonic() + 20
    while not done(state := served.state()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return state


def subscriptions() -> int:
    gc.collect()
    return sum(isinstance(obj, Subscription) for obj in gc.get_objects())


def test_an_idle_stream_holds_one_task_and_little_memory_and_gives_it_all_back(
    served: Served,
) -> None:
    base = served.state()
    held = subscriptions()
    warm = served.open_stream()  # what any stream needs is loaded before counting
    before = wait_until(
        served,
        lambda state: state["streams"] == 1 and state["subscribers"] == base["subscribers"] + 1,
    )
    tracemalloc.start()
    socks: list[socket.socket] = []
    try:
        traced_before = tracemalloc.take_snapshot()
        socks = [served.open_stream() for _ in range(STREAMS)]
        opened = wait_until(
            served,
            lambda state: (
                state["streams"] == 1 + STREAMS
                and state["subscribers"] == before["subscribers"] + STREAMS
            ),
        )
        gc.collect()
        traced = tracemalloc.take_snapshot().compare_to(traced_before, "filename")
    finally:
        tracemalloc.stop()
        for sock in socks:
            sock.close()
    assert opened["streams"] == 1 + STREAMS
    assert opened["heartbeat"] == 1 + STREAMS  # one heartbeat drives them all
    assert opened["subscribers"] - before["subscribers"] == STREAMS
    tasks = (opened["tasks"] - before["tasks"]) / STREAMS
    assert tasks <= TASKS_PER_STREAM, f"{tasks:.2f} tasks per idle stream"
    grown = sum(stat.size_diff for stat in traced) / STREAMS
    assert grown <= TRACED_BYTES_PER_STREAM, f"{grown:.0f} bytes per idle stream"

    # The clients leave (the heartbeat is ten minutes away): everything is given back.
    warm.close()
    closed = wait_until(
        served,
        lambda state: (
            state["streams"] == 0
            and state["heartbeat"] == 0
            and state["subscribers"] == base["subscribers"]
            and state["tasks"] <= base["tasks"]
        ),
    )
    assert (closed["streams"], closed["heartbeat"]) == (0, 0)
    assert closed["subscribers"] == base["subscribers"]
    assert closed["tasks"] <= base["tasks"] + 2  # other work of the server's may come and go
    leaked = subscriptions() - held
    assert leaked <= 0, f"{leaked} closed subscriptions are still in memory"


# -- the heartbeat on its own ----------------------------------------------------------------


class Beat:
    """A stream as the heartbeat sees it: counts its ticks and its end."""

    def __init__(self) -> None:
        self.ticks = 0
        self.ends = 0

    def tick(self) -> None:
        self.ticks += 1

    def end(self) -> None:
        self.ends += 1


async def test_the_heartbeat_ticks_every_stream_about_once_an_interval() -> None:
    heartbeat = Heartbeat(0.05, asyncio.Event())
    beats = [Beat() for _ in range(40)]  # more than its slices: each slice holds several
    for beat in beats:
        heartbeat.watch(beat)
    await asyncio.sleep(0.5)  # about ten intervals
    for beat in beats:
        heartbeat.unwatch(beat)
    ticks = [beat.ticks for beat in beats]
    assert min(ticks) >= 3, ticks
    assert max(ticks) <= 20, ticks
    assert heartbeat.watched == 0
    assert heartbeat._task is None  # no stream, no task


async def test_draining_ends_every_stream_once_and_a_later_one_at_once() -> None:
    drain = asyncio.Event()
    heartbeat = Heartbeat(30, drain)
    beats = [Beat() for _ in range(5)]
    for beat in beats:
        heartbeat.watch(beat)
    await asyncio.sleep(0)
    assert [beat.ends for beat in beats] == [0] * 5
    drain.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert [beat.ends for beat in beats] == [1] * 5
    late = Beat()
    heartbeat.watch(late)
    assert late.ends == 1
    for _ in range(10):
        await asyncio.sleep(0)
    assert [beat.ends for beat in [*beats, late]] == [1] * 6  # once each
    for beat in [*beats, late]:
        heartbeat.unwatch(beat)


async def test_a_stream_whose_tick_fails_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Beat):
        def tick(self) -> None:
            raise RuntimeError("broken")

    heartbeat = Heartbeat(0.05, asyncio.Event())
    beats: list[Any] = [Broken(), Beat()]
    for beat in beats:
        heartbeat.watch(beat)
    await asyncio.sleep(0.3)
    for beat in beats:
        heartbeat.unwatch(beat)
    assert beats[1].ticks >= 2
    assert "heartbeat failed" in caplog.text
