"""The memory store's sweeper: deletes what has expired and what retention no longer keeps.

A runtime component (health ``sweeper``) with one background task: every
``[retention] sweep_interval`` seconds it takes a lease in the cache and, holding it, calls
:meth:`hubbub.contracts.MemoryStore.purge` batch after batch (``batch_size`` items, one short
transaction each, yielding to the event loop in between) until a batch comes back short. With
several processes on one store and one shared cache, one of them sweeps per interval; with a
per-process cache each sweeps, which is harmless (deletes are idempotent), only wasteful.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress

from hubbub.config import RetentionConfig
from hubbub.contracts import CacheBackend, MemoryStore
from hubbub.models import Health, new_id

__all__ = ["Sweeper"]

logger = logging.getLogger("hubbub.memory.sweeper")

LEASE_KEY = "hubbub:sweeper:lease"
DAY = 86_400.0


class Sweeper:
    """Sweeps one store on a schedule; :meth:`sweep` runs one sweep now."""

    def __init__(
        self,
        store: MemoryStore,
        cache: CacheBackend,
        config: RetentionConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._cache = cache
        self.config = config
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._token = new_id().encode()
        self.deleted = 0
        """Items deleted by this process's sweeps since start."""
        self.last_sweep: float | None = None
        """When this process last swept (Unix seconds)."""
        self._failure: str | None = None
        self._closed = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="memory sweeper")

    async def health(self) -> Health:
        if self._failure is not None:
            return Health(status="degraded", detail=f"last sweep failed: {self._failure}")
        if self.last_sweep is None:
            return Health(detail=f"every {self.config.sweep_interval:g} s; not swept here yet")
        return Health(
            detail=f"every {self.config.sweep_interval:g} s; {self.deleted} deleted here since "
            "start"
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        # ``_closed`` is checked after every wait: a client library that swallows a
        # cancellation (redis-py can) must not keep the loop alive.
        while not self._closed:
            try:
                if await self._lease() and not self._closed:
                    await self.sweep(renew=self._renew)
                self._failure = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failure = f"{type(exc).__name__}: {exc}"
                logger.warning("sweep failed: %s", self._failure)
            if not self._closed:
                await asyncio.sleep(self.config.sweep_interval)

    async def _lease(self) -> bool:
        """Whether this process sweeps now: it holds the lease until the interval ends."""
        ttl = self.config.sweep_interval
        cache = self._cache
        if await cache.add(LEASE_KEY, self._token, ttl=ttl):
            return True
        # A process that swept last time renews its own lease rather than waiting it out.
        return await cache.compare_and_set(LEASE_KEY, self._token, self._token, ttl=ttl)

    async def _renew(self) -> None:
        ttl = self.config.sweep_interval
        await self._cache.compare_and_set(LEASE_KEY, self._token, self._token, ttl=ttl)

    async def sweep(self, *, renew: Callable[[], Awaitable[None]] | None = None) -> int:
        """Delete everything due now, batch after batch; return how many items went.
        ``renew`` is awaited between batches (the scheduled sweep renews its lease, so a long
        sweep is never joined by another process's)."""
        config = self.config
        moment = self._clock()
        idle = config.conversation_idle_days
        idle_before = moment - idle * DAY if idle is not None else None
        total = 0
        began = time.perf_counter()
        while True:
            deleted = await self.store.purge(
                now=moment, idle_before=idle_before, limit=config.batch_size
            )
            total += deleted
            if deleted < config.batch_size or self._closed:
                break
            if renew is not None:
                await renew()
            await asyncio.sleep(0)  # let requests in between two batches
        self.deleted += total
        self.last_sweep = moment
        if total:
            logger.info(
                "swept %d expired items in %.1f ms",
                total,
                (time.perf_counter() - began) * 1000,
                extra={"deleted": total},
            )
        return total
