"""Cache backend ``redis``: entries in the Redis of ``[redis] url``, shared by every process.

Select it with ``[cache] backend = "redis"`` (and ``[redis] url``). Keys are stored under a prefix
(``hubbub:cache:`` unless ``[plugins.redis_cache] prefix`` says otherwise). ``add`` is
``SET NX PX``; ``incr`` and ``compare_and_set`` are small Lua scripts, so each is one atomic step
on the server. Health is a ``PING`` (with its round trip in the detail). When Redis cannot be
reached an operation raises :class:`hubbub.errors.ComponentError` naming Redis and the operation
(the server answers 503), unless ``[cache] fallback = "memory"`` is set: then
:class:`hubbub.cache.FallbackCache` serves that call from memory and health says ``degraded``
until Redis is back. Values are bytes here; components use the typed facade
(:class:`hubbub.cache.Cache`, ``runtime.cache_for(namespace)``), which encodes them with msgspec.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from hubbub import hookimpl
from hubbub.errors import ComponentError
from hubbub.models import Health
from hubbub.redis import ping_health, redacted_url, redis_url, shared_redis

if TYPE_CHECKING:
    import redis.asyncio

    from hubbub.registry import ComponentContext, Registrar

__all__ = ["RedisCache", "RedisCacheSettings"]

# KEYS[1]: the key; ARGV[1]: amount; ARGV[2]: ttl in ms (0: none), applied when the key is new.
_INCR = """
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
"""

# KEYS[1]: the key; ARGV[1]: expected value; ARGV[2]: "set" or "del"; ARGV[3]: new value;
# ARGV[4]: ttl in ms (0: none).
_COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == 'del' then
  redis.call('DEL', KEYS[1])
elseif tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
"""


class RedisCacheSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``redis_cache`` plugin (``[plugins.redis_cache]``)."""

    prefix: str = "hubbub:cache:"
    """Prefix of every key, so hubbub's entries stay apart from anything else in the database
    (and several deployments can share one Redis with different prefixes)."""


def _ms(ttl: float | None) -> int:
    """``ttl`` seconds in whole milliseconds, rounded up (0: no expiry)."""
    return math.ceil(ttl * 1000) if ttl else 0


class RedisCache:
    """A :class:`hubbub.contracts.CacheBackend` in Redis, shared by every process that uses the
    same ``[redis] url`` and prefix."""

    def __init__(self, context: ComponentContext[RedisCacheSettings]) -> None:
        self._context = context
        self.prefix = context.settings.prefix
        self.where = redacted_url(redis_url(context.config, "cache.backend"))
        """The Redis URL without its password, for messages."""
        self._client: redis.asyncio.Redis | None = None
        self._incr: Any = None
        self._compare_and_set: Any = None
        self._failures: tuple[type[BaseException], ...] = (OSError, TimeoutError)

    async def start(self) -> None:
        """Connect to ``[redis] url`` and check that Redis answers (a failure names it)."""
        import redis.exceptions

        self._failures = (redis.exceptions.RedisError, OSError, TimeoutError)
        client = await shared_redis(
            self._context.resources, self._context.config, needed_by="cache.backend"
        )
        self._client = client
        self._incr = client.register_script(_INCR)
        self._compare_and_set = client.register_script(_COMPARE_AND_SET)
        try:
            await client.ping()
        except self._failures as exc:
            self._fail("reach", exc)

    async def health(self) -> Health:
        """``ok`` with the PING time while Redis answers, ``down`` with the reason when not
        (the runtime bounds how long it waits)."""
        return await ping_health(self._client, self.where, self._failures, None)

    async def aclose(self) -> None:
        """The shared client is closed by the runtime after its last user stops."""
        self._client = None

    async def _failed(self, doing: str, exc: BaseException) -> NoReturn:
        """Raise :meth:`_fail`'s error, first closing the pool's idle connections when the
        connection itself failed: after Redis restarts every one of them is dead, and each would
        fail one more call before reconnecting (under a :class:`hubbub.cache.FallbackCache`,
        enough failures in a row to open its breaker again right after Redis came back)."""
        import redis.exceptions

        pool = getattr(self._client, "connection_pool", None)  # a cluster client has none
        if pool is not None and isinstance(exc, (redis.exceptions.ConnectionError, OSError)):
            with contextlib.suppress(Exception):
                await pool.disconnect(inuse_connections=False)
        self._fail(doing, exc)

    def _fail(self, doing: str, exc: BaseException) -> NoReturn:
        raise ComponentError(
            f"the Redis cache at {self.where} failed to {doing}: {_why(exc)}"
        ) from exc

    def _ready(self) -> redis.asyncio.Redis:
        if self._client is None:
            raise ComponentError("the Redis cache is not started")
        return self._client

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``, or ``None`` when absent or expired."""
        client = self._ready()
        try:
            value = await client.get(self.prefix + key)
        except self._failures as exc:
            await self._failed(f"read {key!r}", exc)
        if isinstance(value, str):  # typed so; the shared client does not decode replies
            return value.encode()
        return value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` (expiring after ``ttl`` seconds when given)."""
        client = self._ready()
        try:
            await client.set(self.prefix + key, value, px=_ms(ttl) or None)
        except self._failures as exc:
            await self._failed(f"write {key!r}", exc)

    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""
        client = self._ready()
        try:
            removed = await client.delete(self.prefix + key)
        except self._failures as exc:
            await self._failed(f"delete {key!r}", exc)
        return bool(removed)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` atomically (``ttl`` applies only when this call creates the key)."""
        self._ready()
        try:
            value = await self._incr(keys=[self.prefix + key], args=[amount, _ms(ttl)])
        except self._failures as exc:
            await self._failed(f"increment {key!r}", exc)
        return int(value)

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent (``SET NX``); whether it was stored."""
        client = self._ready()
        try:
            stored = await client.set(self.prefix + key, value, nx=True, px=_ms(ttl) or None)
        except self._failures as exc:
            await self._failed(f"add {key!r}", exc)
        return bool(stored)

    async def compare_and_set(
        self, key: str, expected: bytes, value: bytes | None, ttl: float | None = None
    ) -> bool:
        """If ``key`` holds ``expected``, replace it with ``value`` (delete it when ``None``),
        atomically (a Lua script); whether it did."""
        self._ready()
        mode, new = ("del", b"") if value is None else ("set", value)
        try:
            done = await self._compare_and_set(
                keys=[self.prefix + key], args=[expected, mode, new, _ms(ttl)]
            )
        except self._failures as exc:
            await self._failed(f"compare-and-set {key!r}", exc)
        return bool(done)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@hookimpl
def register_cache_backends(register: Registrar) -> None:
    def build(context: ComponentContext[RedisCacheSettings]) -> RedisCache:
        return RedisCache(context)

    register(
        "redis",
        build,
        settings=RedisCacheSettings,
        description="cache in Redis ([redis] url), shared by every process",
    )
