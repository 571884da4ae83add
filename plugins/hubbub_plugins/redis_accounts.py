"""Account store ``redis``: users, login sessions and API keys in Redis, shared by every process
that uses the same ``[redis] url`` and ``[plugins.redis_store] key_prefix``.

Select it with ``[accounts] backend = "redis"`` (or leave ``[accounts] backend`` unset with
``[memory] backend = "redis"``); it uses the runtime's shared client. Every write is one Lua
script, so a record and its indexes change together whatever other tasks and processes do at
the same time: :meth:`RedisAccountStore.create` refuses a taken id or lookup and
:meth:`RedisAccountStore.replace` compares the version and moves the lookup and the owner in
the same step. Reads of several keys (a lookup, a listing) are scripts too, so each is one
consistent snapshot. Data is stored as bytes, unchanged.

**Durability is Redis's** (see :mod:`hubbub_plugins.redis_store`): a Redis run without
persistence forgets every user, session and key when it restarts.

**Layout.** ``P`` is the key prefix (a hash tag on a Redis Cluster, as for the memory store:
every key of both stores then lives in one slot); ``K`` is ``P account:<n>:<kind>:`` where
``<n>`` is the length of the kind in bytes, so no kind and id can spell another's keys.

* ``K record:<id>``: hash: ``owner``, ``lookup`` (absent for none), ``version``, ``expires``
  (absent for none) and ``data`` (the record's bytes).
* ``K lookups``: hash from each lookup of the kind to its record's id.
* ``K ids``: sorted set of the kind's ids, every score 0: ``ZRANGEBYLEX`` lists them in
  ascending byte order, ``after`` is an exclusive start.
* ``K owner:<owner>``: sorted set (scores 0) of the ids of one owner's records of the kind.
* ``P account-expiry``: sorted set of every record with an ``expires_at`` (the score), member
  ``<n>:<kind>:<id>``: what :meth:`RedisAccountStore.purge` deletes, oldest expiry first.

**Failures.** A Redis that cannot be reached, or that does not answer within ``[redis]
timeout``, makes the operation raise :class:`hubbub.errors.ComponentError` naming Redis and the
operation (the server answers 503); a write that timed out may still have happened.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from hubbub.errors import ComponentError, ConflictError, InvalidRequestError, NotFoundError
from hubbub.models import Record
from hubbub_plugins.redis_store import RedisBacked, _why

if TYPE_CHECKING:
    pass

__all__ = ["RedisAccountStore"]

T = TypeVar("T")

# -- Lua -------------------------------------------------------------------------------------
# Every script gets the key base (prefix, hash tag included) as ARGV[1] and builds the names of
# the keys it reaches from it; KEYS[1] is always one of them, which routes the call on a
# cluster. Optional values come with a flag ('1': given) or as '' (expires).

_LIB = """
local base = ARGV[1]
local expiry = base .. 'account-expiry'
local function kind_base(kind) return base .. 'account:' .. #kind .. ':' .. kind .. ':' end
local function member(kind, id) return #kind .. ':' .. kind .. ':' .. id end
local fields = {'owner', 'lookup', 'version', 'expires', 'data'}

-- Delete a record with its index entries; 1 if it existed.
local function drop(kind, id)
  local kb = kind_base(kind)
  local record = kb .. 'record:' .. id
  redis.call('ZREM', expiry, member(kind, id))
  local f = redis.call('HMGET', record, 'owner', 'lookup', 'version')
  if not f[3] then return 0 end
  if f[2] and redis.call('HGET', kb .. 'lookups', f[2]) == id then
    redis.call('HDEL', kb .. 'lookups', f[2])
  end
  redis.call('ZREM', kb .. 'owner:' .. (f[1] or ''), id)
  redis.call('ZREM', kb .. 'ids', id)
  redis.call('DEL', record)
  return 1
end

-- Set or clear a record's expiry, in its hash and in the expiry index.
local function expire(kind, id, record, expires)
  if expires == '' then
    redis.call('HDEL', record, 'expires')
    redis.call('ZREM', expiry, member(kind, id))
  else
    redis.call('HSET', record, 'expires', expires)
    redis.call('ZADD', expiry, expires, member(kind, id))
  end
end
"""

# KEYS[1]: the record; ARGV: base, kind, id, owner, has lookup, lookup, expires, data.
# Returns 'ok', 'id' (taken) or 'lookup' (taken).
_CREATE = (
    _LIB
    + """
local kind, id, owner, has_lookup, lookup, expires, data = unpack(ARGV, 2, 8)
local kb = kind_base(kind)
if redis.call('EXISTS', KEYS[1]) == 1 then return 'id' end
if has_lookup == '1' and redis.call('HEXISTS', kb .. 'lookups', lookup) == 1 then
  return 'lookup'
end
redis.call('HSET', KEYS[1], 'owner', owner, 'version', 1, 'data', data)
if has_lookup == '1' then
  redis.call('HSET', KEYS[1], 'lookup', lookup)
  redis.call('HSET', kb .. 'lookups', lookup, id)
end
expire(kind, id, KEYS[1], expires)
redis.call('ZADD', kb .. 'ids', 0, id)
redis.call('ZADD', kb .. 'owner:' .. owner, 0, id)
return 'ok'
"""
)

# KEYS[1]: the record; ARGV: base, kind, id, expected version, owner, has lookup, lookup,
# expires, data. Returns 'ok', 'missing', 'changed' (another version) or 'lookup' (taken).
_REPLACE = (
    _LIB
    + """
local kind, id, expected, owner, has_lookup, lookup, expires, data = unpack(ARGV, 2, 9)
local kb = kind_base(kind)
local f = redis.call('HMGET', KEYS[1], 'owner', 'lookup', 'version')
if not f[3] then return 'missing' end
local version = tonumber(f[3])
if version ~= tonumber(expected) then return 'changed' end
local keeps = has_lookup == '1' and f[2] == lookup
if has_lookup == '1' and not keeps then
  local holder = redis.call('HGET', kb .. 'lookups', lookup)
  if holder and holder ~= id then return 'lookup' end
end
if f[2] and not keeps then
  if redis.call('HGET', kb .. 'lookups', f[2]) == id then
    redis.call('HDEL', kb .. 'lookups', f[2])
  end
  redis.call('HDEL', KEYS[1], 'lookup')
end
if has_lookup == '1' then
  redis.call('HSET', KEYS[1], 'lookup', lookup)
  redis.call('HSET', kb .. 'lookups', lookup, id)
end
local old_owner = f[1] or ''
if old_owner ~= owner then
  redis.call('ZREM', kb .. 'owner:' .. old_owner, id)
  redis.call('ZADD', kb .. 'owner:' .. owner, 0, id)
end
redis.call('HSET', KEYS[1], 'owner', owner, 'version', version + 1, 'data', data)
expire(kind, id, KEYS[1], expires)
return 'ok'
"""
)

# KEYS[1]: the record; ARGV: base, kind, id. Returns 1 if it existed.
_DELETE = (
    _LIB
    + """
return drop(ARGV[2], ARGV[3])
"""
)

# KEYS[1]: the kind's lookups; ARGV: base, kind, lookup. Returns {id, fields...} or {}.
_FIND = (
    _LIB
    + """
local id = redis.call('HGET', KEYS[1], ARGV[3])
if not id then return {} end
local f = redis.call('HMGET', kind_base(ARGV[2]) .. 'record:' .. id, unpack(fields))
if not f[3] then return {} end
return {id, f[1], f[2], f[3], f[4], f[5]}
"""
)

# KEYS[1]: an index (the kind's ids or one owner's); ARGV: base, kind, start ('-' or
# '(' .. after), limit. Returns {id, fields..., id, fields..., ...}.
_LIST = (
    _LIB
    + """
local kb = kind_base(ARGV[2])
local rows = {}
for _, id in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], ARGV[3], '+', 'LIMIT', 0, ARGV[4])) do
  local f = redis.call('HMGET', kb .. 'record:' .. id, unpack(fields))
  if f[3] then
    rows[#rows + 1] = id
    for i = 1, 5 do rows[#rows + 1] = f[i] end
  end
end
return rows
"""
)

# KEYS[1]: the expiry index; ARGV: base, now, limit. Returns how many records went.
_PURGE = (
    _LIB
    + """
local at, limit = ARGV[2], tonumber(ARGV[3])
local n = 0
while n < limit do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', at, 'LIMIT', 0, limit - n)
  if #due == 0 then break end
  for _, m in ipairs(due) do
    local size, rest = string.match(m, '^(%d+):(.*)$')
    if size then
      size = tonumber(size)
      n = n + drop(string.sub(rest, 1, size), string.sub(rest, size + 2))
    end
    redis.call('ZREM', KEYS[1], m)
  end
end
return n
"""
)

_SCRIPTS = {
    "create": _CREATE,
    "replace": _REPLACE,
    "delete": _DELETE,
    "find": _FIND,
    "list": _LIST,
    "purge": _PURGE,
}

_FIELDS = ("owner", "lookup", "version", "expires", "data")
"""The fields of a record's hash, in the order the scripts return them."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _expires(record: Record) -> str:
    """``expires_at`` as Redis and Lua read it back exactly (``''`` for none)."""
    if record.expires_at is None:
        return ""
    if math.isnan(record.expires_at):
        raise InvalidRequestError("expires_at must be a number of seconds", field="expires_at")
    return repr(float(record.expires_at))


def _optional(value: str | None) -> tuple[str, str]:
    """A flag (``'1'``: given) and the value, for a script's optional argument."""
    return ("0", "") if value is None else ("1", value)


class RedisAccountStore(RedisBacked):
    """A :class:`hubbub.contracts.AccountStore` in Redis (see the module's documentation for
    the layout). Built by the ``redis_store`` plugin with its settings."""

    noun = "account store"
    role = "account store"
    needed_by = "accounts.backend"
    scripts = _SCRIPTS

    def _kind_base(self, kind: str) -> str:
        """``K`` of the module's documentation (as the scripts' ``kind_base`` builds it)."""
        return f"{self.base}account:{len(kind.encode())}:{kind}:"

    async def _run(self, doing: str, script: str, key: str, *args: object) -> Any:
        self._ready()
        return await self._do(doing, self._scripts[script](keys=[key], args=[self.base, *args]))

    def _record(self, kind: str, record_id: str, values: list[Any]) -> Record:
        """A record from its hash's fields (in :data:`_FIELDS` order); a hash that does not
        hold a record raises a ComponentError naming its key."""
        owner, lookup, version, expires, data = values
        try:
            return Record(
                kind=kind,
                id=record_id,
                owner=_text(owner or b""),
                lookup=None if lookup is None else _text(lookup),
                version=int(version),
                expires_at=None if expires is None else float(expires),
                data=bytes(data),
            )
        except (TypeError, ValueError, msgspec.ValidationError) as exc:
            key = f"{self._kind_base(kind)}record:{record_id}"
            raise ComponentError(
                f"{kind} {record_id!r} in the Redis account store at {self.where} is corrupt "
                f"({_why(exc)}): delete it, or restore key {key!r} from a backup"
            ) from exc

    def _rows(self, kind: str, reply: list[Any]) -> list[Record]:
        """Records from a script's flat reply: an id, then its fields, for each."""
        step = 1 + len(_FIELDS)
        return [
            self._record(kind, _text(reply[i]), reply[i + 1 : i + step])
            for i in range(0, len(reply) - step + 1, step)
        ]

    # -- the contract -------------------------------------------------------------------------

    async def create(self, record: Record) -> Record:
        """Store a new record with version 1, with its indexes, in one script."""
        created = msgspec.structs.replace(record, version=1)
        status = _text(
            await self._run(
                f"create {record.kind} {record.id!r}",
                "create",
                f"{self._kind_base(record.kind)}record:{record.id}",
                record.kind,
                record.id,
                record.owner,
                *_optional(record.lookup),
                _expires(record),
                record.data,
            )
        )
        if status == "id":
            raise ConflictError(f"{record.kind} {record.id!r} exists already")
        if status == "lookup":
            raise ConflictError(f"another {record.kind} has the lookup of {record.id!r}")
        return created

    async def get(self, kind: str, record_id: str) -> Record | None:
        """One ``HMGET`` of the record's hash."""
        client = self._ready()
        values = await self._do(
            f"read {kind} {record_id!r}",
            client.hmget(f"{self._kind_base(kind)}record:{record_id}", list(_FIELDS)),
        )
        if values[2] is None:  # no version: no record
            return None
        return self._record(kind, record_id, values)

    async def find(self, kind: str, lookup: str) -> Record | None:
        """The record the kind's lookup index names, read in the same script."""
        reply = await self._run(
            f"find a {kind} by its lookup",
            "find",
            f"{self._kind_base(kind)}lookups",
            kind,
            lookup,
        )
        return self._rows(kind, reply)[0] if reply else None

    async def list_records(
        self, kind: str, *, owner: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[Record]:
        """A ``ZRANGEBYLEX`` of the kind's (or the owner's) ids and their records, in one
        script."""
        if limit < 1:
            return []
        index = "ids" if owner is None else f"owner:{owner}"
        reply = await self._run(
            f"list the {kind} records" + ("" if owner is None else f" of {owner!r}"),
            "list",
            self._kind_base(kind) + index,
            kind,
            "-" if after is None else "(" + after,
            limit,
        )
        return self._rows(kind, reply)

    async def replace(self, record: Record) -> Record:
        """Compare the version, then write the record and move its lookup, owner and expiry
        entries, in one script."""
        updated = msgspec.structs.replace(record, version=record.version + 1)
        status = _text(
            await self._run(
                f"replace {record.kind} {record.id!r}",
                "replace",
                f"{self._kind_base(record.kind)}record:{record.id}",
                record.kind,
                record.id,
                record.version,
                record.owner,
                *_optional(record.lookup),
                _expires(record),
                record.data,
            )
        )
        if status == "missing":
            raise NotFoundError(f"there is no {record.kind} {record.id!r}")
        if status == "changed":
            raise ConflictError(f"{record.kind} {record.id!r} changed meanwhile")
        if status == "lookup":
            raise ConflictError(f"another {record.kind} has the lookup of {record.id!r}")
        return updated

    async def delete(self, kind: str, record_id: str) -> bool:
        """Delete the record and its index entries in one script."""
        deleted = await self._run(
            f"delete {kind} {record_id!r}",
            "delete",
            f"{self._kind_base(kind)}record:{record_id}",
            kind,
            record_id,
        )
        return bool(deleted)

    async def purge(self, *, now: float, limit: int) -> int:
        """Delete at most ``limit`` records due by ``now`` (oldest expiry first), with their
        indexes, in one script."""
        if limit < 1:
            return 0
        purged = await self._run(
            "purge expired records", "purge", self.base + "account-expiry", repr(float(now)), limit
        )
        return int(purged)
