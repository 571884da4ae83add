"""A cache that falls back while running: ``[cache] backend = "redis"``, ``fallback = "memory"``.

Every call goes to the primary backend within a short timeout; when it fails or is late, the
same call is served by the fallback and a :class:`~hubbub.resilience.CircuitBreaker` counts the
failure. Once the breaker opens, calls go straight to the fallback (no request waits for a dead
Redis) until the breaker lets a probe through, and a probe that succeeds brings the primary
back. No call fails because the primary is down; health says ``degraded``, with the backend
serving now and why, while the fallback serves.

While degraded, entries live in each process's fallback: they are not shared, and what was in
the primary is not seen until it returns. Nothing durable lives only in the cache.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

from hubbub.contracts import CacheBackend
from hubbub.models import Health
from hubbub.resilience import CircuitBreaker

__all__ = ["FallbackCache"]

T = TypeVar("T")

logger = logging.getLogger("hubbub.cache")


class FallbackCache:
    """A :class:`~hubbub.contracts.CacheBackend` over ``primary`` that serves from
    ``fallback`` while ``primary`` fails.

    :param timeout: seconds a call to the primary may take before the fallback serves it.
    :param reset_timeout: seconds the primary is left alone after it failed
        ``failure_threshold`` times in a row, before one call probes it again.
    """

    def __init__(
        self,
        primary: CacheBackend,
        fallback: CacheBackend,
        *,
        primary_name: str,
        fallback_name: str,
        timeout: float = 0.25,
        failure_threshold: int = 3,
        reset_timeout: float = 1.0,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.primary_name = primary_name
        self.fallback_name = fallback_name
        self.timeout = timeout
        """Seconds a primary call may take before the fallback serves it."""
        self.breaker = CircuitBreaker(
            f"cache {primary_name}",
            failure_threshold=failure_threshold,
            reset_timeout=reset_timeout,
            is_failure=lambda exc: True,
            on_change=self._changed,
        )
        """Whether the primary is tried: open while it is down."""
        self.served_by_fallback = 0
        """Calls the fallback served because the primary failed, was late or was down."""

    def _changed(self, old: str, new: str, breaker: CircuitBreaker) -> None:
        if new == "open":
            logger.warning(
                "cache %s is failing (%s): %s serves until it is back",
                self.primary_name,
                breaker.last_error,
                self.fallback_name,
            )
        elif new == "closed":
            logger.info("cache %s is back", self.primary_name)

    async def _call(self, name: str, *args: Any) -> Any:
        if self.breaker.allow():
            try:
                async with asyncio.timeout(self.timeout):  # no task per call, as wait_for makes
                    result = await getattr(self.primary, name)(*args)
            except asyncio.CancelledError as exc:  # the caller gave up: no verdict on the
                self.breaker.record(exc)  # primary, but a half-open probe slot is given back
                raise
            except Exception as exc:  # failed or late: the fallback serves this call
                self.breaker.record_failure(exc)
            else:
                self.breaker.record_success()
                return result
        self.served_by_fallback += 1
        return await getattr(self.fallback, name)(*args)

    async def get(self, key: str) -> bytes | None:
        """The value under ``key`` (from the fallback while the primary is down)."""
        value: bytes | None = await self._call("get", key)
        return value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``."""
        await self._call("set", key, value, ttl)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        existed: bool = await self._call("delete", key)
        return existed

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to the integer under ``key``."""
        total: int = await self._call("incr", key, amount, ttl)
        return total

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent; whether it was stored."""
        stored: bool = await self._call("add", key, value, ttl)
        return stored

    async def compare_and_set(
        self, key: str, expected: bytes, value: bytes | None, ttl: float | None = None
    ) -> bool:
        """If ``key`` holds ``expected``, replace it with ``value`` (delete when ``None``)."""
        done: bool = await self._call("compare_and_set", key, expected, value, ttl)
        return done

    async def start(self) -> None:
        """Nothing: the runtime starts both backends."""

    async def health(self) -> Health:
        """The primary's health while it serves; ``degraded`` naming the fallback (and why)
        while the fallback serves."""
        if self.breaker.state == "open":
            return Health(
                status="degraded",
                backend=self.fallback_name,
                detail=f"{self.primary_name} is failing ({self.breaker.last_error}); "
                f"{self.fallback_name} serves, {self.served_by_fallback} calls so far",
            )
        try:
            health = await asyncio.wait_for(self.primary.health(), self.timeout * 4)
        except Exception as exc:
            return Health(
                status="degraded",
                backend=self.fallback_name,
                detail=f"{self.primary_name} does not answer ({type(exc).__name__}); "
                f"{self.fallback_name} serves",
            )
        if health.status != "ok":
            return Health(
                status="degraded",
                backend=self.fallback_name,
                detail=f"{self.primary_name}: {health.detail}; {self.fallback_name} serves",
            )
        return health

    async def aclose(self) -> None:
        """Close the primary (the runtime closes the fallback)."""
        await self.primary.aclose()
