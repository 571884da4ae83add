"""The ``redis`` cache backend, against a real ``redis-server``: the contract's operations (the
atomic ones included), its key prefix, health, and clear errors when Redis is away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio
from redis_support import RedisServer

from hubbub.errors import ComponentError, ConfigError
from hubbub.runtime import Runtime


def redis_toml(server: RedisServer, extra: str = "") -> str:
    return f'[cache]\nbackend = "redis"\n[redis]\nurl = "{server.url}"\ntimeout = 2\n' + extra


@pytest.fixture
async def runtime(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer
) -> AsyncIterator[Runtime]:
    async with make_runtime(redis_toml(redis_server)) as started:
        yield started


async def eventually_none(runtime: Runtime, key: str) -> bool:
    for _ in range(100):  # up to 5 s: expiry, not its timing, is what is tested
        if await runtime.cache.get(key) is None:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_the_runtime_serves_its_cache_from_redis_under_a_prefix(
    runtime: Runtime, redis_client: redis.asyncio.Redis
) -> None:
    cache = runtime.cache
    await cache.set("greeting", b"hello")
    assert await cache.get("greeting") == b"hello"
    assert await redis_client.get("hubbub:cache:greeting") == b"hello"
    assert await redis_client.ttl("hubbub:cache:greeting") == -1  # no ttl: never expires
    assert await cache.delete("greeting") is True
    assert await cache.delete("greeting") is False
    assert await cache.get("greeting") is None
    health = await runtime.health()
    assert health.components["cache"].status == "ok"
    assert health.components["cache"].backend == "redis"
    assert "PING" in health.components["cache"].detail


async def test_values_expire(runtime: Runtime, redis_client: redis.asyncio.Redis) -> None:
    await runtime.cache.set("short", b"v", ttl=0.2)
    assert 0 < await redis_client.pttl("hubbub:cache:short") <= 200
    assert await eventually_none(runtime, "short")


async def test_counters_count_and_take_their_ttl_when_created(
    runtime: Runtime, redis_client: redis.asyncio.Redis
) -> None:
    cache = runtime.cache
    assert [await cache.incr("c", ttl=60), await cache.incr("c", 5, ttl=1)] == [1, 6]
    assert await cache.get("c") == b"6"
    assert (
        1000 < await redis_client.pttl("hubbub:cache:c") <= 60_000
    )  # the second ttl did not apply
    assert await cache.incr("plain") == 1
    assert await cache.incr("plain", ttl=60) == 2  # not created by this call: no ttl
    assert await redis_client.pttl("hubbub:cache:plain") == -1
    results = await asyncio.gather(*(cache.incr("n") for _ in range(100)))
    assert sorted(results) == list(range(1, 101))


async def test_add_stores_only_when_absent_and_one_of_many_wins(
    make_runtime: Callable[..., Runtime],
    redis_server: RedisServer,
    redis_client: redis.asyncio.Redis,
) -> None:
    async with (
        make_runtime(redis_toml(redis_server)) as one,
        make_runtime(redis_toml(redis_server)) as two,
    ):
        assert await one.cache.add("lease", b"first", ttl=30) is True
        assert await two.cache.add("lease", b"second", ttl=30) is False
        assert await two.cache.get("lease") == b"first"
        assert 0 < await redis_client.pttl("hubbub:cache:lease") <= 30_000
        outcomes = await asyncio.gather(
            *(
                cache.add("race", str(i).encode(), ttl=30)
                for i in range(40)
                for cache in (one.cache, two.cache)
            )
        )
        assert outcomes.count(True) == 1
        # an expired entry is absent: add succeeds again
        assert await one.cache.add("brief", b"a", ttl=0.1) is True
        assert await eventually_none(one, "brief")
        assert await two.cache.add("brief", b"b") is True


async def test_compare_and_set_touches_only_the_expected_value(
    runtime: Runtime, redis_client: redis.asyncio.Redis
) -> None:
    cache = runtime.cache
    assert await cache.compare_and_set("k", b"mine", b"renewed", ttl=30) is False  # absent
    assert await cache.get("k") is None
    await cache.set("k", b"theirs", ttl=30)
    assert await cache.compare_and_set("k", b"mine", None) is False
    assert await cache.compare_and_set("k", b"mine", b"x", ttl=1) is False
    assert await cache.get("k") == b"theirs"
    assert await cache.compare_and_set("k", b"theirs", b"mine", ttl=60) is True
    assert await cache.get("k") == b"mine"
    assert 30_000 < await redis_client.pttl("hubbub:cache:k") <= 60_000  # the ttl was renewed
    assert await cache.compare_and_set("k", b"mine", b"forever") is True
    assert await redis_client.pttl("hubbub:cache:k") == -1
    assert await cache.compare_and_set("k", b"forever", None) is True
    assert await redis_client.exists("hubbub:cache:k") == 0


async def test_the_prefix_is_a_setting(
    make_runtime: Callable[..., Runtime],
    redis_server: RedisServer,
    redis_client: redis.asyncio.Redis,
) -> None:
    text = redis_toml(redis_server, '[plugins.redis_cache]\nprefix = "team-a:"\n')
    async with make_runtime(text) as runtime:
        await runtime.cache.set("k", b"v")
    keys = await redis_client.keys("*")
    assert b"team-a:k" in keys
    assert all(key.startswith(b"team-a:") for key in keys), keys  # the sweeper's lease too


async def test_redis_going_away_is_a_clear_error_and_coming_back_heals(
    runtime: Runtime, redis_server: RedisServer
) -> None:
    await runtime.cache.set("k", b"v")
    redis_server.kill()
    with pytest.raises(ComponentError) as caught:
        await runtime.cache.get("k")
    message = str(caught.value)
    assert message.startswith(f"the Redis cache at {redis_server.url} failed to read 'k': ")
    assert "Traceback" not in message
    for operation in (
        runtime.cache.set("k", b"v"),
        runtime.cache.add("k", b"v"),
        runtime.cache.incr("k"),
        runtime.cache.compare_and_set("k", b"v", None),
        runtime.cache.delete("k"),
    ):
        with pytest.raises(ComponentError, match=r"^the Redis cache at .* failed to "):
            await operation
    health = await runtime.health()
    assert health.components["cache"].status == "down"
    assert "Redis at" in health.components["cache"].detail
    redis_server.start()  # same port, empty
    assert await runtime.cache.add("k", b"back") is True
    assert (await runtime.health()).components["cache"].status == "ok"


async def test_the_password_stays_out_of_messages(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer
) -> None:
    url = redis_server.url.replace("redis://", "redis://:s3cret@")
    redis_server.kill()  # nothing answers: starting fails, and says where without the secret
    with pytest.raises(ComponentError) as caught:
        async with make_runtime(
            f'[cache]\nbackend = "redis"\n[redis]\nurl = "{url}"\ntimeout = 1\n'
        ):
            pass
    assert "s3cret" not in str(caught.value)
    assert "Redis cache at redis://:***@127.0.0.1" in str(caught.value)


async def test_a_redis_cache_without_a_redis_url_is_a_configuration_error(
    make_runtime: Callable[..., Runtime],
) -> None:
    with pytest.raises(ConfigError, match=r"redis\.url.*cache\.backend uses Redis"):
        async with make_runtime('[cache]\nbackend = "redis"\n'):
            pass
