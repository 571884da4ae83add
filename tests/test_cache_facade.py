"""The typed cache facade (``runtime.cache_for(namespace)``, :class:`hubbub.cache.Cache`) over
the ``memory`` backend and over the ``redis`` backend on a real ``redis-server``: typed values,
namespaces, expiry, the atomic operations, one computation per key under concurrent misses,
and unreadable entries treated as misses."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from hubbub.cache import Cache, InvalidCacheKeyError
from hubbub.cache.facade import FORMAT, MAX_KEY_LENGTH
from hubbub.runtime import Runtime


class Forecast(msgspec.Struct):
    city: str
    celsius: float
    tags: list[str] = []


@pytest.fixture(params=["memory", "redis"])
async def runtime(
    request: pytest.FixtureRequest, make_runtime: Callable[..., Runtime]
) -> AsyncIterator[Runtime]:
    """A started runtime whose cache backend is ``memory`` or ``redis`` (a real server)."""
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        text = f'[cache]\nbackend = "redis"\n[redis]\nurl = "{server.url}"\ntimeout = 2\n'
    else:
        text = '[cache]\nbackend = "memory"\n'
    async with make_runtime(text) as started:
        yield started


@pytest.fixture
def cache(runtime: Runtime) -> Cache:
    return runtime.cache_for("test")


async def eventually_none(cache: Cache, key: str) -> bool:
    for _ in range(200):  # up to 10 s: expiry, not its timing, is what is tested
        if await cache.get(key, str) is None:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_values_come_back_as_the_type_asked_for(cache: Cache, runtime: Runtime) -> None:
    paris = Forecast("Paris", 21.5, ["sunny"])
    await cache.set("paris", paris)
    await cache.set("count", 3)
    await cache.set("scores", {"a": 1.5, "b": 2.0})
    await cache.set("ids", [3, 1, 2])
    assert await cache.get("paris", Forecast) == paris
    assert await cache.get("count", int) == 3
    assert await cache.get("scores", dict[str, float]) == {"a": 1.5, "b": 2.0}
    assert await cache.get("ids", list[int]) == [3, 1, 2]
    assert await cache.get("absent", Forecast) is None
    raw = await runtime.cache.get("test:paris")  # the backend holds marker + MessagePack
    assert raw is not None
    assert raw[:1] == FORMAT
    assert msgspec.msgpack.decode(raw[1:], type=Forecast) == paris
    assert await cache.delete("paris") is True
    assert await cache.delete("paris") is False
    assert await cache.get("paris", Forecast) is None
    with pytest.raises(TypeError):
        await cache.set("odd", object())


async def test_namespaces_keep_entries_apart(cache: Cache, runtime: Runtime) -> None:
    sub = cache.namespace("v2")
    assert sub.name == "test:v2"
    await cache.set("k", "outer")
    await sub.set("k", "inner")
    await runtime.cache_for("other").set("k", "elsewhere")
    assert await cache.get("k", str) == "outer"
    assert await sub.get("k", str) == "inner"
    assert await runtime.cache_for("test:v2").get("k", str) == "inner"  # same namespace
    assert await runtime.cache.get("test:v2:k") is not None  # the key the backend sees
    await sub.delete("k")
    assert await cache.get("k", str) == "outer"


async def test_entries_expire(cache: Cache) -> None:
    await cache.set("short", "v", ttl=0.1)
    await cache.set("long", "v", ttl=60)
    assert await cache.get("short", str) == "v"
    assert await eventually_none(cache, "short")
    assert await cache.get("long", str) == "v"


async def test_add_and_incr_are_atomic(cache: Cache) -> None:
    assert await cache.add("lease", "first", ttl=30) is True
    assert await cache.add("lease", "second", ttl=30) is False
    assert await cache.get("lease", str) == "first"
    outcomes = await asyncio.gather(*(cache.add("race", i, ttl=30) for i in range(50)))
    assert outcomes.count(True) == 1
    counts = await asyncio.gather(*(cache.incr("hits", ttl=30) for _ in range(50)))
    assert sorted(counts) == list(range(1, 51))
    assert await cache.incr("hits", 10) == 60
    assert await cache.get("hits", int) == 60  # a counter reads back as an int
    assert await cache.incr("brief", ttl=0.1) == 1
    assert await eventually_none(cache, "brief")


async def test_concurrent_misses_compute_once(cache: Cache) -> None:
    calls = 0
    release = asyncio.Event()

    async def compute() -> Forecast:
        nonlocal calls
        calls += 1
        await release.wait()
        return Forecast("Lyon", 18.0)

    waiters = [asyncio.create_task(cache.get_or_set("lyon", compute, Forecast)) for _ in range(50)]
    await asyncio.sleep(0.2)  # every waiter has missed and joined the one computation
    release.set()
    results = await asyncio.gather(*waiters)
    assert calls == 1
    assert results == [Forecast("Lyon", 18.0)] * 50
    assert await cache.get_or_set("lyon", compute, Forecast) == Forecast("Lyon", 18.0)
    assert calls == 1  # served from the cache now
    assert await cache.get("lyon", Forecast) == Forecast("Lyon", 18.0)


async def test_a_failed_computation_reaches_every_waiter_and_is_not_cached(cache: Cache) -> None:
    calls = 0
    release = asyncio.Event()

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        raise LookupError("upstream said no")

    waiters = [asyncio.create_task(cache.get_or_set("k", failing, int)) for _ in range(10)]
    await asyncio.sleep(0.2)
    release.set()
    outcomes = await asyncio.gather(*waiters, return_exceptions=True)
    assert calls == 1
    assert all(isinstance(o, LookupError) for o in outcomes)
    assert await cache.get("k", int) is None

    async def working() -> int:
        return 7

    assert await cache.get_or_set("k", working, int) == 7  # computed again, then stored
    assert await cache.get("k", int) == 7


async def test_a_cancelled_first_caller_strands_nobody(cache: Cache) -> None:
    calls = 0
    release = asyncio.Event()

    async def compute() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "done"

    first = asyncio.create_task(cache.get_or_set("k", compute, str, ttl=60))
    await asyncio.sleep(0.1)
    others = [asyncio.create_task(cache.get_or_set("k", compute, str)) for _ in range(5)]
    await asyncio.sleep(0.1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await asyncio.gather(*others) == ["done"] * 5
    assert calls == 1
    assert await cache.get("k", str) == "done"


async def test_a_stored_none_is_a_hit_for_get_or_set(cache: Cache) -> None:
    calls = 0

    async def nothing() -> int | None:
        nonlocal calls
        calls += 1
        return None

    assert await cache.get_or_set("n", nothing, int | None) is None  # type: ignore[arg-type]
    assert await cache.get_or_set("n", nothing, int | None) is None  # type: ignore[arg-type]
    assert calls == 1


@pytest.mark.parametrize(
    "stored",
    [
        FORMAT + b"\xc1\xc1 not msgpack",  # corrupted
        FORMAT + msgspec.msgpack.encode({"city": 3}),  # wrong type for Forecast
        b"secret-value written by something else",  # not the facade's at all
    ],
)
async def test_an_unreadable_entry_is_a_logged_miss_and_is_removed(
    cache: Cache, runtime: Runtime, stored: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    await runtime.cache.set("test:bad", stored)
    with caplog.at_level(logging.WARNING, logger="hubbub.cache"):
        assert await cache.get("bad", Forecast) is None
        assert await cache.get("bad", Forecast) is None  # a plain miss now
    warnings = [r for r in caplog.records if r.name == "hubbub.cache"]
    assert len(warnings) == 1
    assert "test:bad" in warnings[0].getMessage()
    assert "secret-value" not in warnings[0].getMessage()
    assert "not msgpack" not in warnings[0].getMessage()
    assert await runtime.cache.get("test:bad") is None  # removed

    await runtime.cache.set("test:bad", stored)

    async def fresh() -> Forecast:
        return Forecast("Nice", 25.0)

    assert await cache.get_or_set("bad", fresh, Forecast) == Forecast("Nice", 25.0)
    assert await cache.get("bad", Forecast) == Forecast("Nice", 25.0)  # overwritten


async def test_an_entry_of_another_type_is_a_miss_not_an_exception(cache: Cache) -> None:
    await cache.set("k", "a string")
    assert await cache.get("k", int) is None
    await cache.incr("counter")
    assert await cache.get("counter", Forecast) is None


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "non-empty"),
        ("x" * MAX_KEY_LENGTH, "at most"),
        ("line\nbreak", "control characters"),
        ("nul\x00", "control characters"),
        ("bell\x07", "control characters"),
    ],
)
async def test_bad_keys_are_refused_before_reaching_the_backend(
    cache: Cache, runtime: Runtime, key: str, why: str
) -> None:
    with pytest.raises(InvalidCacheKeyError, match=why):
        await cache.set(key, "v")
    with pytest.raises(ValueError, match=why):  # InvalidCacheKeyError is a ValueError
        await cache.get(key, str)
    for name in ("", "a::b", "tab\there"):
        with pytest.raises(InvalidCacheKeyError):
            cache.namespace(name)
        with pytest.raises(InvalidCacheKeyError):
            runtime.cache_for(name)
    for ttl in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="ttl"):
            await cache.set("k", "v", ttl=ttl)
    assert await cache.get("k", str) is None


async def test_plugins_cannot_take_hubbubs_own_namespace(tmp_path: Path) -> None:
    from hubbub.cache import InvalidCacheKeyError
    from hubbub.testing import config_for, runtime_for

    async with runtime_for(config_for(tmp_path)) as runtime:
        for namespace in ("hubbub", "hubbub:reply"):
            with pytest.raises(InvalidCacheKeyError):
                runtime.cache_for(namespace)
        assert runtime.cache_for("hubbubs").key("k") == "hubbubs:k"
