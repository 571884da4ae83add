"""Review of the event streams' heartbeat and client watch (issue 16): edge cases."""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

from test_sse_footprint import Beat

from hubbub_server.heartbeat import Heartbeat
from hubbub_server.sse import ClientWatch


async def test_a_stream_opened_alone_while_draining_is_ended_once() -> None:
    drain = asyncio.Event()
    drain.set()
    heartbeat = Heartbeat(0.05, drain)
    late = Beat()
    heartbeat.watch(late)  # no other stream: this starts the heartbeat's task
    assert late.ends == 1
    await asyncio.sleep(0.2)  # a few intervals of the task
    heartbeat.unwatch(late)
    assert late.ends == 1  # "called once when the server starts draining"


class Stopped:
    """A stream that records being stopped."""

    def __init__(self) -> None:
        self.stops = 0

    def end(self) -> None:
        pass

    def stop(self) -> None:
        self.stops += 1


async def test_a_receive_that_keeps_answering_leaves_no_coroutine_unawaited() -> None:
    asked = 0

    async def receive() -> dict[str, Any]:  # a request body that keeps coming, never waiting
        nonlocal asked
        asked += 1
        return {"type": "http.request", "body": b"x", "more_body": True}

    stream = Stopped()
    watch = ClientWatch(receive, stream)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not watch.left()
        watch.close()
        gc.collect()
    assert asked >= 1
    assert stream.stops == 0
    unawaited = [w for w in caught if "never awaited" in str(w.message)]
    assert not unawaited, [str(w.message) for w in unawaited]


async def test_a_heartbeat_that_fails_starts_again_for_the_open_streams(
    monkeypatch: Any,
) -> None:
    heartbeat = Heartbeat(0.05, asyncio.Event())
    original = Heartbeat._run
    failures = []

    async def fails_once(self: Heartbeat) -> None:
        if not failures:
            failures.append(1)
            raise RuntimeError("boom")
        await original(self)

    monkeypatch.setattr(Heartbeat, "_run", fails_once)
    beat = Beat()
    heartbeat.watch(beat)
    heartbeat.watch(beat)  # twice: still one stream
    assert heartbeat.watched == 1
    await asyncio.sleep(0.3)
    assert failures == [1]
    assert beat.ticks >= 1  # ticked by the heartbeat that started again
    heartbeat.unwatch(beat)
    assert heartbeat.watched == 0
