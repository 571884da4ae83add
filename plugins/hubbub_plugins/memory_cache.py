"""In-process cache backend ``memory``, on aiocache's ``SimpleMemoryCache``, bounded.

Fast and dependency-free, but private to one process: with several server processes use a shared
backend (Redis) and keep ``memory`` as its ``fallback``. The store
(:class:`hubbub_plugins.memory_cache_store.BoundedMemoryCache`, a subclass of aiocache's) holds
at most ``max_entries`` entries and ``max_bytes`` bytes, evicting the least recently used first;
an expired entry is never returned, and expired entries are reclaimed a few at a time by one
timer, at a cost proportional to what expires, never to what is held. A value larger than
``max_bytes`` on its own is not stored (a ``set`` of one also removes the key's older value).

Every operation runs without yielding to the event loop, so ``incr``, ``add`` and
``compare_and_set`` are atomic with respect to every other call in this process.

::

    [cache]
    backend = "memory"

    [plugins.memory_cache]
    max_entries = 100_000
    max_bytes = 67_108_864   # 64 MiB
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from hubbub import hookimpl
from hubbub.errors import ComponentError
from hubbub.models import Health

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar
    from hubbub_plugins.memory_cache_store import BoundedMemoryCache, CacheStats

__all__ = ["MemoryCache", "MemoryCacheSettings"]


class MemoryCacheSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``memory_cache`` plugin (``[plugins.memory_cache]``)."""

    max_entries: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] = 100_000
    """Most entries held at once (1 to 1,000,000,000); past it the least recently used entry
    is evicted."""
    max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=2**40)] = 64 * 2**20
    """Most bytes held at once (1 KiB to 1 TiB; default 64 MiB), counting each entry's key and
    value plus about 256 bytes of Python's own per entry; past it the least recently used
    entries are evicted. A value larger than this on its own is not stored."""


class _NotStarted:
    """Stands in for the store until :meth:`MemoryCache.start`: every use says so."""

    def __getattr__(self, name: str) -> Any:
        raise ComponentError("the memory cache is not started")


class MemoryCache:
    """A :class:`hubbub.contracts.CacheBackend` kept in this process's memory, bounded by
    entries and bytes (least recently used evicted first)."""

    def __init__(self, settings: MemoryCacheSettings) -> None:
        self.settings = settings
        self._store: BoundedMemoryCache = _NotStarted()  # type: ignore[assignment]

    @property
    def stats(self) -> CacheStats:
        """Entries and bytes held, evictions, expirations, refused values so far."""
        return self._store.stats()

    async def start(self) -> None:
        """Create the store (aiocache is imported here: it is slow to import)."""
        from hubbub_plugins.memory_cache_store import BoundedMemoryCache

        self._store = BoundedMemoryCache(
            max_entries=self.settings.max_entries, max_bytes=self.settings.max_bytes
        )

    async def health(self) -> Health:
        """``ok`` with what is held and what was evicted or expired."""
        if isinstance(self._store, _NotStarted):
            return Health(status="down", detail="not started")
        s = self._store.stats()
        return Health(
            detail=f"in-process: {s.entries:,} of {self.settings.max_entries:,} entries, "
            f"{s.bytes:,} of {self.settings.max_bytes:,} bytes; {s.evictions:,} evicted, "
            f"{s.expirations:,} expired, {s.refused:,} too large"
        )

    async def aclose(self) -> None:
        """Drop every entry."""
        if not isinstance(self._store, _NotStarted):
            self._store.clear_all()
            self._store = _NotStarted()  # type: ignore[assignment]

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``, or ``None`` when absent or expired (a counter as its
        decimal bytes, as Redis returns it)."""
        value = self._store.read(key)
        if isinstance(value, int):
            return str(value).encode()
        return value  # type: ignore[no-any-return]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` (not stored when larger than ``max_bytes``)."""
        self._store.write(key, value, ttl)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        return self._store.remove(key)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` atomically (``ttl`` applies only when this call creates the key)."""
        try:
            return self._store.count(key, amount, ttl)
        except TypeError as exc:
            raise ComponentError(f"the memory cache cannot increment {key!r}: {exc}") from None

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent; whether it was stored."""
        return self._store.write_new(key, value, ttl)

    async def compare_and_set(
        self, key: str, expected: bytes, value: bytes | None, ttl: float | None = None
    ) -> bool:
        """If ``key`` holds ``expected``, replace it with ``value`` (delete when ``None``)."""
        return self._store.compare_and_write(key, expected, value, ttl)


@hookimpl
def register_cache_backends(register: Registrar) -> None:
    def build(context: ComponentContext[MemoryCacheSettings]) -> MemoryCache:
        return MemoryCache(context.settings)

    register(
        "memory",
        build,
        settings=MemoryCacheSettings,
        description="in-process cache (aiocache memory backend), bounded, LRU eviction",
    )
