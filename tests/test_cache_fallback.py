"""``[cache] backend = "redis"``, ``fallback = "memory"`` against a real ``redis-server`` that
is killed and restarted under load: no call fails, health says who serves, Redis comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from redis_support import RedisServer

from hubbub.runtime import Runtime


def toml(server: RedisServer) -> str:
    return (
        f'[redis]\nurl = "{server.url}"\ntimeout = 1\n'
        '[cache]\nbackend = "redis"\nfallback = "memory"\ntimeout = 0.2\n'
    )


async def test_a_cache_whose_redis_dies_serves_from_memory_and_recovers(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer
) -> None:
    async with make_runtime(toml(redis_server)) as runtime:
        cache = runtime.cache
        health = (await runtime.health()).components["cache"]
        assert (health.status, health.backend) == ("ok", "redis")
        assert "cache.fallback" in (await runtime.health()).components
        failures: list[BaseException] = []
        done = asyncio.Event()

        async def load() -> int:
            calls = 0
            while not done.is_set():
                try:
                    await cache.set(f"k{calls % 50}", b"v", 60)
                    await cache.get(f"k{calls % 50}")
                    await cache.incr("hits")
                except Exception as exc:
                    failures.append(exc)
                calls += 1
                await asyncio.sleep(0.001)
            return calls

        worker = asyncio.create_task(load())
        await asyncio.sleep(0.3)
        redis_server.kill()
        killed = time.monotonic()
        while (await runtime.health()).components["cache"].status != "degraded":
            assert time.monotonic() - killed < 5, "health never said degraded"
            await asyncio.sleep(0.05)
        took = time.monotonic() - killed
        degraded = (await runtime.health()).components["cache"]
        assert degraded.backend == "memory"
        assert "redis" in degraded.detail
        assert (await runtime.health()).status == "degraded"  # not down: requests are served
        await asyncio.sleep(0.5)
        redis_server.start()  # empty, same port
        back = time.monotonic()
        while (await runtime.health()).components["cache"].status != "ok":
            assert time.monotonic() - back < 15, "the cache never came back to redis"
            await asyncio.sleep(0.1)
        await cache.set("after", b"redis", 60)
        done.set()
        calls = await worker
    assert failures == []  # no call failed because Redis was down
    assert calls > 100
    assert took < 3  # generous: the breaker opens after three failed calls of at most 0.2 s
    import redis

    assert redis.Redis.from_url(redis_server.url).get("hubbub:cache:after") == b"redis"
