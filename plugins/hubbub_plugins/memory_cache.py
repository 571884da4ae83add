"""In-process cache backend ``memory``, on aiocache's ``SimpleMemoryCache``.

Fast and dependency-free, but private to one process: with several server processes use a shared
backend (Redis) and keep ``memory`` as its ``fallback``. Expiry is timer-driven (no sweeps). The
atomic operations (``incr``, ``add``, ``compare_and_set``) are ordered by one lock, so they are
atomic with respect to each other; a plain ``set`` or ``delete`` racing them on the same key is
last-writer-wins.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from hubbub import hookimpl
from hubbub.models import Health

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar


class MemoryCacheSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``memory_cache`` plugin (``[plugins.memory_cache]``)."""

    namespace: str = "hubbub"
    """Prefix of every key, so several runtimes in one process do not share entries."""


class MemoryCache:
    """A :class:`hubbub.contracts.CacheBackend` kept in this process's memory."""

    def __init__(self, settings: MemoryCacheSettings) -> None:
        self.settings = settings
        self._cache: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        from aiocache import SimpleMemoryCache  # imported here: it is slow to import

        self._cache = SimpleMemoryCache(namespace=self.settings.namespace)

    async def health(self) -> Health:
        if self._cache is None:
            return Health(status="down", detail="not started")
        return Health(detail="in-process")

    async def aclose(self) -> None:
        if self._cache is not None:
            await self._cache.clear()
            await self._cache.close()
            self._cache = None

    async def get(self, key: str) -> bytes | None:
        value = await self._cache.get(key)
        if isinstance(value, int):  # a counter made by incr(); Redis returns these as bytes too
            return str(value).encode()
        return value  # type: ignore[no-any-return]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._cache.set(key, value, ttl=ttl)

    async def delete(self, key: str) -> bool:
        return bool(await self._cache.delete(key))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        # aiocache yields to the event loop inside each call, so the key can expire between
        # "add" failing and "increment": then increment recreates it without a TTL. The lock
        # orders our own calls; a result equal to ``amount`` means the key was (re)created here,
        # and it gets its TTL.
        async with self._lock:
            try:
                await self._cache.add(key, amount, ttl=ttl)
                return amount
            except ValueError:  # the key exists
                value = int(await self._cache.increment(key, amount))
            if ttl is not None and value == amount:
                await self._cache.expire(key, ttl)
            return value

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        # Under the lock, like every atomic operation here: aiocache yields inside its calls.
        async with self._lock:
            try:
                await self._cache.add(key, value, ttl=ttl)
            except ValueError:  # the key exists
                return False
            return True

    async def compare_and_set(
        self, key: str, expected: bytes, value: bytes | None, ttl: float | None = None
    ) -> bool:
        async with self._lock:
            if await self.get(key) != expected:
                return False
            if value is None:
                await self._cache.delete(key)
            else:
                await self._cache.set(key, value, ttl=ttl)
            return True


@hookimpl
def register_cache_backends(register: Registrar) -> None:
    def build(context: ComponentContext[MemoryCacheSettings]) -> MemoryCache:
        return MemoryCache(context.settings)

    register(
        "memory",
        build,
        settings=MemoryCacheSettings,
        description="in-process cache (aiocache memory backend)",
    )
