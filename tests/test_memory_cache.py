"""The in-process cache backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hubbub_plugins.memory_cache import MemoryCache, MemoryCacheSettings


@pytest.fixture
async def cache() -> AsyncIterator[MemoryCache]:
    backend = MemoryCache(MemoryCacheSettings())
    await backend.start()
    yield backend
    await backend.aclose()


async def test_values_round_trip_and_expire(cache: MemoryCache) -> None:
    await cache.set("k", b"v", ttl=0.05)
    assert await cache.get("k") == b"v"
    await asyncio.sleep(0.1)
    assert await cache.get("k") is None
    assert await cache.delete("k") is False


async def test_counters_count_and_read_back_as_bytes(cache: MemoryCache) -> None:
    assert [await cache.incr("c"), await cache.incr("c", 5)] == [1, 6]
    assert await cache.get("c") == b"6"


async def test_concurrent_increments_are_all_counted(cache: MemoryCache) -> None:
    results = await asyncio.gather(*(cache.incr("n", ttl=10) for _ in range(200)))
    assert sorted(results) == list(range(1, 201))


async def test_a_window_counter_never_loses_its_expiry(cache: MemoryCache) -> None:
    """A key that expires while increments race must come back with its TTL, or a
    fixed-window rate limit would never reset."""

    async def hammer(key: str) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + 0.2
        while loop.time() < end:
            await cache.incr(key, ttl=0.005)

    await asyncio.gather(*(hammer(f"w{i}") for i in range(20)))
    await asyncio.sleep(0.05)
    assert [await cache.get(f"w{i}") for i in range(20)] == [None] * 20


async def test_add_stores_only_when_absent_and_one_of_many_wins(cache: MemoryCache) -> None:
    assert await cache.add("lease", b"first", ttl=10) is True
    assert await cache.add("lease", b"second", ttl=10) is False
    assert await cache.get("lease") == b"first"
    outcomes = await asyncio.gather(*(cache.add("race", str(i).encode()) for i in range(100)))
    assert outcomes.count(True) == 1
    assert await cache.add("brief", b"a", ttl=0.05) is True
    await asyncio.sleep(0.1)
    assert await cache.add("brief", b"b") is True  # the expired entry counts as absent


async def test_compare_and_set_touches_only_the_expected_value(cache: MemoryCache) -> None:
    assert await cache.compare_and_set("k", b"mine", b"x") is False  # absent
    assert await cache.get("k") is None
    await cache.set("k", b"theirs")
    assert await cache.compare_and_set("k", b"mine", None) is False
    assert await cache.get("k") == b"theirs"
    assert await cache.compare_and_set("k", b"theirs", b"mine", ttl=0.05) is True
    assert await cache.get("k") == b"mine"
    await asyncio.sleep(0.1)
    assert await cache.get("k") is None  # the new ttl applied
    await cache.set("k", b"mine")
    assert await cache.compare_and_set("k", b"mine", None) is True
    assert await cache.get("k") is None


async def test_renewals_and_releases_racing_one_holder_never_both_win(cache: MemoryCache) -> None:
    await cache.set("lease", b"a")
    outcomes = await asyncio.gather(
        *(cache.compare_and_set("lease", b"a", b"b" if i % 2 else None) for i in range(50))
    )
    assert outcomes.count(True) == 1
