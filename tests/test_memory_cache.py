"""The in-process cache backend: the contract's operations, its bounds (entries, bytes, least
recently used evicted first), exact expiry, and reclaiming at a cost proportional to what
expires."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from hubbub.errors import ComponentError, ConfigError
from hubbub.runtime import Runtime
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
            await asyncio.sleep(0)  # the backend never yields: let the others race

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


# -- bounds, eviction, expiry (issue 17) ------------------------------------------------------


async def started(**settings: int) -> MemoryCache:
    backend = MemoryCache(MemoryCacheSettings(**settings))
    await backend.start()
    return backend


async def test_the_least_recently_used_entry_is_evicted_and_a_read_refreshes_it() -> None:
    cache = await started(max_entries=3)
    for key in "abc":
        await cache.set(key, key.encode())
    assert await cache.get("a") == b"a"  # now b is the least recently used
    await cache.set("d", b"d")
    assert [await cache.get(k) for k in "abcd"] == [b"a", None, b"c", b"d"]
    # those reads left a, c, d in that order; a write counts as a use too
    await cache.set("a", b"A")
    await cache.incr("n")  # c goes
    assert [await cache.get(k) for k in "cdan"] == [None, b"d", b"A", b"1"]
    assert cache.stats.entries == 3
    assert cache.stats.evictions == 2
    await cache.aclose()


async def test_the_byte_bound_evicts_oldest_first_and_counts_keys_values_and_overhead() -> None:
    from hubbub_plugins.memory_cache_store import entry_size

    one = entry_size("k0", b"x" * 1000)
    cache = await started(max_bytes=3 * one + 10)
    for i in range(3):
        await cache.set(f"k{i}", b"x" * 1000)
    assert cache.stats.bytes == 3 * one
    await cache.get("k0")
    await cache.set("k3", b"x" * 1000)
    assert [await cache.get(f"k{i}") is not None for i in range(4)] == [True, False, True, True]
    await cache.set("k0", b"y")  # a smaller value frees its bytes
    assert cache.stats.bytes == 2 * one + entry_size("k0", b"y")
    await cache.delete("k2")
    assert cache.stats.bytes == one + entry_size("k0", b"y")
    assert cache.stats.evictions == 1
    await cache.aclose()


async def test_a_value_larger_than_max_bytes_is_not_stored_and_evicts_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = await started(max_bytes=4096)
    await cache.set("small", b"s")
    await cache.set("big", b"old")
    await cache.set("big", b"x" * 5000)  # refused: the old value must not survive either
    assert await cache.get("big") is None
    assert await cache.get("small") == b"s"  # nothing was evicted to make room
    assert await cache.add("huge", b"x" * 5000) is False
    assert await cache.get("huge") is None
    await cache.set("lease", b"mine")
    assert await cache.compare_and_set("lease", b"mine", b"x" * 5000) is False
    assert await cache.get("lease") == b"mine"  # a refused swap changes nothing
    stats = cache.stats
    assert (stats.refused, stats.evictions, stats.entries) == (3, 0, 2)
    refusals = [r for r in caplog.records if "exceeds max_bytes" in r.getMessage()]
    assert len(refusals) == 1  # logged once; later ones are counted
    assert "xxxx" not in refusals[0].getMessage()  # the key, never the value
    assert "too large" in (await cache.health()).detail
    await cache.aclose()


async def test_an_expired_entry_is_never_returned_even_when_the_loop_was_busy() -> None:
    """No timer can run while the loop is blocked: the read itself must see the deadline."""
    cache = await started()
    await cache.set("k", b"v", ttl=0.02)
    await cache.set("n", b"5", ttl=0.02)
    assert await cache.add("lease", b"a", ttl=0.02) is True
    time.sleep(0.05)  # noqa: ASYNC251 - blocks the loop past every deadline, on purpose
    assert await cache.get("k") is None
    assert await cache.incr("n") == 1  # a new counter, not 6
    assert await cache.compare_and_set("lease", b"a", b"b") is False
    assert await cache.add("lease", b"c") is True
    assert cache.stats.expirations == 3
    await cache.aclose()


async def test_a_counter_keeps_its_expiry_when_incremented() -> None:
    cache = await started()
    assert await cache.incr("w", ttl=0.05) == 1
    assert await cache.incr("w", ttl=100) == 2  # the ttl applies only to a new counter
    time.sleep(0.08)  # noqa: ASYNC251 - no timer may run: the read must see the deadline
    assert await cache.get("w") is None
    await cache.set("text", b"abc")
    with pytest.raises(ComponentError, match="not an integer"):
        await cache.incr("text")
    await cache.set("digits", b"41")
    assert await cache.incr("digits") == 42
    await cache.aclose()


async def test_many_short_lived_entries_are_reclaimed_without_looking_at_the_others() -> None:
    """The reaper's work is proportional to what expires: 20,000 entries held (half with a
    long TTL), 500 short-lived; it looks at 500 entries, not 20,500, and nobody reads them."""
    cache = await started()
    for i in range(10_000):
        await cache.set(f"forever{i}", b"v")
        await cache.set(f"long{i}", b"v", ttl=3600)
    for i in range(500):
        await cache.set(f"short{i}", b"v", ttl=0.01 + i * 0.0001)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30  # generous: counted work, not its timing, is what is tested
    while cache.stats.expirations < 500:
        assert loop.time() < deadline, f"only {cache.stats.expirations} reclaimed"
        await asyncio.sleep(0.02)
    stats = cache.stats
    assert stats.entries == 20_000
    assert stats.expirations == 500
    assert stats.reaper_checks == 500
    assert stats.evictions == 0
    await cache.aclose()


async def test_overwritten_and_deleted_entries_are_not_reclaimed_twice() -> None:
    cache = await started()
    for _ in range(50):  # one hot key rewritten: one live entry, not 50 pending expiries
        await cache.set("hot", b"v", ttl=0.01)
    await cache.set("gone", b"v", ttl=0.01)
    await cache.delete("gone")
    await cache.set("kept", b"v", ttl=0.01)
    await cache.set("kept", b"v")  # no longer expires
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while cache.stats.expirations < 1:
        assert loop.time() < deadline
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert cache.stats.reaper_checks == 1  # only "hot"
    assert await cache.get("kept") == b"v"
    await cache.aclose()


async def test_the_store_is_an_aiocache_cache_with_the_same_bounds() -> None:
    from hubbub_plugins.memory_cache_store import BoundedMemoryCache

    store = BoundedMemoryCache(max_entries=2, max_bytes=2**20, namespace="ns")
    await store.set("a", "1")
    await store.set("b", "2", ttl=60)
    assert await store.get("a") == "1"
    await store.set("c", "3")
    assert await store.exists("b") is False  # evicted: least recently used
    assert await store.get("a") == "1"
    with pytest.raises(ValueError, match="already exists"):
        await store.add("a", "again")
    assert await store.increment("hits", 2) == 2
    assert await store.expire("hits", 60) is True
    assert store.stats().entries == 2
    await store.clear()
    assert store.stats().entries == 0


async def test_the_settings_bound_the_cache_built_by_the_runtime(
    make_runtime: Callable[..., Runtime],
) -> None:
    text = '[cache]\nbackend = "memory"\n[plugins.memory_cache]\nmax_entries = 2\n'
    async with make_runtime(text) as runtime:
        for key in "abc":
            await runtime.cache.set(key, b"v")
        assert await runtime.cache.get("a") is None
        detail = (await runtime.health()).components["cache"].detail
        assert "2 of 2 entries" in detail
        assert "0 evicted" not in detail
    with pytest.raises(ConfigError, match="max_entries"):
        make_runtime("[plugins.memory_cache]\nmax_entries = 0\n")
