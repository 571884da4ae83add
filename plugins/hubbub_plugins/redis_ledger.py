"""Budget ledger ``redis``: budgets counted in the Redis of ``[redis] url``, shared by every
process.

Selected with ``[budgets] backend = "redis"``, and by default when ``[cache] backend`` is
``redis``. Each counter is a hash (``t``/``c``: tokens and nanodollars settled; ``rt``/``rc``:
held by live reservations; ``L:<id>``: one reservation's hold) plus a sorted set of its
reservations by expiry. Reserving, settling and releasing are Lua scripts, so each is one
atomic step over all the request's counters, whatever other processes do: a reservation
either holds in every counter or in none. A reservation whose lease expired (its process
crashed or hung) is taken out by the next script that touches its counter. Costs are
integers of nanodollars (``HINCRBY`` stays exact). Every key carries the hash tag
``{budgets}``, so in a Redis Cluster they live on one slot and the scripts may touch them
together. Counters expire a day after their period ends.

Each script may run more than once or late: the Redis client retries a call that timed out
or lost its connection, and a reservation whose caller gave up (cancelled, timed out) may
still reach Redis. So a reservation's end (settled or released) is remembered for
:data:`ENDED_SECONDS` or more in a key of its own: settling or releasing it again counts
nothing, and a reservation that arrives after its end holds nothing; reserving again under the
same id holds once. A reserve that fails or is cancelled after its script may have run
releases its id (shielded from the cancellation, retried a few times): a hold nobody will
settle never lingers until its lease ends.

::

    [budgets]
    backend = "redis"

    [redis]
    url = "redis://127.0.0.1:6379/0"
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from hubbub import hookimpl
from hubbub.budgets.money import from_nanos, to_nanos
from hubbub.contracts import BudgetCounter, BudgetRefusal, BudgetReservation, BudgetTotals
from hubbub.errors import ComponentError
from hubbub.models import Health, new_id
from hubbub.redis import ping_health, redacted_url, redis_url, shared_redis

if TYPE_CHECKING:
    import redis.asyncio

    from hubbub.registry import ComponentContext, Registrar

__all__ = ["RedisLedger", "RedisLedgerSettings"]

logger = logging.getLogger("hubbub.budgets")

KEEP_AFTER_PERIOD = 86_400.0
"""Seconds a counter is kept after its period ended (for late settlements and reports)."""

ENDED_SECONDS = 120.0
"""The least seconds Redis remembers that a reservation ended (settled, released or given up);
more when ``[redis] timeout`` is long: it must outlast the Redis client's retries of one
script (11 tries, each of at most the timeout and a back-off of up to a second)."""

GIVE_UP_TRIES = 4
"""Tries at releasing a reservation whose reserve failed or was cancelled."""

# Shared by the scripts: take expired leases out of counter hash h (zset z) at now (ms).
_PURGE = """
local function sub(h, f, v)
  if v ~= '0' then redis.call('HINCRBY', h, f, '-' .. v) end
end
local function unhold(h, id)
  local held = redis.call('HGET', h, 'L:' .. id)
  if not held then return false end
  local t, c = string.match(held, '^(%d+) (%d+)$')
  sub(h, 'rt', t)
  sub(h, 'rc', c)
  redis.call('HDEL', h, 'L:' .. id)
  return true
end
local function purge(h, z, now)
  local due = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, id in ipairs(due) do unhold(h, id) end
  if #due > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# KEYS: hash, zset for each counter, then the reservation's end marker. ARGV[1] id, [2] tokens,
# [3] nanodollars, [4] lease ms, then per counter: token limit (-1: none), nanodollar limit
# (-1: none), expire-at ms. Returns {1, expires} when held everywhere (already, when run again),
# {2} when the reservation has ended already (its caller gave up), else {0, counter index
# (1-based), unit, used}. Numbers go back as '%d' text: tostring gives 1.5e+14 past 1e14.
_RESERVE = (
    _PURGE
    + """
local n = (#KEYS - 1) / 2
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then return {2} end
local again = n > 0 and redis.call('ZSCORE', KEYS[2], ARGV[1])
if again and redis.call('HEXISTS', KEYS[1], 'L:' .. ARGV[1]) == 1 then
  return {1, again}
end
local tokens, nanos = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  purge(h, z, now)
  local v = redis.call('HMGET', h, 't', 'c', 'rt', 'rc')
  local tl, cl = tonumber(ARGV[5 + 3 * (i - 1)]), tonumber(ARGV[6 + 3 * (i - 1)])
  local used = (tonumber(v[1]) or 0) + (tonumber(v[3]) or 0)
  if tl >= 0 and used + tokens > tl then
    return {0, i, 'tokens', string.format('%d', used)}
  end
  local spent = (tonumber(v[2]) or 0) + (tonumber(v[4]) or 0)
  if cl >= 0 and spent + nanos > cl then
    return {0, i, 'cost', string.format('%d', spent)}
  end
end
local expires = now + tonumber(ARGV[4])
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('HINCRBY', h, 'rt', ARGV[2])
  redis.call('HINCRBY', h, 'rc', ARGV[3])
  redis.call('HSET', h, 'L:' .. ARGV[1], ARGV[2] .. ' ' .. ARGV[3])
  redis.call('ZADD', z, expires, ARGV[1])
  local at = math.max(tonumber(ARGV[7 + 3 * (i - 1)]), expires)
  redis.call('PEXPIREAT', h, at)
  redis.call('PEXPIREAT', z, at)
end
return {1, string.format('%d', expires)}
"""
)

# KEYS: hash, zset for each counter, then the reservation's end marker. ARGV[1] id, [2] tokens,
# [3] nanodollars (0 0: release), [4] ms to remember the end, then per counter: expire-at ms.
# Returns 0 (counting nothing) when the reservation had ended already.
_SETTLE = (
    _PURGE
    + """
if not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', ARGV[4]) then return 0 end
local n = (#KEYS - 1) / 2
for i = 1, n do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  if unhold(h, ARGV[1]) then redis.call('ZREM', z, ARGV[1]) end
  purge(h, z, now)
  if ARGV[2] ~= '0' then redis.call('HINCRBY', h, 't', ARGV[2]) end
  if ARGV[3] ~= '0' then redis.call('HINCRBY', h, 'c', ARGV[3]) end
  if ARGV[2] ~= '0' or ARGV[3] ~= '0' then
    local at = tonumber(ARGV[4 + i])
    if redis.call('PTTL', h) < at - now then redis.call('PEXPIREAT', h, at) end
  end
end
return 1
"""
)

# KEYS: hash, zset for each counter. Returns {t, c, rt, rc} per counter, after a purge.
_TOTALS = (
    _PURGE
    + """
local out = {}
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  purge(h, z, now)
  local v = redis.call('HMGET', h, 't', 'c', 'rt', 'rc')
  for j = 1, 4 do table.insert(out, v[j] or '0') end
end
return out
"""
)


class RedisLedgerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``redis_ledger`` plugin (``[plugins.redis_ledger]``)."""

    prefix: str = "hubbub:{budgets}:"
    """Prefix of every key. Keep one hash tag (``{...}``) in it: the scripts touch several
    counters at once, which a Redis Cluster allows only on one slot."""


def _ms(seconds: float) -> int:
    return math.ceil(seconds * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLedger:
    """A :class:`hubbub.contracts.BudgetLedger` in Redis, shared by every process that uses
    the same ``[redis] url`` and prefix."""

    def __init__(self, context: ComponentContext[RedisLedgerSettings]) -> None:
        self._context = context
        self.prefix = context.settings.prefix
        self.where = redacted_url(redis_url(context.config, "budgets.backend"))
        """The Redis URL without its password, for messages."""
        self._client: redis.asyncio.Redis | None = None
        self._reserve: Any = None
        self._settle: Any = None
        self._totals: Any = None
        self._failures: tuple[type[BaseException], ...] = (OSError, TimeoutError)
        self._giving_up: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Connect to ``[redis] url`` and check that Redis answers (a failure names it)."""
        import redis.exceptions

        self._failures = (redis.exceptions.RedisError, OSError, TimeoutError)
        # A pool of its own: the ledger's calls and health checks are bounded by timeouts that
        # cancel them mid-flight, which must never leave the cache's connections half-used.
        client = await shared_redis(
            self._context.resources,
            self._context.config,
            needed_by="budgets.backend",
            pool="budgets",
        )
        self._client = client
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._totals = client.register_script(_TOTALS)
        try:
            await client.ping()
        except self._failures as exc:
            self._fail("reach", exc)

    async def health(self) -> Health:
        """``ok`` with the PING time while Redis answers within ``[cache] timeout`` (the same
        Redis: the same patience), ``down`` with the reason when not."""
        return await ping_health(
            self._client, self.where, self._failures, self._context.config.cache.timeout
        )

    async def aclose(self) -> None:
        """Wait (a little) for releases of given-up reservations still running; the shared
        client is closed by the runtime after its last user stops."""
        if self._giving_up:
            await asyncio.wait(set(self._giving_up), timeout=self._patience())
        self._client = None

    def _patience(self) -> float:
        """Seconds to wait for one call to Redis: ``[redis] timeout``."""
        return float(self._context.config.redis.timeout)

    def _ended_seconds(self) -> float:
        """How long a reservation's end is remembered (see :data:`ENDED_SECONDS`)."""
        return max(ENDED_SECONDS, 12 * (self._patience() + 1.0))

    def _fail(self, doing: str, exc: BaseException) -> NoReturn:
        raise ComponentError(
            f"the Redis budget ledger at {self.where} failed to {doing}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc

    async def _run(self, script: Any, doing: str, keys: list[str], args: list[Any]) -> Any:
        if self._client is None:
            raise ComponentError("the Redis budget ledger is not started")
        try:
            return await script(keys=keys, args=args)
        except self._failures as exc:
            import redis.exceptions

            pool = getattr(self._client, "connection_pool", None)
            if pool is not None and isinstance(exc, (redis.exceptions.ConnectionError, OSError)):
                with contextlib.suppress(Exception):
                    await pool.disconnect(inuse_connections=False)
            self._fail(doing, exc)

    def _keys(self, keys: Sequence[str], reservation_id: str) -> list[str]:
        """The counters' hashes and sorted sets, then the reservation's end marker."""
        out = []
        for key in keys:
            out += [f"{self.prefix}{key}", f"{self.prefix}{key}:leases"]
        out.append(f"{self.prefix}ended:{reservation_id}")
        return out

    async def reserve(
        self,
        counters: Sequence[BudgetCounter],
        tokens: int,
        cost: Decimal,
        lease_seconds: float,
    ) -> BudgetReservation | BudgetRefusal:
        """Hold ``tokens`` and ``cost`` in every counter, or in none: one script."""
        reservation_id = new_id("bud_")
        args: list[Any] = [reservation_id, tokens, to_nanos(cost), _ms(lease_seconds)]
        for spec in counters:
            args += [
                -1 if spec.tokens is None else spec.tokens,
                -1 if spec.cost is None else to_nanos(spec.cost),
                _ms(spec.period_end + KEEP_AFTER_PERIOD),
            ]
        keys = self._keys([c.key for c in counters], reservation_id)
        try:
            answer = await self._run(self._reserve, "reserve", keys, args)
        except BaseException:
            # The script may have run, or may still run (it was sent): end the reservation,
            # so that it holds nothing nobody will settle.
            await self._give_up(reservation_id, counters)
            raise
        outcome = int(answer[0])
        if outcome == 1:
            return BudgetReservation(
                id=reservation_id,
                counters=tuple(counters),
                tokens=tokens,
                cost=cost,
                expires_at=int(float(_text(answer[1]))) / 1000,
            )
        if outcome == 2:  # cannot happen to a fresh id: only a given-up reservation ends first
            raise ComponentError(
                f"the Redis budget ledger at {self.where} found reservation {reservation_id} "
                "ended before it was made"
            )
        spec = counters[int(answer[1]) - 1]
        unit = _text(answer[2])
        used = int(_text(answer[3]))
        if unit == "tokens":
            return BudgetRefusal(
                counter=spec, unit="tokens", used=str(used), limit=str(spec.tokens)
            )
        return BudgetRefusal(
            counter=spec, unit="cost", used=str(from_nanos(used)), limit=str(spec.cost)
        )

    async def _give_up(self, reservation_id: str, counters: Sequence[BudgetCounter]) -> None:
        """Release ``reservation_id`` after its reserve failed or was cancelled: in a task of
        its own (a cancelled caller cannot stop it), waited for at most ``[redis] timeout``."""
        reservation = BudgetReservation(
            id=reservation_id, counters=tuple(counters), tokens=0, cost=Decimal(0), expires_at=0.0
        )
        task = asyncio.ensure_future(self._release_given_up(reservation))
        self._giving_up.add(task)
        task.add_done_callback(self._giving_up.discard)
        await asyncio.wait({task}, timeout=self._patience())

    async def _release_given_up(self, reservation: BudgetReservation) -> None:
        """Release ``reservation``, trying :data:`GIVE_UP_TRIES` times (Redis may be slow or
        reconnecting); when every try fails, its lease ends it."""
        for attempt in range(GIVE_UP_TRIES):
            try:
                await self.release(reservation)
                return
            except Exception as exc:
                if attempt + 1 == GIVE_UP_TRIES:
                    logger.warning(
                        "could not release budget reservation %s after its reserve failed "
                        "(it holds until its lease ends): %s",
                        reservation.id,
                        exc,
                        extra={"reservation": reservation.id},
                    )
                    return
                await asyncio.sleep(0.25 * 2**attempt)

    async def _end(
        self, reservation: BudgetReservation, tokens: int, nanos: int, doing: str
    ) -> None:
        args: list[Any] = [reservation.id, tokens, nanos, _ms(self._ended_seconds())]
        args += [_ms(c.period_end + KEEP_AFTER_PERIOD) for c in reservation.counters]
        keys = self._keys([c.key for c in reservation.counters], reservation.id)
        await self._run(self._settle, doing, keys, args)

    async def settle(self, reservation: BudgetReservation, tokens: int, cost: Decimal) -> None:
        """End ``reservation`` and count what was used: one script."""
        await self._end(reservation, tokens, to_nanos(cost), "settle")

    async def release(self, reservation: BudgetReservation) -> None:
        """End ``reservation`` without counting anything: one script."""
        await self._end(reservation, 0, 0, "release")

    async def totals(self, keys: Sequence[str]) -> list[BudgetTotals]:
        """Each counter as it stands (expired leases taken out first)."""
        if not keys:
            return []
        values = await self._run(self._totals, "read totals", self._keys(keys, "")[:-1], [])
        result = []
        for index, key in enumerate(keys):
            t, c, rt, rc = (int(_text(v)) for v in values[4 * index : 4 * index + 4])
            result.append(
                BudgetTotals(
                    key=key,
                    tokens=t,
                    cost=from_nanos(c),
                    reserved_tokens=rt,
                    reserved_cost=from_nanos(rc),
                )
            )
        return result


@hookimpl
def register_budget_ledgers(register: Registrar) -> None:
    register(
        "redis",
        RedisLedger,
        settings=RedisLedgerSettings,
        description="Budgets counted in Redis, shared by every process.",
    )
