"""The timing of a graceful stop (:class:`ShutdownPlan`) and the cut of a stream in progress
(:meth:`Shutdown.cut_off`), in-process; ``test_shutdown.py`` runs the whole stop over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from hubbub_server.shutdown import Shutdown, ShutdownPlan, StreamCut


def test_the_plan_fits_in_the_grace_period() -> None:
    plan = ShutdownPlan(10, stop_timeout=5, drain_timeout=30)
    plan.begin(at=100.0)
    assert plan.reserve == 2.5  # a quarter of the grace period, at most stop_timeout
    assert plan.cut_at == 107.5
    assert plan.replies_at == 107.5  # drain_timeout caps it, never extends it
    assert plan.connections_at == 108.0  # half a second for final chunks
    assert plan.exit_at == 110.0
    short = ShutdownPlan(10, stop_timeout=1, drain_timeout=3)
    short.begin(at=0.0)
    assert (short.cut_at, short.replies_at, short.connections_at) == (9.0, 3.0, 9.5)
    assert not short.begin(at=5.0)  # once
    assert short.exit_at == 10.0


def test_a_plan_without_grace_cuts_at_once() -> None:
    plan = ShutdownPlan(0, stop_timeout=5, drain_timeout=10)
    plan.begin(at=1.0)
    assert plan.cut_at == plan.replies_at == plan.connections_at == plan.exit_at == 1.0


async def _slow() -> AsyncIterator[int]:
    for number in range(100):
        await asyncio.sleep(0.1)
        yield number


async def test_a_stream_waiting_for_an_item_is_cut_when_the_grace_period_runs_out() -> None:
    drain = asyncio.Event()
    shutdown = Shutdown(ShutdownPlan(0.4, stop_timeout=5, drain_timeout=10), drain)
    got: list[int] = []

    async def read() -> None:
        async for number in shutdown.cut_off(_slow()):
            got.append(number)

    reading = asyncio.ensure_future(read())
    await asyncio.sleep(0.25)
    began = time.monotonic()
    shutdown.begin()  # cut 0.3 s from now (0.4 s minus the reserve of 0.1 s)
    assert drain.is_set()
    with pytest.raises(StreamCut):
        await reading
    assert 0.2 < time.monotonic() - began < 2.0
    assert 3 <= len(got) < 10  # items until the cut, not all 100


async def test_a_timeout_of_the_items_own_is_not_a_cut() -> None:
    shutdown = Shutdown(ShutdownPlan(10, stop_timeout=5, drain_timeout=10), asyncio.Event())

    async def timing_out() -> AsyncIterator[int]:
        yield 1
        raise TimeoutError("the provider took too long")

    items = shutdown.cut_off(timing_out())
    assert await anext(items) == 1
    with pytest.raises(TimeoutError, match="provider"):
        await anext(items)
