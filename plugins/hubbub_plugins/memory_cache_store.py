"""The store behind the ``memory`` cache backend: aiocache's ``SimpleMemoryCache``, bounded.

:class:`BoundedMemoryCache` subclasses aiocache's in-memory backend and replaces its storage
(a plain ``dict`` plus one event-loop timer per key) with:

* an ``OrderedDict`` in recency order: a read moves its entry to the end, and while the cache
  holds more than ``max_entries`` entries or ``max_bytes`` bytes the least recently used entry
  is evicted;
* exact expiry: every entry keeps its deadline, and a read of an entry past it removes it and
  answers "absent", so an expired entry is never returned, however late the loop runs;
* reclaiming without scans: each expiring entry sits in a bucket keyed by its deadline rounded
  up (to a power-of-two fraction of its TTL, at least 1/64 s), the buckets' times sit in a heap,
  and one loop timer, armed for the earliest bucket, removes the entries of due buckets at most
  :data:`REAP_BATCH` at a time. Work is proportional to the entries that expire, never to the
  entries alive, and no burst of expiries holds the loop for long.

Every method of the synchronous API (:meth:`~BoundedMemoryCache.read`,
:meth:`~BoundedMemoryCache.write`...) completes without yielding to the event loop, so a
read-modify-write made of them (increment, add, compare-and-set) is atomic in one event loop.
aiocache's own API (``await cache.get(key)``, namespaces, serializers, plugins) works on the same
entries through the overridden ``_get``/``_set``... primitives.

::

    cache = BoundedMemoryCache(max_entries=10_000, max_bytes=16 * 2**20)
    cache.write("k", b"v", ttl=30)
    assert cache.read("k") == b"v"
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import sys
from collections import OrderedDict
from time import monotonic
from typing import Any, NamedTuple

from aiocache import SimpleMemoryCache

__all__ = ["ENTRY_OVERHEAD", "REAP_BATCH", "BoundedMemoryCache", "CacheStats", "entry_size"]

logger = logging.getLogger("hubbub.cache.memory")

ENTRY_OVERHEAD = 256
"""Bytes counted for every entry on top of its key and value: about what Python spends on one
(the key and value objects' headers, the dict slot, the entry tuple; measured at 230 to 290
bytes with ``tracemalloc``)."""

REAP_BATCH = 256
"""Most expired entries removed in one go before the loop runs other work."""

MIN_BUCKET_EXPONENT = -6
"""Expiry buckets are at least 2**-6 s (1/64 s) wide."""


def entry_size(key: str, value: object) -> int:
    """The bytes an entry counts against ``max_bytes``: its key, its value and
    :data:`ENTRY_OVERHEAD`."""
    if isinstance(value, (bytes, bytearray, str)):
        length = len(value)
    elif isinstance(value, int):
        length = 8
    else:
        length = sys.getsizeof(value)
    return len(key) + length + ENTRY_OVERHEAD


def _bucket(deadline: float, ttl: float) -> float:
    """The time of the expiry bucket of an entry expiring at ``deadline`` after ``ttl``
    seconds: ``deadline`` rounded up to a power of two near ``ttl / 16`` (at least 1/64 s), so
    an entry is reclaimed at most about 1/16 of its TTL late (reads never see it late)."""
    exponent = max(math.frexp(ttl / 16)[1] - 1, MIN_BUCKET_EXPONENT)
    width = math.ldexp(1.0, exponent)
    return math.ceil(deadline / width) * width


class Entry(NamedTuple):
    """One cached value."""

    value: Any
    """What is stored (bytes through the hubbub backend; an ``int`` for a counter)."""
    deadline: float
    """:func:`time.monotonic` time it expires at; 0: never."""
    size: int
    """Bytes it counts against ``max_bytes`` (:func:`entry_size`)."""
    bucket: float
    """Time of the expiry bucket holding its key; 0: none."""


class CacheStats(NamedTuple):
    """What a :class:`BoundedMemoryCache` holds and has done."""

    entries: int
    """Entries held now (expired ones not yet reclaimed included)."""
    bytes: int
    """Bytes they count against ``max_bytes``."""
    evictions: int
    """Entries removed to keep within ``max_entries`` and ``max_bytes``."""
    expirations: int
    """Entries removed because they expired (on a read, or by the reaper)."""
    refused: int
    """Values not stored because one entry alone would exceed ``max_bytes``."""
    reaper_checks: int
    """Entries the reaper looked at: one per expired entry it removed."""


class BoundedMemoryCache(SimpleMemoryCache):  # type: ignore[misc]  # aiocache is untyped
    """aiocache's ``SimpleMemoryCache`` bounded by entries and bytes, least recently used
    evicted first, with exact expiry reclaimed incrementally.

    A value larger than ``max_bytes`` on its own is refused: not stored, counted in
    :attr:`CacheStats.refused`, and :meth:`write` removes what the key held before (a later read
    never returns an older value); nothing else is evicted for it.

    :param max_entries: most entries held at once (at least 1).
    :param max_bytes: most bytes held at once, as :func:`entry_size` counts them.
    :param kwargs: aiocache's options (``namespace``, ``serializer``, ``plugins``...), used by
        its ``async`` API only.
    """

    def __init__(self, *, max_entries: int, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be at least 1")
        self.max_entries = max_entries
        """Most entries held at once."""
        self.max_bytes = max_bytes
        """Most bytes held at once (:func:`entry_size`)."""
        self._cache: OrderedDict[str, Entry] = OrderedDict()
        self._bytes = 0
        self._buckets: dict[float, set[str]] = {}
        self._due: list[float] = []  # heap of the buckets' times, each once
        self._timer: asyncio.Handle | None = None
        self._timer_at = math.inf
        self._evictions = 0
        self._expirations = 0
        self._refused = 0
        self._reaper_checks = 0
        self._warned_refused = False

    # -- synchronous API: none of these yields to the event loop ---------------------------

    def stats(self) -> CacheStats:
        """Counts of what is held and what was removed so far."""
        return CacheStats(
            len(self._cache),
            self._bytes,
            self._evictions,
            self._expirations,
            self._refused,
            self._reaper_checks,
        )

    def read(self, key: str) -> Any:
        """The value under ``key`` (now the most recently used), or ``None`` when absent or
        expired."""
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.deadline and entry.deadline <= monotonic():
            self._drop(key, entry)
            self._expirations += 1
            return None
        self._cache.move_to_end(key)
        return entry.value

    def live(self, key: str) -> Entry | None:
        """The entry under ``key`` unless absent or expired (an expired one is removed);
        recency is left as it was."""
        entry = self._cache.get(key)
        if entry is not None and entry.deadline and entry.deadline <= monotonic():
            self._drop(key, entry)
            self._expirations += 1
            return None
        return entry

    def write(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` under ``key`` as the most recently used entry, expiring after
        ``ttl`` seconds (never when ``None`` or 0), evicting the least recently used entries
        while over a bound. ``False`` when the value alone exceeds ``max_bytes``: then nothing
        is stored and the key's previous value is removed."""
        old = self._cache.pop(key, None)
        if old is not None:
            self._forget(key, old)
        size = entry_size(key, value)
        if size > self.max_bytes:
            self._refuse(key, size)
            return False
        if ttl:
            deadline = monotonic() + ttl
            bucket = _bucket(deadline, ttl)
            self._cache[key] = Entry(value, deadline, size, bucket)
            self._schedule(key, bucket)
        else:
            self._cache[key] = Entry(value, 0.0, size, 0.0)
        self._bytes += size
        if self._bytes > self.max_bytes or len(self._cache) > self.max_entries:
            self._evict()
        return True

    def write_new(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """:meth:`write` only if ``key`` is absent (or expired); whether it stored. A value
        larger than ``max_bytes`` is refused (``False``) and changes nothing."""
        if self.live(key) is not None:
            return False
        if entry_size(key, value) > self.max_bytes:
            self._refuse(key, entry_size(key, value))
            return False
        return self.write(key, value, ttl)

    def count(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to the integer under ``key`` (0 when absent) and return the sum.
        ``ttl`` applies only when this creates the key; an existing key keeps its expiry.
        Raises :class:`TypeError` when the value is not an integer (or its decimal bytes)."""
        entry = self.live(key)
        if entry is None:
            self.write(key, amount, ttl)
            return amount
        try:
            total = int(entry.value) + amount
        except (TypeError, ValueError):
            raise TypeError(f"the value under {key!r} is not an integer") from None
        size = entry_size(key, total)
        self._bytes += size - entry.size
        self._cache[key] = entry._replace(value=total, size=size)
        self._cache.move_to_end(key)
        if self._bytes > self.max_bytes:
            self._evict()
        return total

    def compare_and_write(
        self, key: str, expected: Any, value: Any | None, ttl: float | None = None
    ) -> bool:
        """If ``key`` holds ``expected`` now, store ``value`` (remove the key when ``None``);
        whether it did. A counter compares as its decimal bytes. A ``value`` larger than
        ``max_bytes`` is refused (``False``) and the key keeps ``expected``."""
        entry = self.live(key)
        if entry is None:
            return False
        current = entry.value
        if isinstance(current, int) and isinstance(expected, bytes):
            current = str(current).encode()
        if current != expected:
            return False
        if value is None:
            self.remove(key)
            return True
        if entry_size(key, value) > self.max_bytes:
            self._refuse(key, entry_size(key, value))
            return False
        return self.write(key, value, ttl)

    def set_ttl(self, key: str, ttl: float | None) -> bool:
        """Make ``key`` expire ``ttl`` seconds from now (never when ``None`` or 0); whether it
        exists."""
        entry = self.live(key)
        if entry is None:
            return False
        self._forget(key, entry)
        self._bytes += entry.size  # _forget took it off; the entry stays
        if ttl:
            deadline = monotonic() + ttl
            bucket = _bucket(deadline, ttl)
            self._cache[key] = entry._replace(deadline=deadline, bucket=bucket)
            self._schedule(key, bucket)
        else:
            self._cache[key] = entry._replace(deadline=0.0, bucket=0.0)
        return True

    def remove(self, key: str) -> bool:
        """Remove ``key``; whether it held a live (unexpired) value."""
        entry = self._cache.pop(key, None)
        if entry is None:
            return False
        self._forget(key, entry)
        if entry.deadline and entry.deadline <= monotonic():
            self._expirations += 1
            return False
        return True

    def clear_all(self) -> None:
        """Remove every entry and stop the reaper's timer."""
        self._cache.clear()
        self._buckets.clear()
        self._due.clear()
        self._bytes = 0
        self._disarm()

    # -- bookkeeping -----------------------------------------------------------------------

    def _forget(self, key: str, entry: Entry) -> None:
        """Take ``entry`` (already out of the dict) off the byte count and its bucket. An
        emptied bucket stays until due, so that its time is in the heap once."""
        self._bytes -= entry.size
        if entry.bucket:
            bucket = self._buckets.get(entry.bucket)
            if bucket is not None:
                bucket.discard(key)

    def _drop(self, key: str, entry: Entry) -> None:
        del self._cache[key]
        self._forget(key, entry)

    def _refuse(self, key: str, size: int) -> None:
        self._refused += 1
        if not self._warned_refused:  # once: the count is in the health detail
            self._warned_refused = True
            logger.warning(
                "memory cache: an entry of %d bytes (key %r) exceeds max_bytes (%d) and is "
                "not stored; later ones are only counted",
                size,
                key,
                self.max_bytes,
            )

    def _evict(self) -> None:
        now = monotonic()
        cache = self._cache
        while self._bytes > self.max_bytes or len(cache) > self.max_entries:
            key, entry = cache.popitem(last=False)
            self._forget(key, entry)
            if entry.deadline and entry.deadline <= now:
                self._expirations += 1
            else:
                self._evictions += 1

    def _schedule(self, key: str, bucket: float) -> None:
        keys = self._buckets.get(bucket)
        if keys is None:
            self._buckets[bucket] = {key}
            heapq.heappush(self._due, bucket)
            if bucket < self._timer_at:
                self._arm()
        else:
            keys.add(key)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = math.inf

    def _arm(self, *, now: bool = False) -> None:
        """Arm the reaper's timer for the earliest bucket (``now``: at the next loop turn)."""
        self._disarm()
        if not self._due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # used outside a loop: reads still expire entries exactly
            return
        if now:
            self._timer, self._timer_at = loop.call_soon(self._reap), -math.inf
        else:
            at = self._due[0]
            delay = max(0.0, at - monotonic())
            self._timer, self._timer_at = loop.call_later(delay, self._reap), at

    def _reap(self) -> None:
        """Remove the entries of due buckets, at most :data:`REAP_BATCH`, then re-arm."""
        self._timer, self._timer_at = None, math.inf
        now = monotonic()
        budget = REAP_BATCH
        due, buckets, cache = self._due, self._buckets, self._cache
        while due and due[0] <= now and budget:
            at = due[0]
            keys = buckets[at]
            if not keys:
                heapq.heappop(due)
                del buckets[at]
                continue
            key = keys.pop()
            budget -= 1
            self._reaper_checks += 1
            entry = cache.get(key)
            if entry is not None and entry.bucket == at:  # always: a bucket holds its entries
                del cache[key]
                self._bytes -= entry.size
                self._expirations += 1
        self._arm(now=budget == 0)

    # -- aiocache's primitives, over the same entries ---------------------------------------

    async def _get(self, key: str, encoding: str = "utf-8", _conn: Any = None) -> Any:
        return self.read(key)

    async def _gets(self, key: str, encoding: str = "utf-8", _conn: Any = None) -> Any:
        return self.read(key)

    async def _multi_get(self, keys: list[str], encoding: str = "utf-8", _conn: Any = None) -> Any:
        return [self.read(key) for key in keys]

    async def _set(
        self,
        key: str,
        value: Any,
        ttl: float | None = None,
        _cas_token: Any = None,
        _conn: Any = None,
    ) -> Any:
        if _cas_token is not None:
            entry = self.live(key)
            if entry is None or entry.value != _cas_token:
                return 0
        self.write(key, value, ttl)
        return True

    async def _multi_set(
        self, pairs: list[tuple[str, Any]], ttl: float | None = None, _conn: Any = None
    ) -> Any:
        for key, value in pairs:
            self.write(key, value, ttl)
        return True

    async def _add(self, key: str, value: Any, ttl: float | None = None, _conn: Any = None) -> Any:
        if self.live(key) is not None:
            raise ValueError(f"Key {key} already exists, use .set to update the value")
        self.write(key, value, ttl)
        return True

    async def _exists(self, key: str, _conn: Any = None) -> Any:
        return self.live(key) is not None

    async def _increment(self, key: str, delta: int, _conn: Any = None) -> Any:
        return self.count(key, delta)

    async def _expire(self, key: str, ttl: float | None, _conn: Any = None) -> Any:
        return self.set_ttl(key, ttl)

    async def _delete(self, key: str, _conn: Any = None) -> Any:
        return int(self.remove(key))

    async def _clear(self, namespace: str | None = None, _conn: Any = None) -> Any:
        if namespace:
            for key in [k for k in self._cache if k.startswith(namespace)]:
                self.remove(key)
        else:
            self.clear_all()
        return True

    async def _raw(self, command: str, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the bounded memory cache has no raw commands")

    async def _redlock_release(self, key: str, value: Any) -> Any:
        return int(self.compare_and_write(key, value, None))

    async def _close(self, *args: Any, **kwargs: Any) -> None:
        self._disarm()
