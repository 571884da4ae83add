"""Memory store ``redis``: conversations, messages, summaries and memories in Redis.

Select it with ``[memory] backend = "redis"`` (and ``[redis] url``); it uses the runtime's shared
client. Every write is one Lua script, so it happens whole or not at all whatever other tasks and
processes do at the same time (appending to a conversation checks that it exists, stores the
message, bumps the conversation in its indexes and counts the bytes in one step). Reads that
touch several keys are scripts too, so a listing is one consistent snapshot.

**Durability is Redis's.** What this store keeps lasts as long as Redis keeps it: persistence
(AOF with ``appendfsync everysec`` or ``always``, RDB snapshots, replicas) is the operator's job,
and a Redis run without it (``--save '' --appendonly no``) loses every conversation when it
restarts. Redis also holds everything in memory, so the data set must fit there (mind
``maxmemory``: an eviction policy other than ``noeviction`` silently drops conversations). Choose
it over ``postgres`` for short-lived or easily rebuilt conversation history shared by several
server processes, when a Redis is already run for the cache and events and the data is small;
choose ``postgres`` when conversations must survive crashes reliably, grow large, or need
backups and queries of their own; ``sqlite`` for one machine.

**Layout.** Every key starts with ``[plugins.redis_store] key_prefix`` (``hubbub:store:``); ``P``
below. Ids and owners are the variable last part of each name.

* ``P conversation:<id>``: hash: ``owner``, ``data`` (the conversation's JSON as created or last
  updated), ``updated`` (its current ``updated_at``, which appending bumps without rewriting
  ``data``), ``rank`` (its member in the indexes below) and ``bytes`` (what it and its messages
  count for in usage).
* ``P messages:<id>``: list of the conversation's messages (JSON), in the order appended; a
  message's place in the list is its cursor.
* ``P message-ids:<id>``: set of the ids of the conversation's messages, so an append or an
  import never stores a message twice.
* ``P summary:<id>``: string: the conversation's latest summary (JSON).
* ``P conversations:<owner>``: sorted set, every score 0, ordered by member ``rank``: 16 hex
  digits that sort like ``updated_at`` followed by the id, so ``ZREVRANGEBYLEX`` lists newest
  first, ties broken by id, and a cursor (the last member seen) is exact.
* ``P memory:<id>``: hash: ``owner``, ``data`` (the memory's JSON), ``rank`` (16 hex digits that
  sort like ``created_at`` followed by the id) and ``expires`` (when set).
* ``P memories:<owner>``: sorted set of the owner's memories' ranks (like conversations').
* ``P usage:<owner>``: hash: ``conversations`` and ``bytes`` (JSON lengths of their
  conversations, messages and memories; summaries are not counted), changed by the same script
  as what they count, and removed when both are 0.
* ``P owners``: sorted set (scores 0) of every owner with a conversation or a memory, kept
  with their usage: what ``list_owners`` pages through (``hubbub store copy``).
* ``P expiring``: sorted set scored by ``expires_at``, members ``conversation:<id>`` and
  ``memory:<id>``: what :meth:`RedisStore.purge` deletes first.
* ``P idle``: sorted set of every conversation's rank (as in ``conversations:<owner>``): what
  ``purge`` deletes for ``idle_before``.

**Redis Cluster** (``[redis] cluster = true``) works: a script must find all its keys on one
node, so every key then carries one hash tag and the whole store lives in one slot (on one
node and its replicas; Cluster brings failover, not more room). The prefix is that tag when it
holds one (``{hubbub:store}:``), else it is wrapped in braces (``{hubbub:store:}conversation:x``).

**Failures.** A Redis that cannot be reached, or that does not answer within ``[redis]
timeout`` (one deadline for the whole operation, the client's own retries included), makes the
operation raise :class:`hubbub.errors.ComponentError` naming Redis and the operation (the server
answers 503); a write that timed out may still have happened (appending the same message
again is then refused as a conflict, never stored twice). A record that does not decode
(garbage written over it) is skipped with a warning naming its key by whatever reads many
(listings, ``recent_messages``; a corrupt summary reads as none); reading a corrupt
conversation alone (``get_conversation``, appending to it, updating it) raises a
``ComponentError`` saying it is corrupt and which key to restore or delete; deleting it works.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import msgspec

from hubbub import hookimpl
from hubbub.errors import ComponentError, ConflictError, InvalidRequestError, NotFoundError
from hubbub.models import Conversation, Health, MemoryItem, Message, Page, StoreUsage, Summary, now
from hubbub.pagination import decode_cursor, encode_cursor
from hubbub.redis import ping_health, redacted_url, redis_url, shared_redis

if TYPE_CHECKING:
    import redis.asyncio

    from hubbub.registry import ComponentContext, Registrar
    from hubbub_plugins.redis_accounts import RedisAccountStore

__all__ = ["RedisStore", "RedisStoreSettings"]

T = TypeVar("T")


class RedisStoreSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``redis_store`` plugin (``[plugins.redis_store]``)."""

    key_prefix: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "hubbub:store:"
    """Prefix of every key the store writes, so its data stays apart from anything else in the
    database; deployments sharing one Redis give each its own prefix and never see each
    other's conversations. On a Redis Cluster it is also the hash tag (see the module's
    documentation)."""


# -- Lua -------------------------------------------------------------------------------------
# Every script gets the key base (prefix, hash tag included) as ARGV[1] and builds the names of
# the keys it reaches from it (one slot on a cluster: see _base). KEYS[1] is always a key of the
# store, which routes the call on a cluster.

_LIB = """
local base = ARGV[1]
local function key(kind, ident) return base .. kind .. ':' .. ident end
local function kind_of(k) return redis.call('TYPE', k)['ok'] end

-- Change an owner's usage; an owner with nothing left leaves the usage and owner indexes.
local function account(owner, conversations, bytes)
  local k = key('usage', owner)
  local c = redis.call('HINCRBY', k, 'conversations', conversations)
  local b = redis.call('HINCRBY', k, 'bytes', bytes)
  if c <= 0 and b <= 0 then
    redis.call('DEL', k)
    redis.call('ZREM', base .. 'owners', owner)
  else
    redis.call('ZADD', base .. 'owners', 0, owner)
  end
end

-- Store a new conversation's record and index entries.
local function insert(conv, id, owner, data, updated, rank, expires)
  redis.call('HSET', conv, 'owner', owner, 'data', data, 'updated', updated, 'rank', rank,
    'bytes', #data)
  redis.call('ZADD', key('conversations', owner), 0, rank)
  redis.call('ZADD', base .. 'idle', 0, rank)
  if expires ~= '' then
    redis.call('ZADD', base .. 'expiring', expires, 'conversation:' .. id)
  end
  account(owner, 1, #data)
end

-- Move a conversation to `now` in both indexes when that is later than its updated_at;
-- return the updated_at it has after.
local function bump(conv, owner, updated, rank, at, new_rank)
  if updated and tonumber(updated) and tonumber(at) <= tonumber(updated) then
    return updated
  end
  local index = key('conversations', owner)
  if rank then
    redis.call('ZREM', index, rank)
    redis.call('ZREM', base .. 'idle', rank)
  end
  redis.call('ZADD', index, 0, new_rank)
  redis.call('ZADD', base .. 'idle', 0, new_rank)
  redis.call('HSET', conv, 'updated', at, 'rank', new_rank)
  return at
end

-- Delete a conversation with its messages, summary, index entries and usage; 1 if it existed.
local function drop_conversation(id)
  local conv = key('conversation', id)
  local kind = kind_of(conv)
  redis.call('ZREM', base .. 'expiring', 'conversation:' .. id)
  if kind == 'none' then return 0 end
  if kind == 'hash' then
    local f = redis.call('HMGET', conv, 'owner', 'rank', 'bytes')
    if f[1] then
      if f[2] then
        redis.call('ZREM', key('conversations', f[1]), f[2])
        redis.call('ZREM', base .. 'idle', f[2])
      end
      account(f[1], -1, -(tonumber(f[3]) or 0))
    end
  end
  redis.call('DEL', conv, key('summary', id))
  redis.call('UNLINK', key('messages', id), key('message-ids', id))
  return 1
end

-- Delete a memory with its index entries and usage; 1 if it went. `owner`: only theirs;
-- `lenient`: also a key that is not a hash (corrupt), whose owner cannot be read.
local function drop_memory(id, owner, lenient)
  local mem = key('memory', id)
  local kind = kind_of(mem)
  if kind == 'none' then
    redis.call('ZREM', base .. 'expiring', 'memory:' .. id)
    return 0
  end
  if kind == 'hash' then
    local f = redis.call('HMGET', mem, 'owner', 'data', 'rank')
    if owner and f[1] ~= owner then return 0 end
    if f[1] then
      if f[3] then redis.call('ZREM', key('memories', f[1]), f[3]) end
      account(f[1], 0, -#(f[2] or ''))
    end
  elseif not lenient then
    return 0
  end
  redis.call('ZREM', base .. 'expiring', 'memory:' .. id)
  redis.call('DEL', mem)
  return 1
end
"""

# KEYS[1]: conversation; ARGV: base, id, owner, data, updated, rank, expires ('' for none).
_CREATE = (
    _LIB
    + """
local id, owner, data, updated, rank, expires = unpack(ARGV, 2)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
insert(KEYS[1], id, owner, data, updated, rank, expires)
return 1
"""
)

# KEYS[1]: conversation; ARGV: base, id, data, now, rank at now, expires ('' for none).
# Returns {'ok', updated_at after, owner} or {'missing'} or {'corrupt'}.
_UPDATE = (
    _LIB
    + """
local id, data, at, new_rank, expires = unpack(ARGV, 2)
local kind = kind_of(KEYS[1])
if kind == 'none' then return {'missing'} end
if kind ~= 'hash' then return {'corrupt'} end
local f = redis.call('HMGET', KEYS[1], 'owner', 'data', 'updated', 'rank')
if not f[1] then return {'corrupt'} end
local delta = #data - #(f[2] or '')
redis.call('HSET', KEYS[1], 'data', data)
redis.call('HINCRBY', KEYS[1], 'bytes', delta)
account(f[1], 0, delta)
redis.call('ZREM', base .. 'expiring', 'conversation:' .. id)
if expires ~= '' then redis.call('ZADD', base .. 'expiring', expires, 'conversation:' .. id) end
return {'ok', bump(KEYS[1], f[1], f[3], f[4], at, new_rank), f[1]}
"""
)

# KEYS[1]: conversation, KEYS[2]: its messages, KEYS[3]: its message ids; ARGV: base, message,
# now, rank at now, message id. Returns 'ok', 'missing', 'corrupt' or 'duplicate'.
_APPEND = (
    _LIB
    + """
local message, at, new_rank, message_id = unpack(ARGV, 2)
local kind = kind_of(KEYS[1])
if kind == 'none' then return 'missing' end
if kind ~= 'hash' then return 'corrupt' end
local f = redis.call('HMGET', KEYS[1], 'owner', 'updated', 'rank')
if not f[1] then return 'corrupt' end
if redis.call('SADD', KEYS[3], message_id) == 0 then return 'duplicate' end
redis.call('RPUSH', KEYS[2], message)
redis.call('HINCRBY', KEYS[1], 'bytes', #message)
account(f[1], 0, #message)
bump(KEYS[1], f[1], f[2], f[3], at, new_rank)
return 'ok'
"""
)

# KEYS[1]: conversation; ARGV: base, id. Returns 1 if it existed.
_DELETE = (
    _LIB
    + """
return drop_conversation(ARGV[2])
"""
)

# KEYS[1]: an owner's index (conversations or memories); ARGV: base, record kind
# ('conversation' or 'memory'), start ('+' or '(' .. member), how many rows, how many members
# to look at at most, second field to read, now (memories expiring at or before it are skipped).
# Returns {continue_from, member, data, second, ...}: continue_from is the last member looked
# at when the budget ran out first ('' otherwise); data is '' for a record that is corrupt.
# A member whose record is gone is removed from the index.
_SCAN = (
    _LIB
    + """
local record, start, want, budget = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local second, at = ARGV[6], tonumber(ARGV[7])
local rows = {''}
local found, seen = 0, 0
while found < want do
  if seen >= budget then
    rows[1] = string.sub(start, 2)
    return rows
  end
  local batch = redis.call('ZREVRANGEBYLEX', KEYS[1], start, '-', 'LIMIT', 0,
    math.min(want - found, budget - seen))
  if #batch == 0 then return rows end
  for _, member in ipairs(batch) do
    seen = seen + 1
    start = '(' .. member
    local k = key(record, string.sub(member, 17))
    local f = redis.pcall('HMGET', k, 'data', second)
    if type(f) == 'table' and f['err'] then
      found = found + 1
      rows[#rows + 1] = member
      rows[#rows + 1] = ''
      rows[#rows + 1] = ''
    elseif not f[1] and redis.call('EXISTS', k) == 0 then
      redis.call('ZREM', KEYS[1], member)
    elseif record == 'memory' and f[2] and tonumber(f[2]) and tonumber(f[2]) <= at then
      -- expired: the sweeper deletes it
    else
      found = found + 1
      rows[#rows + 1] = member
      rows[#rows + 1] = f[1] or ''
      rows[#rows + 1] = f[2] or ''
    end
  end
end
return rows
"""
)

# KEYS[1]: memory; ARGV: base, id, owner, data, rank, expires ('' for none). 1 if stored.
_ADD_MEMORY = (
    _LIB
    + """
local id, owner, data, rank, expires = unpack(ARGV, 2)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'owner', owner, 'data', data, 'rank', rank)
if expires ~= '' then
  redis.call('HSET', KEYS[1], 'expires', expires)
  redis.call('ZADD', base .. 'expiring', expires, 'memory:' .. id)
end
redis.call('ZADD', key('memories', owner), 0, rank)
account(owner, 0, #data)
return 1
"""
)

# KEYS[1]: memory; ARGV: base, id, owner. 1 if it was theirs and went.
_DELETE_MEMORY = (
    _LIB
    + """
return drop_memory(ARGV[2], ARGV[3], false)
"""
)

# KEYS[1]: an owner's memory index; ARGV: base, owner, batch. Returns {deleted, looked at}.
_DELETE_MEMORIES = (
    _LIB
    + """
local owner, batch = ARGV[2], tonumber(ARGV[3])
local members = redis.call('ZRANGE', KEYS[1], 0, batch - 1)
local deleted = 0
for _, member in ipairs(members) do
  deleted = deleted + drop_memory(string.sub(member, 17), owner, true)
  redis.call('ZREM', KEYS[1], member)
end
return {deleted, #members}
"""
)

# KEYS[1]: expiring, KEYS[2]: idle; ARGV: base, now, idle rank bound ('' for none), limit.
_PURGE = (
    _LIB
    + """
local at, idle_before, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local n = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', at, 'LIMIT', 0, limit)) do
  if string.sub(member, 1, 13) == 'conversation:' then
    drop_conversation(string.sub(member, 14))
  elseif string.sub(member, 1, 7) == 'memory:' then
    drop_memory(string.sub(member, 8), nil, true)
  end
  redis.call('ZREM', KEYS[1], member)
  n = n + 1
end
if n < limit and idle_before ~= '' then
  local idle = redis.call('ZRANGEBYLEX', KEYS[2], '-', '(' .. idle_before, 'LIMIT', 0, limit - n)
  for _, member in ipairs(idle) do
    drop_conversation(string.sub(member, 17))
    redis.call('ZREM', KEYS[2], member)
    n = n + 1
  end
end
return n
"""
)

# KEYS[1]: conversation, KEYS[2]: its messages, KEYS[3]: its message ids; ARGV: base, id,
# owner, data, updated, rank, expires ('' for none), then message id and message, for each.
# Returns {'ok', messages stored}, {'conflict'} (another owner's) or {'corrupt'}.
_IMPORT = (
    _LIB
    + """
local id, owner, data, updated, rank, expires = unpack(ARGV, 2, 7)
local kind = kind_of(KEYS[1])
if kind == 'none' then
  insert(KEYS[1], id, owner, data, updated, rank, expires)
elseif kind ~= 'hash' then
  return {'corrupt'}
elseif redis.call('HGET', KEYS[1], 'owner') ~= owner then
  return {'conflict'}
else
  -- a later version of the conversation replaces the stored one; an older one changes nothing
  local f = redis.call('HMGET', KEYS[1], 'data', 'updated', 'rank')
  if not tonumber(f[2]) or tonumber(updated) > tonumber(f[2]) then
    local delta = #data - #(f[1] or '')
    redis.call('HSET', KEYS[1], 'data', data)
    redis.call('HINCRBY', KEYS[1], 'bytes', delta)
    account(owner, 0, delta)
    redis.call('ZREM', base .. 'expiring', 'conversation:' .. id)
    if expires ~= '' then
      redis.call('ZADD', base .. 'expiring', expires, 'conversation:' .. id)
    end
    bump(KEYS[1], owner, f[2], f[3], updated, rank)
  end
end
local stored, added = 0, 0
for i = 8, #ARGV - 1, 2 do
  if redis.call('SADD', KEYS[3], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i + 1])
    stored = stored + 1
    added = added + #ARGV[i + 1]
  end
end
if added > 0 then
  redis.call('HINCRBY', KEYS[1], 'bytes', added)
  account(owner, 0, added)
end
return {'ok', stored}
"""
)

# KEYS[1]: conversation, KEYS[2]: its summary; ARGV: base, summary. 1 if stored.
_SAVE_SUMMARY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

_SCRIPTS = {
    "create": _CREATE,
    "update": _UPDATE,
    "append": _APPEND,
    "delete": _DELETE,
    "scan": _SCAN,
    "add_memory": _ADD_MEMORY,
    "delete_memory": _DELETE_MEMORY,
    "delete_memories": _DELETE_MEMORIES,
    "purge": _PURGE,
    "save_summary": _SAVE_SUMMARY,
    "import": _IMPORT,
}

_SCAN_BUDGET = 1000
"""Members a listing looks at beyond the page it fills (expired memories, records gone):
past it the page ends early, with a cursor to go on from."""
_DELETE_BATCH = 500
"""Memories one script deletes in :meth:`RedisStore.delete_memories` (it loops)."""

# -- encodings -------------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode
_decode_conversation = msgspec.json.Decoder(Conversation).decode
_decode_message = msgspec.json.Decoder(Message).decode
_decode_memory = msgspec.json.Decoder(MemoryItem).decode
_decode_summary = msgspec.json.Decoder(Summary).decode

_RANK = re.compile(r"[0-9a-f]{16}", re.ASCII)
_MAX_INDEX = 2**53


def _rank(at: float, ident: str) -> str:
    """16 hex digits that sort (as bytes) like ``at`` sorts as a number, then ``ident``."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", at))
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | (1 << 63)
    return f"{bits:016x}{ident}"


def _number(value: float) -> str:
    """``value`` as Redis and Lua read it back exactly (``repr`` round-trips a double)."""
    return repr(float(value))


def _finite(value: float | None, field: str) -> None:
    if value is not None and not (-1e300 < value < 1e300):
        raise InvalidRequestError(f"{field} must be a finite number of seconds", field=field)


def _rank_cursor(cursor: str, tag: str) -> str:
    """The index member a conversation (``c``) or memory (``k``) cursor goes on after."""
    (member,) = decode_cursor(cursor, tag, str)
    if _RANK.match(member):
        return str(member)
    raise InvalidRequestError("cursor is not one this server issued", field="cursor")


def _message_cursor(cursor: str, conversation_id: str) -> int:
    """The place in the conversation's message list a message cursor goes on from."""
    of, place = decode_cursor(cursor, "m", str, int)
    if not 0 < place <= _MAX_INDEX:
        raise InvalidRequestError("cursor is not one this server issued", field="cursor")
    if of != conversation_id:
        raise InvalidRequestError("cursor is one of another conversation", field="cursor")
    return int(place)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _hash_tagged(prefix: str) -> str:
    """``prefix`` if Redis Cluster would take a hash tag from it (a non-empty ``{...}``), else
    ``prefix`` wrapped in braces: every key of the store then hashes to one slot."""
    opening = prefix.find("{")
    closing = prefix.find("}", opening + 1) if opening >= 0 else -1
    return prefix if closing > opening + 1 else "{" + prefix + "}"


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class RedisBacked:
    """What the Redis stores share: the shared ``[redis] url`` client, the key base (the
    prefix, a hash tag on a cluster), their Lua scripts, one deadline per operation and
    failures turned into :class:`~hubbub.errors.ComponentError` naming the store."""

    noun = "store"
    """What messages call it: ``the Redis <noun> at ...``."""
    role = "memory store"
    """What the log calls it when it starts."""
    needed_by = "memory.backend"
    """The setting that needs ``[redis] url`` (named when it is missing)."""
    scripts: dict[str, str] = {}
    """Its Lua scripts, by name."""

    def __init__(self, context: ComponentContext[RedisStoreSettings]) -> None:
        self._context = context
        config = context.config
        self.prefix = context.settings.key_prefix
        """The configured key prefix."""
        self.cluster = config.redis.cluster
        """Whether ``[redis] url`` is a Redis Cluster (then every key carries a hash tag)."""
        self.base = _hash_tagged(self.prefix) if self.cluster else self.prefix
        """What every key starts with: the prefix, made a hash tag on a cluster."""
        self.where = redacted_url(redis_url(config, self.needed_by))
        """The Redis URL without its password, for messages."""
        self.timeout = config.redis.timeout
        """Seconds one operation may take in all (``[redis] timeout``)."""
        self._client: redis.asyncio.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._failures: tuple[type[BaseException], ...] = (OSError, TimeoutError)
        self._logger = context.logger

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to ``[redis] url`` and check that Redis answers (a failure names it)."""
        import redis.exceptions

        self._failures = (redis.exceptions.RedisError, OSError, TimeoutError)
        client = await shared_redis(
            self._context.resources, self._context.config, needed_by=self.needed_by
        )
        self._client = client
        self._scripts = {name: client.register_script(body) for name, body in self.scripts.items()}
        await self._do("reach it", client.ping())
        self._logger.info(
            "%s in Redis at %s under %r%s",
            self.role,
            self.where,
            self.base,
            " (Redis Cluster: one hash slot)" if self.cluster else "",
        )

    async def health(self) -> Health:
        """``ok`` with the PING time while Redis answers within ``[redis] timeout``, ``down``
        with the reason when not."""
        return await ping_health(self._client, self.where, self._failures, self.timeout)

    async def aclose(self) -> None:
        """The shared client is closed by the runtime after its last user stops."""
        self._client = None

    # -- plumbing -----------------------------------------------------------------------------

    def _ready(self) -> redis.asyncio.Redis:
        if self._client is None:
            raise ComponentError(f"the Redis {self.noun} is not started")
        return self._client

    async def _do(self, doing: str, call: Awaitable[T]) -> T:
        """Await ``call`` within ``[redis] timeout``; a failure becomes a ComponentError."""
        try:
            async with asyncio.timeout(self.timeout):
                return await call
        except TimeoutError as exc:
            raise ComponentError(
                f"the Redis {self.noun} at {self.where} failed to {doing}: no answer within "
                f"{self.timeout:g} s ([redis] timeout)"
            ) from exc
        except self._failures as exc:
            raise ComponentError(
                f"the Redis {self.noun} at {self.where} failed to {doing}: {_why(exc)}"
            ) from exc


class RedisStore(RedisBacked):
    """A :class:`hubbub.contracts.MemoryStore` in Redis, shared by every process that uses the
    same ``[redis] url`` and ``key_prefix`` (see the module's documentation for the layout)."""

    scripts = _SCRIPTS

    def _key(self, kind: str, ident: str) -> str:
        return f"{self.base}{kind}:{ident}"

    async def _run(self, doing: str, script: str, keys: list[str], *args: object) -> Any:
        self._ready()
        return await self._do(doing, self._scripts[script](keys=keys, args=[self.base, *args]))

    def _corrupt(self, what: str, key: str, why: str) -> NoReturn:
        raise ComponentError(
            f"{what} in the Redis store at {self.where} is corrupt ({why}): delete it, or "
            f"restore key {key!r} from a backup"
        )

    def _skip(self, key: str, exc: BaseException | str) -> None:
        self._logger.warning(
            "skipped corrupt record %r in the Redis store at %s: %s",
            key,
            self.where,
            exc if isinstance(exc, str) else _why(exc),
        )

    # -- conversations ------------------------------------------------------------------------

    async def create_conversation(self, conversation: Conversation) -> Conversation:
        """Store a new conversation; :class:`~hubbub.errors.ConflictError` if its id is
        taken."""
        for field in ("created_at", "updated_at", "expires_at"):
            _finite(getattr(conversation, field), field)
        expires = conversation.expires_at
        created = await self._run(
            "create a conversation",
            "create",
            [self._key("conversation", conversation.id)],
            conversation.id,
            conversation.owner,
            _encode(conversation),
            _number(conversation.updated_at),
            _rank(conversation.updated_at, conversation.id),
            "" if expires is None else _number(expires),
        )
        if not created:
            raise ConflictError(f"a conversation with id {conversation.id!r} exists already")
        return conversation

    def _conversation(
        self, data: bytes | str, updated: bytes | str, owner: bytes | str
    ) -> Conversation:
        """A conversation from its hash's fields (``updated`` and ``owner`` are the truth)."""
        conversation = _decode_conversation(data)
        conversation.updated_at = float(updated)
        conversation.owner = _text(owner)
        return conversation

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation, ``None`` when there is none; a corrupt one raises."""
        client = self._ready()
        key = self._key("conversation", conversation_id)
        try:
            fields = await self._do(
                f"read conversation {conversation_id!r}",
                client.hmget(key, ["data", "updated", "owner"]),
            )
        except ComponentError as exc:
            if "WRONGTYPE" in str(exc):
                self._corrupt(f"conversation {conversation_id!r}", key, "not a hash")
            raise
        data, updated, owner = fields
        if data is None and updated is None and owner is None:
            return None
        try:
            if data is None or updated is None or owner is None:
                raise ValueError("fields are missing")
            return self._conversation(data, updated, owner)
        except (msgspec.DecodeError, ValueError) as exc:
            self._corrupt(f"conversation {conversation_id!r}", key, _why(exc))

    async def _scan(
        self, doing: str, index: str, record: str, second: str, start: str, limit: int
    ) -> tuple[list[tuple[str, bytes, bytes]], str | None]:
        """Up to ``limit + 1`` rows ``(member, data, second field)`` of ``index`` after
        ``start``, newest first, and where to go on when the page ended early."""
        if limit < 1:
            raise InvalidRequestError("limit must be at least 1", field="limit")
        reply = await self._run(
            doing,
            "scan",
            [index],
            record,
            start,
            limit + 1,
            limit + 1 + _SCAN_BUDGET,
            second,
            _number(now()),
        )
        rows = [(_text(reply[i]), reply[i + 1], reply[i + 2]) for i in range(1, len(reply) - 2, 3)]
        return rows, (_text(reply[0]) or None)

    @staticmethod
    def _next(rows: list[tuple[str, bytes, bytes]], more: str | None, limit: int) -> str | None:
        if len(rows) > limit:
            return rows[limit - 1][0]
        return more

    async def list_conversations(
        self, owner: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Conversation]:
        """``owner``'s conversations, most recently updated first (ties: higher id first)."""
        start = "(" + _rank_cursor(cursor, "c") if cursor else "+"
        rows, more = await self._scan(
            f"list the conversations of {owner!r}",
            self._key("conversations", owner),
            "conversation",
            "updated",
            start,
            limit,
        )
        items: list[Conversation] = []
        for member, data, updated in rows[:limit]:
            key = self._key("conversation", member[16:])
            try:
                items.append(self._conversation(data, updated, owner))
            except (msgspec.DecodeError, ValueError) as exc:
                self._skip(key, exc)
        following = self._next(rows, more, limit)
        return Page(items=items, next_cursor=encode_cursor("c", following) if following else None)

    async def update_conversation(self, conversation: Conversation) -> Conversation:
        """Replace title, model, metadata and ``expires_at``; bump ``updated_at``."""
        _finite(conversation.expires_at, "expires_at")
        at = now()
        conversation.updated_at = at
        expires = conversation.expires_at
        key = self._key("conversation", conversation.id)
        reply = await self._run(
            f"update conversation {conversation.id!r}",
            "update",
            [key],
            conversation.id,
            _encode(conversation),
            _number(at),
            _rank(at, conversation.id),
            "" if expires is None else _number(expires),
        )
        status = _text(reply[0])
        if status == "missing":
            raise NotFoundError(f"no conversation {conversation.id!r}")
        if status == "corrupt":
            self._corrupt(f"conversation {conversation.id!r}", key, "not a hash of its fields")
        conversation.updated_at = float(reply[1])
        conversation.owner = _text(reply[2])
        return conversation

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete the conversation with its messages and summary (a corrupt one too)."""
        deleted = await self._run(
            f"delete conversation {conversation_id!r}",
            "delete",
            [self._key("conversation", conversation_id)],
            conversation_id,
        )
        return bool(deleted)

    # -- messages -----------------------------------------------------------------------------

    async def append_message(self, message: Message) -> Message:
        """Append ``message`` and bump its conversation, in one step; a message whose id the
        conversation has already is refused (:class:`~hubbub.errors.ConflictError`), so a
        retried append never stores it twice."""
        conversation_id = message.conversation_id
        if conversation_id is None:
            raise InvalidRequestError("message has no conversation_id", field="conversation_id")
        _finite(message.created_at, "created_at")
        at = now()
        key = self._key("conversation", conversation_id)
        status = _text(
            await self._run(
                f"append a message to conversation {conversation_id!r}",
                "append",
                [
                    key,
                    self._key("messages", conversation_id),
                    self._key("message-ids", conversation_id),
                ],
                _encode(message),
                _number(at),
                _rank(at, conversation_id),
                message.id,
            )
        )
        if status == "missing":
            raise NotFoundError(f"no conversation {conversation_id!r}")
        if status == "duplicate":
            raise ConflictError(
                f"conversation {conversation_id!r} has a message {message.id!r} already"
            )
        if status == "corrupt":
            self._corrupt(f"conversation {conversation_id!r}", key, "not a hash of its fields")
        return message

    def _messages(self, conversation_id: str, raw: list[bytes | str]) -> list[Message]:
        messages = []
        for data in raw:
            try:
                messages.append(_decode_message(data))
            except msgspec.DecodeError as exc:
                self._skip(self._key("messages", conversation_id), exc)
        return messages

    async def list_messages(
        self, conversation_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Message]:
        """The conversation's messages in the order appended; the cursor is a place in the
        list (messages are never removed one by one, so it stays exact)."""
        start = _message_cursor(cursor, conversation_id) if cursor else 0
        if limit < 1:
            raise InvalidRequestError("limit must be at least 1", field="limit")
        client = self._ready()
        raw: list[bytes | str] = await self._do(
            f"list the messages of conversation {conversation_id!r}",
            client.lrange(self._key("messages", conversation_id), start, start + limit),
        )
        more = len(raw) > limit
        return Page(
            items=self._messages(conversation_id, raw[:limit]),
            next_cursor=encode_cursor("m", conversation_id, start + limit) if more else None,
        )

    async def recent_messages(self, conversation_id: str, *, limit: int) -> list[Message]:
        """The last ``limit`` messages, oldest first."""
        if limit < 1:
            return []
        client = self._ready()
        raw: list[bytes | str] = await self._do(
            f"read the messages of conversation {conversation_id!r}",
            client.lrange(self._key("messages", conversation_id), -limit, -1),
        )
        return self._messages(conversation_id, raw)

    # -- usage and expiry ---------------------------------------------------------------------

    async def usage(self, owner: str) -> StoreUsage:
        """One ``HMGET`` of the owner's counters."""
        client = self._ready()
        conversations, size = await self._do(
            f"read the usage of {owner!r}",
            client.hmget(self._key("usage", owner), ["conversations", "bytes"]),
        )
        return StoreUsage(
            conversations=max(0, int(conversations or 0)), bytes=max(0, int(size or 0))
        )

    async def purge(self, *, now: float, idle_before: float | None = None, limit: int) -> int:
        """Delete at most ``limit`` due items in one script: expired conversations and memories
        first (oldest expiry first), then conversations idle since before ``idle_before``
        (least recently updated first)."""
        if limit < 1:
            return 0
        bound = "" if idle_before is None else _rank(idle_before, "")
        purged = await self._run(
            "purge expired items",
            "purge",
            [self.base + "expiring", self.base + "idle"],
            _number(now),
            bound,
            limit,
        )
        return int(purged)

    # -- long-term memory ---------------------------------------------------------------------

    async def add_memory(self, item: MemoryItem) -> MemoryItem:
        """Store a memory; :class:`~hubbub.errors.ConflictError` if its id is taken."""
        _finite(item.created_at, "created_at")
        _finite(item.expires_at, "expires_at")
        expires = item.expires_at
        added = await self._run(
            f"store a memory of {item.owner!r}",
            "add_memory",
            [self._key("memory", item.id)],
            item.id,
            item.owner,
            _encode(item),
            _rank(item.created_at, item.id),
            "" if expires is None else _number(expires),
        )
        if not added:
            raise ConflictError(f"a memory with id {item.id!r} exists already")
        return item

    async def list_memories(
        self, owner: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[MemoryItem]:
        """``owner``'s memories that have not expired, newest first."""
        start = "(" + _rank_cursor(cursor, "k") if cursor else "+"
        rows, more = await self._scan(
            f"list the memories of {owner!r}",
            self._key("memories", owner),
            "memory",
            "expires",
            start,
            limit,
        )
        items: list[MemoryItem] = []
        for member, data, _ in rows[:limit]:
            key = self._key("memory", member[16:])
            try:
                items.append(_decode_memory(data))
            except msgspec.DecodeError as exc:
                self._skip(key, exc)
        following = self._next(rows, more, limit)
        return Page(items=items, next_cursor=encode_cursor("k", following) if following else None)

    async def delete_memory(self, owner: str, memory_id: str) -> bool:
        """Delete ``owner``'s memory; ``False`` when they have none of that id."""
        deleted = await self._run(
            f"delete memory {memory_id!r}",
            "delete_memory",
            [self._key("memory", memory_id)],
            memory_id,
            owner,
        )
        return bool(deleted)

    async def delete_memories(self, owner: str) -> int:
        """Delete all of ``owner``'s memories, a batch per script."""
        total = 0
        while True:
            deleted, looked_at = await self._run(
                f"delete the memories of {owner!r}",
                "delete_memories",
                [self._key("memories", owner)],
                owner,
                _DELETE_BATCH,
            )
            total += int(deleted)
            if int(looked_at) < _DELETE_BATCH:
                return total

    # -- summaries ----------------------------------------------------------------------------

    async def save_summary(self, summary: Summary) -> None:
        """Store the conversation's summary (replacing any), if the conversation exists."""
        conversation_id = summary.conversation_id
        saved = await self._run(
            f"save the summary of conversation {conversation_id!r}",
            "save_summary",
            [self._key("conversation", conversation_id), self._key("summary", conversation_id)],
            _encode(summary),
        )
        if not saved:
            raise NotFoundError(f"no conversation {conversation_id!r}")

    async def get_summary(self, conversation_id: str) -> Summary | None:
        """The latest summary; ``None`` when there is none (or it is corrupt: logged, and
        the conversation is shown whole until a new summary replaces it)."""
        client = self._ready()
        key = self._key("summary", conversation_id)
        try:
            data = await self._do(
                f"read the summary of conversation {conversation_id!r}", client.get(key)
            )
        except ComponentError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            self._skip(key, "not a string")
            return None
        if data is None:
            return None
        try:
            return _decode_summary(data)
        except msgspec.DecodeError as exc:
            self._skip(key, exc)
            return None

    # -- copying a whole store ----------------------------------------------------------------

    async def list_owners(self, *, limit: int = 100, cursor: str | None = None) -> Page[str]:
        """Owners of conversations or memories, ascending: one ``ZRANGEBYLEX`` of the owner
        index (kept by the same scripts as their usage)."""
        if limit < 1:
            raise InvalidRequestError("limit must be at least 1", field="limit")
        start = "(" + str(decode_cursor(cursor, "o", str)[0]) if cursor else "-"
        client = self._ready()
        raw: list[bytes | str] = await self._do(
            "list the owners",
            client.zrangebylex(self.base + "owners", start, "+", start=0, num=limit + 1),
        )
        owners = [_text(owner) for owner in raw]
        more = len(owners) > limit
        owners = owners[:limit]
        return Page(items=owners, next_cursor=encode_cursor("o", owners[-1]) if more else None)

    async def import_conversation(
        self, conversation: Conversation, messages: Sequence[Message]
    ) -> int:
        """Store ``conversation`` as given unless its id is taken (by the same owner's: replaced
        when this one is later, else kept; by another's: :class:`~hubbub.errors.ConflictError`),
        then append the messages whose ids it has not, without a bump, in one script."""
        for message in messages:
            if message.conversation_id != conversation.id:
                raise InvalidRequestError(
                    f"message {message.id!r} belongs to conversation "
                    f"{message.conversation_id!r}, not {conversation.id!r}",
                    field="conversation_id",
                )
            _finite(message.created_at, "created_at")
        for field in ("created_at", "updated_at", "expires_at"):
            _finite(getattr(conversation, field), field)
        expires = conversation.expires_at
        pairs: list[str | bytes] = []
        for message in messages:
            pairs += [message.id, _encode(message)]
        key = self._key("conversation", conversation.id)
        reply = await self._run(
            f"import conversation {conversation.id!r}",
            "import",
            [
                key,
                self._key("messages", conversation.id),
                self._key("message-ids", conversation.id),
            ],
            conversation.id,
            conversation.owner,
            _encode(conversation),
            _number(conversation.updated_at),
            _rank(conversation.updated_at, conversation.id),
            "" if expires is None else _number(expires),
            *pairs,
        )
        status = _text(reply[0])
        if status == "conflict":
            raise ConflictError(f"conversation {conversation.id!r} exists here with another owner")
        if status == "corrupt":
            self._corrupt(f"conversation {conversation.id!r}", key, "not a hash of its fields")
        return int(reply[1])


@hookimpl
def register_account_stores(register: Registrar) -> None:
    """Account store ``redis``: :class:`~hubbub_plugins.redis_accounts.RedisAccountStore`,
    under the same ``[plugins.redis_store] key_prefix`` as the memory store."""

    def build(context: ComponentContext[RedisStoreSettings]) -> RedisAccountStore:
        from hubbub_plugins.redis_accounts import RedisAccountStore  # it imports this module

        return RedisAccountStore(context)

    register(
        "redis",
        build,
        settings=RedisStoreSettings,
        description="users, sessions and API keys in Redis ([redis] url), shared by every process",
    )


@hookimpl
def register_memory_stores(register: Registrar) -> None:
    def build(context: ComponentContext[RedisStoreSettings]) -> RedisStore:
        return RedisStore(context)

    register(
        "redis",
        build,
        settings=RedisStoreSettings,
        description="conversations, messages and memories in Redis ([redis] url), shared by "
        "every process",
    )
