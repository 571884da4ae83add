"""A typed cache over any :class:`~hubbub.contracts.CacheBackend`: namespaced keys, values
encoded with msgspec, and one computation per key under concurrent misses.

Components get one from the runtime (``runtime.cache_for("weather")``), so it serves from
whatever backend is configured, Redis with its in-process fallback included::

    class Forecast(msgspec.Struct):
        city: str
        celsius: float

    cache = runtime.cache_for("weather")            # keys become "weather:<key>"
    await cache.set("paris", Forecast("Paris", 21.5), ttl=300)
    forecast = await cache.get("paris", Forecast)  # a Forecast, or None

    async def fetch() -> Forecast:
        return await weather_service.forecast("Lyon")

    # one fetch per key in this process however many requests miss at once
    lyon = await cache.get_or_set("lyon", fetch, Forecast, ttl=300)

Values are MessagePack (msgspec) behind a one-byte format marker, decoded as the ``type`` the
caller names (a msgspec ``Struct``, ``int``, ``str``, ``list[...]``, ``dict[...]``...). An
entry that does not decode as that type (corrupted, written by other code, or by an older
version with another type) is a miss: it is logged once at warning with its key (never its
value) and removed, and :meth:`Cache.get_or_set` stores a fresh value over it. Errors of the
backend itself (Redis unreachable and no ``[cache] fallback``) propagate as the backend raises
them.

What the cache holds is never the only copy of anything: it may be evicted, expire early, or,
while a Redis cache is degraded to its in-process fallback, differ between processes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from hubbub.contracts import CacheBackend
from hubbub.errors import InvalidRequestError

__all__ = ["FORMAT", "MAX_KEY_LENGTH", "Cache", "InvalidCacheKeyError"]

T = TypeVar("T")

logger = logging.getLogger("hubbub.cache")

FORMAT = b"\x01"
"""First byte of every value the facade writes (format 1: MessagePack follows). Counters
written by :meth:`Cache.incr` are the backend's decimal digits, which never start with it."""

MAX_KEY_LENGTH = 1024
"""Most characters of a key, its namespace included."""

_encoder = msgspec.msgpack.Encoder()

_FLIGHTS: weakref.WeakKeyDictionary[Any, dict[tuple[str, Any], asyncio.Task[Any]]] = (
    weakref.WeakKeyDictionary()
)
"""The computations under way, per backend, shared by every facade over that backend (weakly:
a backend that goes away takes its entry along)."""


class InvalidCacheKeyError(InvalidRequestError, ValueError):
    """A cache key or namespace is empty, too long, or holds control characters."""


class _Unreadable(Exception):
    """An entry that does not decode as the type asked for."""


@functools.lru_cache(maxsize=256)
def _decoder(kind: Any) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(kind)


def _decode(raw: bytes, kind: Any) -> Any:
    if raw[:1] == FORMAT:
        try:
            decoder = _decoder(kind)
        except TypeError:  # an unhashable type: decode without caching the decoder
            decoder = msgspec.msgpack.Decoder(kind)
        try:
            return decoder.decode(memoryview(raw)[1:])
        except msgspec.DecodeError as exc:  # ValidationError included
            raise _Unreadable(type(exc).__name__) from None
    if kind is int:  # a counter made by incr(): the backend's decimal digits
        try:
            return int(raw)
        except (TypeError, ValueError):
            pass
    raise _Unreadable("not written by hubbub.cache.Cache")


def _checked(part: str, what: str) -> str:
    if not isinstance(part, str) or not part:
        raise InvalidCacheKeyError(f"a cache {what} must be a non-empty string", field=what)
    if len(part) > MAX_KEY_LENGTH:
        raise InvalidCacheKeyError(
            f"a cache {what} must be at most {MAX_KEY_LENGTH} characters, not {len(part)}",
            field=what,
        )
    if not part.isprintable():
        raise InvalidCacheKeyError(
            f"a cache {what} must not contain control characters: {part!r}", field=what
        )
    return part


def _checked_namespace(name: str) -> str:
    _checked(name, "namespace")
    if any(not segment for segment in name.split(":")):
        raise InvalidCacheKeyError(
            f"a cache namespace must not have an empty part between colons: {name!r}",
            field="namespace",
        )
    return name


def _checked_ttl(ttl: float | None) -> float | None:
    if ttl is not None and not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"a cache ttl must be a finite number of seconds above 0, not {ttl!r}")
    return ttl


def _flights_for(backend: CacheBackend) -> dict[tuple[str, Any], asyncio.Task[Any]]:
    try:
        return _FLIGHTS.setdefault(backend, {})
    except TypeError:  # neither weakly referenceable nor hashable: flights per facade
        return {}


class Cache:
    """Typed, namespaced access to a :class:`~hubbub.contracts.CacheBackend`.

    Every key is stored as ``<namespace>:<key>`` (``<namespace>:<sub>:<key>`` through
    :meth:`namespace`). A key is a non-empty string of at most :data:`MAX_KEY_LENGTH`
    characters, namespace included, without control characters; a namespace is the same
    without empty parts between colons. Anything else raises :class:`InvalidCacheKeyError` (a
    ``ValueError``). A ``ttl`` is seconds above 0, or ``None`` for no expiry.

    ::

        cache = Cache(runtime.cache, "sessions")
        await cache.set("abc", {"user": "ada"}, ttl=60)
        assert await cache.get("abc", dict[str, str]) == {"user": "ada"}
        assert await cache.namespace("v2").get("abc", dict[str, str]) is None

    :param backend: the backend that stores the entries (``runtime.cache``).
    :param namespace: the prefix of every key.
    """

    def __init__(self, backend: CacheBackend, namespace: str) -> None:
        self.backend = backend
        """The backend that stores the entries."""
        self.name = _checked_namespace(namespace)
        """This facade's namespace (``ns`` or ``ns:sub``)."""
        self._prefix = namespace + ":"
        self._flights = _flights_for(backend)

    def __repr__(self) -> str:
        return f"<Cache {self.name!r} over {type(self.backend).__name__}>"

    def namespace(self, name: str) -> Cache:
        """A facade over the same backend whose keys are ``<this namespace>:<name>:<key>``."""
        return Cache(self.backend, f"{self.name}:{_checked_namespace(name)}")

    def key(self, key: str) -> str:
        """The backend key of ``key``: ``<namespace>:<key>``, checked."""
        full = self._prefix + _checked(key, "key")
        if len(full) > MAX_KEY_LENGTH:
            raise InvalidCacheKeyError(
                f"a cache key with its namespace must be at most {MAX_KEY_LENGTH} characters, "
                f"not {len(full)}",
                field="key",
            )
        return full

    async def get(self, key: str, type: type[T]) -> T | None:
        """The value under ``key`` decoded as ``type``, or ``None`` when absent, expired, or
        unreadable as ``type`` (then logged and removed). A stored ``None`` also reads as
        ``None``."""
        _, value = await self._lookup(self.key(key), type)
        found: T | None = value
        return found

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` (anything msgspec encodes) under ``key``, expiring after ``ttl``
        seconds. A value msgspec cannot encode raises its ``TypeError``."""
        full = self.key(key)
        await self.backend.set(full, FORMAT + _encoder.encode(value), _checked_ttl(ttl))

    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        return await self.backend.delete(self.key(key))

    async def add(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent (atomically, across processes on a shared
        backend); whether it was stored."""
        full = self.key(key)
        return await self.backend.add(full, FORMAT + _encoder.encode(value), _checked_ttl(ttl))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to the counter under ``key`` (0 when absent), atomically, and return
        the new value; ``ttl`` applies only when this call creates the counter. Read it back
        with ``get(key, int)``."""
        return await self.backend.incr(self.key(key), amount, _checked_ttl(ttl))

    async def get_or_set(
        self,
        key: str,
        compute: Callable[[], Awaitable[T]],
        type: type[T],
        ttl: float | None = None,
    ) -> T:
        """The value under ``key`` as ``type``; on a miss, ``await compute()``, store its result
        (expiring after ``ttl`` seconds) and return it.

        Concurrent misses on the same key (and type) in this process run ``compute`` once: the
        others wait for the same result. ``compute`` runs in its own task, so a caller that is
        cancelled stops waiting without cancelling it for the others (it finishes, and its value
        is stored, even if every caller went away). An exception from ``compute`` (or from
        storing its value) reaches every waiter and nothing is stored: the next call computes
        again.

        ::

            async def load() -> Profile:
                return await store.profile(user_id)

            profile = await cache.get_or_set(f"profile:{user_id}", load, Profile, ttl=60)
        """
        full = self.key(key)
        ttl = _checked_ttl(ttl)
        try:
            flight_key: tuple[str, Any] = (full, type)
            hash(flight_key)
        except TypeError:  # an unhashable type: flights keyed by its identity
            flight_key = (full, id(type))
        flight = self._flights.get(flight_key)
        if flight is None:
            found, value = await self._lookup(full, type)
            if found:
                hit: T = value
                return hit
            flight = self._flights.get(flight_key)  # one may have started while we read
            if flight is None:
                flight = asyncio.ensure_future(self._fill(full, compute, ttl))
                self._flights[flight_key] = flight
                flight.add_done_callback(functools.partial(self._landed, flight_key))
        result: T = await asyncio.shield(flight)
        return result

    async def _fill(self, full: str, compute: Callable[[], Awaitable[T]], ttl: float | None) -> T:
        value = await compute()
        await self.backend.set(full, FORMAT + _encoder.encode(value), ttl)
        return value

    def _landed(self, flight_key: tuple[str, Any], task: asyncio.Task[Any]) -> None:
        if self._flights.get(flight_key) is task:
            del self._flights[flight_key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    async def _lookup(self, full: str, kind: Any) -> tuple[bool, Any]:
        """``(True, value)`` for a readable entry, ``(False, None)`` for a miss."""
        raw = await self.backend.get(full)
        if raw is None:
            return False, None
        try:
            return True, _decode(raw, kind)
        except _Unreadable as exc:
            await self._discard(full, raw, kind, str(exc))
            return False, None

    async def _discard(self, full: str, raw: bytes, kind: Any, why: str) -> None:
        """Log an unreadable entry (its key, never its value) and remove it unless it changed
        meanwhile."""
        logger.warning(
            "cache entry %r is not a valid %s (%s): treated as a miss and removed",
            full,
            getattr(kind, "__name__", repr(kind)),
            why,
            extra={"cache_key": full},
        )
        try:
            await self.backend.compare_and_set(full, raw, None)
        except Exception as exc:  # the next write replaces it anyway
            logger.debug("could not remove unreadable cache entry %r: %s", full, exc)
