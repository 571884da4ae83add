"""Bad conditions for ``[cache] backend = "redis"``, ``fallback = "memory"``, against real
``redis-server`` processes, through the runtime-built :class:`~hubbub.cache.FallbackCache` and
the typed facade: Redis answering slowly (``DEBUG SLEEP``), Redis restarted empty, a corrupted
entry written straight into Redis, and a probe whose caller is cancelled. (Redis killed under
load: tests/test_cache_fallback.py.)"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis
import redis.asyncio
from redis_support import RedisServer, asleep

from hubbub.cache import FallbackCache
from hubbub.runtime import Runtime

T = TypeVar("T")

TIMEOUT = 0.2
"""``[cache] timeout``: how long a call waits for Redis before memory serves it."""


def toml(server: RedisServer) -> str:
    return (
        f'[redis]\nurl = "{server.url}"\ntimeout = 1\n'
        f'[cache]\nbackend = "redis"\nfallback = "memory"\ntimeout = {TIMEOUT}\n'
    )


async def status(runtime: Runtime) -> str:
    return (await runtime.health()).components["cache"].status


def state(fallback: FallbackCache) -> str:
    """The breaker's state now (a call, so that type checkers do not narrow it)."""
    return fallback.breaker.state


async def wait_for_status(runtime: Runtime, wanted: str, within: float) -> float:
    began = time.monotonic()
    while await status(runtime) != wanted:
        assert time.monotonic() - began < within, f"the cache never became {wanted}"
        await asyncio.sleep(0.05)
    return time.monotonic() - began


async def test_a_slow_redis_is_answered_for_by_memory_within_the_timeout(
    make_runtime: Callable[..., Runtime], debug_redis: RedisServer
) -> None:
    async with make_runtime(toml(debug_redis)) as runtime:
        fallback = runtime.cache
        assert isinstance(fallback, FallbackCache)
        cache = runtime.cache_for("slow")
        await cache.set("before", "in redis", ttl=60)
        assert await status(runtime) == "ok"

        sleeper = redis.Redis(port=debug_redis.port)
        sleeping = asyncio.create_task(
            asyncio.to_thread(sleeper.execute_command, "DEBUG", "SLEEP", 3)
        )
        while not asleep(debug_redis):
            assert not sleeping.done(), "DEBUG SLEEP returned before Redis was seen asleep"
            await asyncio.sleep(0.02)
        began = time.monotonic()
        served_before = fallback.served_by_fallback
        durations: list[float] = []

        async def timed(call: Awaitable[T]) -> T:
            start = time.perf_counter()
            result = await call
            durations.append(time.perf_counter() - start)
            return result

        for i in range(5):  # one after another, then many at once
            await timed(cache.set(f"during{i}", i, ttl=60))
        read = await asyncio.gather(*(timed(cache.get(f"during{i}", int)) for i in range(5)))
        counted = await asyncio.gather(*(timed(cache.incr("hits")) for _ in range(10)))
        assert read == [0, 1, 2, 3, 4]  # written to memory, read back from memory
        assert sorted(counted) == list(range(1, 11))
        assert await status(runtime) == "degraded"
        health = (await runtime.health()).components["cache"]
        assert health.backend == "memory"
        assert time.monotonic() - began < 2.5, "the calls were made while Redis slept"
        assert asleep(debug_redis)  # still asleep: no call above waited for it
        await sleeping

    # every call was answered in about the timeout, not the 3 s Redis slept (generous margin)
    assert len(durations) == 20
    assert max(durations) < TIMEOUT + 1.0, durations
    assert fallback.served_by_fallback - served_before >= 20


async def test_a_slow_redis_recovers_to_ok_without_a_restart(
    make_runtime: Callable[..., Runtime],
    debug_redis: RedisServer,
) -> None:
    async with make_runtime(toml(debug_redis)) as runtime:
        cache = runtime.cache_for("slow")
        sleeper = redis.Redis(port=debug_redis.port)
        sleeping = asyncio.create_task(
            asyncio.to_thread(sleeper.execute_command, "DEBUG", "SLEEP", 2)
        )
        while not asleep(debug_redis):
            assert not sleeping.done(), "DEBUG SLEEP returned before Redis was seen asleep"
            await asyncio.sleep(0.02)
        for i in range(5):
            await cache.set(f"k{i}", i)
        assert await status(runtime) == "degraded"
        await sleeping
        await wait_for_status(runtime, "ok", within=15)
        for _ in range(100):  # the next calls go to Redis again once a probe succeeded
            await cache.set("after", "redis", ttl=60)
            if redis.Redis(port=debug_redis.port).get("hubbub:cache:slow:after"):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("writes never reached Redis again")
        health = (await runtime.health()).components["cache"]
        assert (health.status, health.backend) == ("ok", "redis")


async def test_redis_restarted_empty_is_a_miss_never_an_error(
    make_runtime: Callable[..., Runtime],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hubbub.cache")
    async with make_runtime(toml(redis_server)) as runtime:
        cache = runtime.cache_for("restart")
        computed = 0

        async def compute() -> str:
            nonlocal computed
            computed += 1
            return "fresh"

        assert await cache.get_or_set("page", compute, str, ttl=60) == "fresh"
        assert await cache.get_or_set("page", compute, str, ttl=60) == "fresh"
        assert computed == 1
        await cache.set("old", "before the restart", ttl=60)
        failures: list[BaseException] = []
        done = asyncio.Event()

        async def load() -> int:
            calls = 0
            while not done.is_set():
                try:
                    await cache.set(f"k{calls % 20}", calls, ttl=60)
                    await cache.get(f"k{calls % 20}", int)
                    await cache.get_or_set("page", compute, str, ttl=60)
                    await cache.incr("n")
                except Exception as exc:
                    failures.append(exc)
                calls += 1
                await asyncio.sleep(0.002)
            return calls

        # a burst first: the pool keeps more connections than the steady load uses, and the
        # idle ones are what a restart leaves dead
        await asyncio.gather(*(cache.get(f"k{i}", int) for i in range(64)))
        workers = [asyncio.create_task(load()) for _ in range(16)]
        await asyncio.sleep(0.3)
        fallback = runtime.cache
        assert isinstance(fallback, FallbackCache)
        served = fallback.served_by_fallback
        redis_server.kill()
        # Until memory serves, the calls that were in flight when Redis died have not all
        # failed yet: restarting before would let their late failures open the breaker after
        # the restart (a race a slower machine loses).
        waited = 0.0
        while fallback.served_by_fallback == served:
            assert waited < 15, "memory never took over"
            await asyncio.sleep(0.02)
            waited += 0.02
        await asyncio.sleep(0.1)
        redis_server.start()  # on the same port, empty
        await wait_for_status(runtime, "ok", within=15)
        await asyncio.gather(*(cache.get(f"k{i}", int) for i in range(64)))  # every connection
        await asyncio.sleep(0.3)  # load goes on against the empty Redis
        done.set()
        calls = sum(await asyncio.gather(*workers))
        assert failures == []
        assert calls > 30
        # what was written before the restart is gone: a miss, and computed again
        assert await cache.get("old", str) is None
        assert computed >= 2
        raw = redis.Redis(port=redis_server.port)
        assert raw.get("hubbub:cache:restart:page") is not None  # stored in the new Redis
        assert raw.get("hubbub:cache:restart:old") is None
    # once back, Redis stays in use: the connections the restart left dead were dropped, not
    # each failing a call (three in a row opened the breaker again)
    changes = [r.getMessage() for r in caplog.records if r.name == "hubbub.cache"]
    back = [i for i, message in enumerate(changes) if message == "cache redis is back"]
    assert back, changes
    assert not any("is failing" in message for message in changes[back[0] :]), changes


async def test_a_corrupted_entry_in_redis_is_a_logged_miss(
    make_runtime: Callable[..., Runtime],
    redis_server: RedisServer,
    redis_client: redis.asyncio.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with make_runtime(toml(redis_server)) as runtime:
        cache = runtime.cache_for("users")
        await cache.set("ada", {"name": "Ada"}, ttl=60)
        await redis_client.set("hubbub:cache:users:ada", b"\x01\xc1 password=hunter2")
        with caplog.at_level(logging.WARNING, logger="hubbub.cache"):
            assert await cache.get("ada", dict[str, str]) is None
        assert await redis_client.exists("hubbub:cache:users:ada") == 0  # removed
        warnings = [r.getMessage() for r in caplog.records if r.name == "hubbub.cache"]
        assert len(warnings) == 1
        assert "users:ada" in warnings[0]
        assert "hunter2" not in warnings[0]
        assert await status(runtime) == "ok"  # a bad entry is not a failing Redis


async def test_a_cancelled_probe_does_not_leave_redis_unused(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer
) -> None:
    """The one call allowed to probe a recovering Redis is cancelled by its caller: the next
    call must probe again (before the fix the probe slot was never given back, every later
    call went to memory for good, and health still said ok)."""
    async with make_runtime(toml(redis_server)) as runtime:
        fallback = runtime.cache
        assert isinstance(fallback, FallbackCache)
        cache = runtime.cache_for("probe")
        redis_server.kill()
        breaker = fallback.breaker
        for _ in range(100):
            await cache.set("k", 1)
            if breaker.state == "open":
                break
        assert breaker.state == "open"
        redis_server.start()
        while state(fallback) != "half_open":
            assert fallback.breaker.retry_after() < 5, "the breaker never let a probe through"
            await asyncio.sleep(0.05)
        probe = asyncio.create_task(cache.get("k", int))
        await asyncio.sleep(0)  # the probe is under way: waiting for Redis's answer
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        for _ in range(100):
            await cache.set("after", "redis", ttl=60)
            if state(fallback) == "closed":
                break
            await asyncio.sleep(0.05)
        assert state(fallback) == "closed"
        assert redis.Redis(port=redis_server.port).get("hubbub:cache:probe:after") is not None
