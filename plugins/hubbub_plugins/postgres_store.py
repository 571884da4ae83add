"""PostgreSQL memory store ``postgres``: the durable store for deployments of several machines.

Select it with ``[memory] backend = "postgres"`` and give it a database::

    [plugins.postgres_store]
    url = { env = "HUBBUB_POSTGRES_URL" }   # postgresql://user:password@host:5432/dbname

Every process opens a pool of connections (psycopg 3, :mod:`psycopg_pool`). At start the schema
is brought up to date (:mod:`hubbub_plugins.postgres_schema`: migrations recorded in a table,
applied under an advisory lock, a newer schema refused). Items are stored as their msgspec JSON
beside the columns that queries use; every listing is a keyset scan of an index. What an owner
keeps (:meth:`PostgresStore.usage`) is a counter row updated in the same statement as every
write, so reading it is one primary-key lookup.

When PostgreSQL goes away, calls in flight fail with :class:`hubbub.errors.ComponentError`
(the server answers 503) naming the database and the reason, never a raw driver error; calls
waiting for a connection give up after ``acquire_timeout``. The pool replaces broken
connections, so calls succeed again as soon as PostgreSQL is back. Reads that meet a connection
broken while idle are retried once on a fresh one; writes are not (they may have committed).
The URL's password is never logged nor shown in health.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec

from hubbub import hookimpl
from hubbub.config import Secret
from hubbub.errors import ComponentError, ConflictError, InvalidRequestError, NotFoundError
from hubbub.models import (
    Conversation,
    Health,
    MemoryItem,
    Message,
    Page,
    StoreUsage,
    Summary,
    now,
)
from hubbub.pagination import decode_cursor, encode_cursor
from hubbub_plugins.postgres_schema import SCHEMA_NAME, migrate

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    from hubbub.registry import ComponentContext, Registrar
    from hubbub_plugins.postgres_accounts import PostgresAccountStore

__all__ = ["PostgresStore", "PostgresStoreSettings"]

T = TypeVar("T")

_RECONNECT_WINDOW = 10.0
"""Seconds the pool keeps retrying (with back-off) to replace one lost connection before it
gives up on it; a later call that finds the pool empty starts a fresh attempt at once. Kept
short so that, after a long outage, no connection waits out a long back-off."""


class PostgresStoreSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``postgres_store`` plugin (``[plugins.postgres_store]``)."""

    url: Secret
    """The database: ``postgresql://user:password@host:5432/dbname`` (or a libpq
    ``key=value`` string). A secret, since it may carry a password: give it as
    ``{ env = "NAME" }`` or ``{ file = "PATH" }``. Required when the store is used."""
    schema: Annotated[str, msgspec.Meta(pattern=SCHEMA_NAME.pattern)] = "hubbub"
    """The PostgreSQL schema holding hubbub's tables (created at first start; lower-case
    letters, digits and ``_``). Several deployments can share a database with a schema each."""
    min_size: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 1
    """Connections each process keeps open even when idle (0 to 1,000)."""
    max_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    """Connections each process opens at most (1 to 1,000; at least ``min_size``). Mind the
    server's ``max_connections`` across every process."""
    connect_timeout: Annotated[int, msgspec.Meta(ge=2, le=300)] = 5
    """Seconds to wait for PostgreSQL to accept a new connection (2 to 300)."""
    acquire_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    """Seconds a call waits for a free connection (all busy, or PostgreSQL unreachable)
    before it fails with 503."""
    statement_timeout: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 30.0
    """Seconds PostgreSQL lets one statement run before cancelling it (0: no limit)."""
    health_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 2.0
    """Seconds a health check waits for a connection before reporting the store down."""

    def __post_init__(self) -> None:
        if self.max_size < self.min_size:
            raise ValueError(f"max_size ({self.max_size}) is below min_size ({self.min_size})")


_encode = msgspec.json.Encoder().encode
_decode_conversation = msgspec.json.Decoder(Conversation).decode
_decode_message = msgspec.json.Decoder(Message).decode
_decode_memory = msgspec.json.Decoder(MemoryItem).decode
_decode_summary = msgspec.json.Decoder(Summary).decode


def _conversation(row: Any) -> Conversation:
    """A conversation from ``(data, updated_at, owner, ...)``: the columns are the source of
    ``updated_at`` (appending bumps only the column) and ``owner``."""
    conversation = _decode_conversation(row[0])
    conversation.updated_at = row[1]
    conversation.owner = row[2]
    return conversation


def _page(
    rows: list[Any], limit: int, item: Callable[[Any], T], cursor: Callable[[Any], str]
) -> Page[T]:
    """A page of the first ``limit`` of ``rows`` (up to ``limit + 1`` were fetched: one more
    means there is a next page, which starts after the last row shown)."""
    shown = rows[: max(limit, 0)]
    more = len(rows) > len(shown) and bool(shown)
    return Page(items=[item(row) for row in shown], next_cursor=cursor(shown[-1]) if more else None)


def _why(exc: BaseException) -> str:
    """The error's message on one line (libpq's span several)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection is gone (PostgreSQL stopped, crashed, restarted or
    became unreachable), as opposed to a query's own failure."""
    import psycopg

    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _where(url: str) -> str:
    """``host:port/dbname`` of ``url``, without user or password, for messages."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:  # libpq's message may quote the URL, password included
        raise ComponentError(
            "[plugins.postgres_store] url is not a PostgreSQL URL "
            "(postgresql://user:password@host:5432/dbname) nor a key=value string"
        ) from None
    host = str(info.get("host") or "localhost")
    port = info.get("port")
    database = info.get("dbname") or info.get("user") or ""
    return f"{host}{f':{port}' if port else ''}/{database}"


# -- statements ---------------------------------------------------------------------------------

_CREATE_CONVERSATION = """
WITH added AS (
    INSERT INTO conversations (id, owner, updated_at, expires_at, bytes, total_bytes, data)
    VALUES (%(id)s, %(owner)s, %(updated_at)s, %(expires_at)s, %(bytes)s, %(bytes)s, %(data)s)
    RETURNING owner
)
INSERT INTO usage AS u (owner, conversations, bytes)
SELECT owner, 1, %(bytes)s FROM added
ON CONFLICT (owner) DO UPDATE
SET conversations = u.conversations + 1, bytes = u.bytes + excluded.bytes
"""

_UPDATE_CONVERSATION = """
WITH old AS (
    SELECT id, bytes FROM conversations WHERE id = %(id)s FOR UPDATE
), changed AS (
    UPDATE conversations c
    SET updated_at = greatest(c.updated_at, %(now)s), expires_at = %(expires_at)s,
        bytes = %(bytes)s, total_bytes = c.total_bytes - old.bytes + %(bytes)s, data = %(data)s
    FROM old WHERE c.id = old.id
    RETURNING c.owner, c.updated_at, old.bytes AS old_bytes
), counted AS (
    UPDATE usage u SET bytes = u.bytes + %(bytes)s - changed.old_bytes
    FROM changed WHERE u.owner = changed.owner
)
SELECT owner, updated_at FROM changed
"""

_DELETE_CONVERSATION = """
WITH gone AS (
    DELETE FROM conversations WHERE id = %s RETURNING owner, total_bytes
), counted AS (
    UPDATE usage u SET conversations = u.conversations - 1, bytes = u.bytes - gone.total_bytes
    FROM gone WHERE u.owner = gone.owner
)
SELECT count(*) FROM gone
"""

_APPEND_MESSAGE = """
WITH bumped AS (
    UPDATE conversations
    SET updated_at = greatest(updated_at, %(now)s), total_bytes = total_bytes + %(bytes)s
    WHERE id = %(conversation_id)s
    RETURNING owner
), added AS (
    INSERT INTO messages (id, conversation_id, data)
    SELECT %(id)s, %(conversation_id)s, %(data)s FROM bumped
), counted AS (
    INSERT INTO usage AS u (owner, bytes) SELECT owner, %(bytes)s FROM bumped
    ON CONFLICT (owner) DO UPDATE SET bytes = u.bytes + excluded.bytes
)
SELECT count(*) FROM bumped
"""

_LIST_CONVERSATIONS = (
    "SELECT data, updated_at, owner, id FROM conversations WHERE owner = %s "
    "ORDER BY updated_at DESC, id DESC LIMIT %s"
)
_LIST_CONVERSATIONS_AFTER = (
    "SELECT data, updated_at, owner, id FROM conversations WHERE owner = %s "
    "AND (updated_at, id) < (%s, %s) ORDER BY updated_at DESC, id DESC LIMIT %s"
)

_PURGE_CONVERSATIONS = """
WITH due AS (
    SELECT id FROM conversations WHERE {condition} LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM conversations c USING due WHERE c.id = due.id RETURNING c.owner, c.total_bytes
), per_owner AS (
    SELECT owner, count(*) AS n, sum(total_bytes) AS b FROM gone GROUP BY owner
), counted AS (
    UPDATE usage u SET conversations = u.conversations - per_owner.n, bytes = u.bytes - per_owner.b
    FROM per_owner WHERE u.owner = per_owner.owner
)
SELECT count(*) FROM gone
"""
_PURGE_EXPIRED = _PURGE_CONVERSATIONS.format(condition="expires_at <= %(now)s")
_PURGE_IDLE = _PURGE_CONVERSATIONS.format(condition="updated_at < %(idle_before)s")
_PURGE_MEMORIES = """
WITH due AS (
    SELECT id FROM memories WHERE expires_at <= %(now)s LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM memories m USING due WHERE m.id = due.id RETURNING m.owner, m.bytes
), per_owner AS (
    SELECT owner, sum(bytes) AS b FROM gone GROUP BY owner
), counted AS (
    UPDATE usage u SET bytes = u.bytes - per_owner.b
    FROM per_owner WHERE u.owner = per_owner.owner
)
SELECT count(*) FROM gone
"""

_ADD_MEMORY = """
WITH added AS (
    INSERT INTO memories (id, owner, created_at, expires_at, bytes, data)
    VALUES (%(id)s, %(owner)s, %(created_at)s, %(expires_at)s, %(bytes)s, %(data)s)
    RETURNING owner
)
INSERT INTO usage AS u (owner, bytes) SELECT owner, %(bytes)s FROM added
ON CONFLICT (owner) DO UPDATE SET bytes = u.bytes + excluded.bytes
"""

_LIST_MEMORIES = (
    "SELECT data, created_at, id FROM memories WHERE owner = %s "
    "AND (expires_at IS NULL OR expires_at > %s) "
    "ORDER BY created_at DESC, id DESC LIMIT %s"
)
_LIST_MEMORIES_AFTER = (
    "SELECT data, created_at, id FROM memories WHERE owner = %s "
    "AND (expires_at IS NULL OR expires_at > %s) AND (created_at, id) < (%s, %s) "
    "ORDER BY created_at DESC, id DESC LIMIT %s"
)

_DELETE_MEMORY = """
WITH gone AS (
    DELETE FROM memories WHERE id = %s AND owner = %s RETURNING owner, bytes
), counted AS (
    UPDATE usage u SET bytes = u.bytes - gone.bytes FROM gone WHERE u.owner = gone.owner
)
SELECT count(*) FROM gone
"""

_DELETE_MEMORIES = """
WITH gone AS (
    DELETE FROM memories WHERE owner = %(owner)s RETURNING bytes
), total AS (
    SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b FROM gone
), counted AS (
    UPDATE usage u SET bytes = u.bytes - total.b FROM total
    WHERE u.owner = %(owner)s AND total.n > 0
)
SELECT n FROM total
"""

_LIST_OWNERS = """
SELECT owner FROM usage u WHERE owner > %(after)s
AND (EXISTS (SELECT 1 FROM conversations c WHERE c.owner = u.owner)
     OR EXISTS (SELECT 1 FROM memories m WHERE m.owner = u.owner))
ORDER BY owner LIMIT %(limit)s
"""

_IMPORT_CONVERSATION = """
INSERT INTO conversations (id, owner, updated_at, expires_at, bytes, total_bytes, data)
VALUES (%(id)s, %(owner)s, %(updated_at)s, %(expires_at)s, %(bytes)s, %(bytes)s, %(data)s)
ON CONFLICT (id) DO NOTHING
RETURNING owner
"""

_REPLACE_CONVERSATION = """
UPDATE conversations
SET updated_at = %(updated_at)s, expires_at = %(expires_at)s, bytes = %(bytes)s,
    total_bytes = total_bytes - bytes + %(bytes)s, data = %(data)s
WHERE id = %(id)s
"""

_IMPORT_MESSAGES = """
INSERT INTO messages (id, conversation_id, data)
SELECT id, %(conversation_id)s, data FROM unnest(%(ids)s::text[], %(data)s::bytea[])
    WITH ORDINALITY AS given (id, data, n)
ORDER BY n
ON CONFLICT (id) DO NOTHING
RETURNING octet_length(data)
"""

_ADD_USAGE = """
INSERT INTO usage AS u (owner, conversations, bytes)
VALUES (%(owner)s, %(conversations)s, %(bytes)s)
ON CONFLICT (owner) DO UPDATE
SET conversations = u.conversations + excluded.conversations, bytes = u.bytes + excluded.bytes
"""

_SAVE_SUMMARY = """
INSERT INTO summaries (conversation_id, data) VALUES (%s, %s)
ON CONFLICT (conversation_id) DO UPDATE SET data = excluded.data
"""


class PostgresStore:
    """A :class:`hubbub.contracts.MemoryStore` in a PostgreSQL database.

    :param url: the database's URL (or libpq ``key=value`` string), password included.
    :param settings: the pool's sizes and timeouts, and the schema (``url`` in it is ignored).
    """

    def __init__(
        self,
        url: str,
        settings: PostgresStoreSettings | None = None,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self._settings = settings or PostgresStoreSettings(url=Secret(url))
        self._url = url
        self.schema = self._settings.schema
        self.where = _where(url)
        """``host:port/dbname``, without credentials: what messages and health name."""
        self._logger = logger or logging.getLogger("hubbub.plugins.postgres_store")
        self._pool: AsyncConnectionPool[Any] | None = None
        self._check: asyncio.Future[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def _conninfo(self) -> str:
        """The URL with hubbub's connection parameters: the schema first on the search path,
        the statement timeout, a connect timeout and an application name."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        settings = self._settings
        options = f"-c search_path={self.schema}"
        if settings.statement_timeout:
            options += f" -c statement_timeout={math.ceil(settings.statement_timeout * 1000)}"
        given = conninfo_to_dict(self._url).get("options")
        return make_conninfo(
            self._url,
            options=f"{given} {options}" if given else options,
            connect_timeout=settings.connect_timeout,
            application_name="hubbub",
        )

    async def start(self) -> None:
        """Bring the schema up to date (or refuse a newer one), then open the pool."""
        import psycopg
        from psycopg_pool import AsyncConnectionPool, PoolTimeout

        conninfo = self._conninfo()
        try:
            connection = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
            async with connection:
                applied = await migrate(connection, self.schema, where=self.where)
        except psycopg.Error as exc:
            raise ComponentError(
                f"the PostgreSQL store cannot use {self.where}: {_why(exc)}"
            ) from exc
        if applied:
            self._logger.info(
                "PostgreSQL %s: schema %r migrated to version %d",
                self.where,
                self.schema,
                applied[-1],
            )
        settings = self._settings
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=settings.min_size,
            max_size=settings.max_size,
            timeout=settings.acquire_timeout,
            reconnect_timeout=_RECONNECT_WINDOW,
            kwargs={"autocommit": True},
            name=f"hubbub-postgres-{self.schema}",
            open=False,
        )
        try:
            await self._pool.open(wait=True, timeout=float(settings.connect_timeout))
        except PoolTimeout as exc:
            raise ComponentError(
                f"the PostgreSQL store at {self.where} opened no connection in "
                f"{settings.connect_timeout} s"
            ) from exc
        self._logger.info(
            "PostgreSQL store at %s, schema %r, pool of %d to %d connections",
            self.where,
            self.schema,
            settings.min_size,
            settings.max_size,
        )

    async def health(self) -> Health:
        """``ok`` while a pooled connection answers ``SELECT 1`` within ``health_timeout``;
        ``down`` with the reason when PostgreSQL cannot be reached; ``degraded`` when it can
        but every pooled connection stayed busy."""
        from psycopg_pool import PoolTimeout

        pool = self._pool
        if pool is None:
            return Health(status="down", detail="not started")

        async def probe(connection: psycopg.AsyncConnection[Any]) -> None:
            await connection.execute("SELECT 1")

        try:
            await self._run("check health", probe, read=True, wait=self._settings.health_timeout)
        except ComponentError as exc:
            if not isinstance(exc.__cause__, PoolTimeout):
                return Health(status="down", detail=str(exc))
            problem = await self._connect_problem()
            if problem:
                return Health(
                    status="down", detail=f"PostgreSQL at {self.where} is unreachable: {problem}"
                )
            stats = pool.get_stats()
            return Health(
                status="degraded",
                detail=f"PostgreSQL at {self.where} answers, but no pooled connection was free "
                f"within {self._settings.health_timeout:g} s ({stats.get('pool_size', 0)} open, "
                f"{stats.get('requests_waiting', 0)} calls waiting)",
            )
        stats = pool.get_stats()
        return Health(
            detail=f"PostgreSQL at {self.where}, schema {self.schema}, "
            f"{stats.get('pool_size', 0)} connections ({stats.get('pool_available', 0)} idle)"
        )

    async def _connect_problem(self) -> str | None:
        """Why a new connection fails now (``None``: it does not), for health."""
        import psycopg

        try:
            connection = await psycopg.AsyncConnection.connect(self._conninfo(), connect_timeout=2)
        except psycopg.Error as exc:
            return _why(exc)
        await connection.close()
        return None

    async def aclose(self) -> None:
        """Close the pool (safe on a store whose start failed part-way, and twice)."""
        pool, self._pool = self._pool, None
        check, self._check = self._check, None
        if check is not None and not check.done():
            check.cancel()
            with contextlib.suppress(BaseException):
                await check
        if pool is not None:
            await pool.close(timeout=5.0)

    # -- running statements -------------------------------------------------------------------

    def _ready(self) -> AsyncConnectionPool[Any]:
        if self._pool is None:
            raise ComponentError(f"the PostgreSQL store at {self.where} is not started")
        return self._pool

    async def _run(
        self,
        doing: str,
        operation: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]],
        *,
        read: bool = False,
        wait: float | None = None,
    ) -> T:
        """Run ``operation`` on a pooled connection and translate every driver error.

        A deadlock or serialization failure (nothing committed) is retried, twice at most. A
        read that fails because its connection was lost runs once more after the pool's idle
        connections are checked; a write is never repeated, since it may have committed.
        """
        import psycopg
        from psycopg_pool import PoolTimeout

        pool = self._ready()
        for attempt in (1, 2, 3):
            try:
                async with pool.connection(timeout=wait) as connection:
                    return await operation(connection)
            except PoolTimeout as exc:
                waited = wait or self._settings.acquire_timeout
                raise ComponentError(
                    f"the PostgreSQL store at {self.where} could not {doing}: no connection "
                    f"within {waited:g} s"
                ) from exc
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                if attempt == 3:
                    raise self._failed(doing, exc) from exc
            except psycopg.errors.UniqueViolation as exc:
                detail = exc.diag.message_detail or _why(exc)
                raise ConflictError(f"cannot {doing}: {detail}") from exc
            except psycopg.DataError as exc:
                raise InvalidRequestError(f"cannot {doing}: {_why(exc)}") from exc
            except psycopg.Error as exc:
                if not _lost(exc):
                    raise self._failed(doing, exc) from exc
                check = self._recheck(exc)
                if not read or attempt > 1:
                    raise self._failed(doing, exc) from exc
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(check), self._settings.acquire_timeout)
        raise AssertionError("unreachable")  # pragma: no cover

    def _failed(self, doing: str, exc: BaseException) -> ComponentError:
        return ComponentError(
            f"the PostgreSQL store at {self.where} failed to {doing}: {_why(exc)}"
        )

    def _recheck(self, exc: BaseException) -> asyncio.Future[None]:
        """Have the pool test its idle connections and replace the broken ones (one check at a
        time), after a call found its connection lost."""
        if self._check is None or self._check.done():
            self._logger.warning(
                "lost a connection to PostgreSQL at %s (%s); checking the others",
                self.where,
                _why(exc),
            )
            self._check = asyncio.ensure_future(self._ready().check())
            self._check.add_done_callback(_quiet)
        return self._check

    # -- conversations ------------------------------------------------------------------------

    async def create_conversation(self, conversation: Conversation) -> Conversation:
        data = _encode(conversation)
        values = {
            "id": conversation.id,
            "owner": conversation.owner,
            "updated_at": conversation.updated_at,
            "expires_at": conversation.expires_at,
            "bytes": len(data),
            "data": data,
        }

        async def insert(connection: psycopg.AsyncConnection[Any]) -> None:
            await connection.execute(_CREATE_CONVERSATION, values)

        await self._run(f"create conversation {conversation.id!r}", insert)
        return conversation

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        if "\x00" in conversation_id:
            return None

        async def select(connection: psycopg.AsyncConnection[Any]) -> Any:
            cursor = await connection.execute(
                "SELECT data, updated_at, owner FROM conversations WHERE id = %s",
                (conversation_id,),
                binary=True,
            )
            return await cursor.fetchone()

        row = await self._run(f"read conversation {conversation_id!r}", select, read=True)
        return _conversation(row) if row else None

    async def list_conversations(
        self, owner: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Conversation]:
        after = decode_cursor(cursor, "c", float, str) if cursor else None

        async def select(connection: psycopg.AsyncConnection[Any]) -> list[Any]:
            if after is None:
                found = await connection.execute(
                    _LIST_CONVERSATIONS, (owner, limit + 1), binary=True
                )
            else:
                found = await connection.execute(
                    _LIST_CONVERSATIONS_AFTER, (owner, *after, limit + 1), binary=True
                )
            return await found.fetchall()

        rows = await self._run("list conversations", select, read=True)
        return _page(rows, limit, _conversation, lambda row: encode_cursor("c", row[1], row[3]))

    async def update_conversation(self, conversation: Conversation) -> Conversation:
        data = _encode(conversation)
        values = {
            "id": conversation.id,
            "now": now(),
            "expires_at": conversation.expires_at,
            "bytes": len(data),
            "data": data,
        }

        async def update(connection: psycopg.AsyncConnection[Any]) -> Any:
            cursor = await connection.execute(_UPDATE_CONVERSATION, values)
            return await cursor.fetchone()

        row = await self._run(f"update conversation {conversation.id!r}", update)
        if row is None:
            raise NotFoundError(f"no conversation {conversation.id!r}")
        conversation.owner, conversation.updated_at = row
        return conversation

    async def delete_conversation(self, conversation_id: str) -> bool:
        if "\x00" in conversation_id:
            return False
        return (
            await self._count(
                f"delete conversation {conversation_id!r}", _DELETE_CONVERSATION, (conversation_id,)
            )
            > 0
        )

    async def _count(self, doing: str, statement: str, params: Any) -> int:
        """Run a statement whose one row holds a count."""

        async def run(connection: psycopg.AsyncConnection[Any]) -> int:
            cursor = await connection.execute(statement, params)
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

        return await self._run(doing, run)

    # -- messages -----------------------------------------------------------------------------

    async def append_message(self, message: Message) -> Message:
        conversation_id = message.conversation_id
        if conversation_id is None:
            raise InvalidRequestError("message has no conversation_id", field="conversation_id")
        if "\x00" in conversation_id:
            raise NotFoundError(f"no conversation {conversation_id!r}")
        data = _encode(message)
        values = {
            "id": message.id,
            "conversation_id": conversation_id,
            "now": now(),
            "bytes": len(data),
            "data": data,
        }
        bumped = await self._count(
            f"append a message to conversation {conversation_id!r}", _APPEND_MESSAGE, values
        )
        if not bumped:
            raise NotFoundError(f"no conversation {conversation_id!r}")
        return message

    async def list_messages(
        self, conversation_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Message]:
        after = 0
        if cursor:  # [conversation, seq]: another conversation's cursor is refused
            of, after = decode_cursor(cursor, "m", str, int)
            if of != conversation_id:
                raise InvalidRequestError(
                    "cursor belongs to another conversation's messages", field="cursor"
                )
        if "\x00" in conversation_id:
            return Page(items=[])

        async def select(connection: psycopg.AsyncConnection[Any]) -> list[Any]:
            found = await connection.execute(
                "SELECT data, seq FROM messages WHERE conversation_id = %s AND seq > %s "
                "ORDER BY seq LIMIT %s",
                (conversation_id, after, limit + 1),
                binary=True,
            )
            return await found.fetchall()

        rows = await self._run(f"list the messages of {conversation_id!r}", select, read=True)
        return _page(
            rows,
            limit,
            lambda row: _decode_message(row[0]),
            lambda row: encode_cursor("m", conversation_id, row[1]),
        )

    async def recent_messages(self, conversation_id: str, *, limit: int) -> list[Message]:
        if "\x00" in conversation_id:
            return []

        async def select(connection: psycopg.AsyncConnection[Any]) -> list[Any]:
            found = await connection.execute(
                "SELECT data FROM (SELECT data, seq FROM messages WHERE conversation_id = %s "
                "ORDER BY seq DESC LIMIT %s) AS last ORDER BY seq",
                (conversation_id, limit),
                binary=True,
            )
            return await found.fetchall()

        rows = await self._run(f"read the messages of {conversation_id!r}", select, read=True)
        return [_decode_message(row[0]) for row in rows]

    # -- usage and expiry ---------------------------------------------------------------------

    async def usage(self, owner: str) -> StoreUsage:
        """One primary-key lookup of the owner's counter row."""

        async def select(connection: psycopg.AsyncConnection[Any]) -> Any:
            cursor = await connection.execute(
                "SELECT conversations, bytes FROM usage WHERE owner = %s", (owner,)
            )
            return await cursor.fetchone()

        row = await self._run("read usage", select, read=True)
        return StoreUsage(conversations=row[0], bytes=row[1]) if row else StoreUsage()

    async def purge(self, *, now: float, idle_before: float | None = None, limit: int) -> int:
        """Expired conversations first, then idle ones, then expired memories, ``limit`` in
        all, in one transaction; rows another transaction holds are skipped, not waited for."""

        async def delete(connection: psycopg.AsyncConnection[Any]) -> int:
            done = 0
            async with connection.transaction():
                steps = [(_PURGE_EXPIRED, {"now": now})]
                if idle_before is not None:
                    steps.append((_PURGE_IDLE, {"idle_before": idle_before}))
                steps.append((_PURGE_MEMORIES, {"now": now}))
                for statement, params in steps:
                    if done >= limit:
                        break
                    cursor = await connection.execute(statement, {**params, "limit": limit - done})
                    row = await cursor.fetchone()
                    done += int(row[0]) if row else 0
            return done

        if limit <= 0:
            return 0
        return await self._run("purge expired items", delete)

    # -- long-term memory ---------------------------------------------------------------------

    async def add_memory(self, item: MemoryItem) -> MemoryItem:
        data = _encode(item)
        values = {
            "id": item.id,
            "owner": item.owner,
            "created_at": item.created_at,
            "expires_at": item.expires_at,
            "bytes": len(data),
            "data": data,
        }

        async def insert(connection: psycopg.AsyncConnection[Any]) -> None:
            await connection.execute(_ADD_MEMORY, values)

        await self._run(f"add memory {item.id!r}", insert)
        return item

    async def list_memories(
        self, owner: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[MemoryItem]:
        after = decode_cursor(cursor, "k", float, str) if cursor else None
        moment = now()

        async def select(connection: psycopg.AsyncConnection[Any]) -> list[Any]:
            if after is None:
                found = await connection.execute(
                    _LIST_MEMORIES, (owner, moment, limit + 1), binary=True
                )
            else:
                found = await connection.execute(
                    _LIST_MEMORIES_AFTER, (owner, moment, *after, limit + 1), binary=True
                )
            return await found.fetchall()

        rows = await self._run("list memories", select, read=True)
        return _page(
            rows,
            limit,
            lambda row: _decode_memory(row[0]),
            lambda row: encode_cursor("k", row[1], row[2]),
        )

    async def delete_memory(self, owner: str, memory_id: str) -> bool:
        if "\x00" in memory_id or "\x00" in owner:
            return False
        return (
            await self._count(f"delete memory {memory_id!r}", _DELETE_MEMORY, (memory_id, owner))
            > 0
        )

    async def delete_memories(self, owner: str) -> int:
        return await self._count("delete memories", _DELETE_MEMORIES, {"owner": owner})

    # -- summaries ----------------------------------------------------------------------------

    async def save_summary(self, summary: Summary) -> None:
        import psycopg

        if "\x00" in summary.conversation_id:
            raise NotFoundError(f"no conversation {summary.conversation_id!r}")
        data = _encode(summary)

        async def upsert(connection: psycopg.AsyncConnection[Any]) -> None:
            try:
                await connection.execute(_SAVE_SUMMARY, (summary.conversation_id, data))
            except psycopg.errors.ForeignKeyViolation:
                raise NotFoundError(f"no conversation {summary.conversation_id!r}") from None

        await self._run(f"save the summary of {summary.conversation_id!r}", upsert)

    async def get_summary(self, conversation_id: str) -> Summary | None:
        if "\x00" in conversation_id:
            return None

        async def select(connection: psycopg.AsyncConnection[Any]) -> Any:
            cursor = await connection.execute(
                "SELECT data FROM summaries WHERE conversation_id = %s",
                (conversation_id,),
                binary=True,
            )
            return await cursor.fetchone()

        row = await self._run(f"read the summary of {conversation_id!r}", select, read=True)
        return _decode_summary(row[0]) if row else None

    # -- copying between stores ---------------------------------------------------------------

    async def list_owners(self, *, limit: int = 100, cursor: str | None = None) -> Page[str]:
        """Owners with a conversation or a memory, ascending: a scan of the usage table's
        primary key (every owner who ever stored anything has a row), each row checked against
        the owner indexes of conversations and memories."""
        after = decode_cursor(cursor, "o", str)[0] if cursor else ""

        async def select(connection: psycopg.AsyncConnection[Any]) -> list[Any]:
            found = await connection.execute(_LIST_OWNERS, {"after": after, "limit": limit + 1})
            return await found.fetchall()

        rows = await self._run("list owners", select, read=True)
        return _page(rows, limit, lambda row: row[0], lambda row: encode_cursor("o", row[0]))

    async def import_conversation(
        self, conversation: Conversation, messages: Sequence[Message]
    ) -> int:
        """One transaction: the conversation inserted, or replacing the stored one of the same
        owner when its ``updated_at`` is later (another owner's is a
        :class:`~hubbub.errors.ConflictError`), then the messages whose ids are new, in the
        order given, with the usage counter moved by what changed."""
        for message in messages:
            if message.conversation_id != conversation.id:
                raise InvalidRequestError(
                    f"message {message.id!r} belongs to conversation "
                    f"{message.conversation_id!r}, not {conversation.id!r}",
                    field="conversation_id",
                )
        data = _encode(conversation)
        values = {
            "id": conversation.id,
            "owner": conversation.owner,
            "updated_at": conversation.updated_at,
            "expires_at": conversation.expires_at,
            "bytes": len(data),
            "data": data,
        }
        batch = {
            "conversation_id": conversation.id,
            "ids": [message.id for message in messages],
            "data": [_encode(message) for message in messages],
        }

        async def write(connection: psycopg.AsyncConnection[Any]) -> int:
            async with connection.transaction():
                cursor = await connection.execute(_IMPORT_CONVERSATION, values)
                created = await cursor.fetchone() is not None
                grown = len(data) if created else 0
                if not created:
                    cursor = await connection.execute(
                        "SELECT owner, updated_at, bytes FROM conversations WHERE id = %s "
                        "FOR UPDATE",
                        (conversation.id,),
                    )
                    row = await cursor.fetchone()
                    if row is None or row[0] != conversation.owner:
                        raise ConflictError(
                            f"conversation {conversation.id!r} exists here with another owner"
                            if row
                            else f"conversation {conversation.id!r} was deleted meanwhile"
                        )
                    if conversation.updated_at > row[1]:  # a later version: it replaces ours
                        await connection.execute(_REPLACE_CONVERSATION, values)
                        grown = len(data) - row[2]
                added = stored = 0
                if messages:
                    cursor = await connection.execute(_IMPORT_MESSAGES, batch)
                    sizes = [size for (size,) in await cursor.fetchall()]
                    stored, added = len(sizes), sum(sizes)
                if added:
                    await connection.execute(
                        "UPDATE conversations SET total_bytes = total_bytes + %s WHERE id = %s",
                        (added, conversation.id),
                    )
                if created or added or grown:
                    await connection.execute(
                        _ADD_USAGE,
                        {
                            "owner": conversation.owner,
                            "conversations": int(created),
                            "bytes": added + grown,
                        },
                    )
                return stored

        return await self._run(f"import conversation {conversation.id!r}", write)


def _quiet(future: asyncio.Future[None]) -> None:
    """Retrieve a background pool check's outcome (its failure is the pool's to log)."""
    if not future.cancelled():
        future.exception()


@hookimpl
def register_account_stores(register: Registrar) -> None:
    """Account store ``postgres``:
    :class:`~hubbub_plugins.postgres_accounts.PostgresAccountStore`, in the table ``records``
    of the same database and schema as the memory store."""

    def build(context: ComponentContext[PostgresStoreSettings]) -> PostgresAccountStore:
        from hubbub_plugins.postgres_accounts import PostgresAccountStore  # it imports us

        settings = context.settings
        return PostgresAccountStore(settings.url.reveal(), settings, logger=context.logger)

    register(
        "postgres",
        build,
        settings=PostgresStoreSettings,
        description="users, sessions and API keys in PostgreSQL (psycopg pool), shared by "
        "every process",
    )


@hookimpl
def register_memory_stores(register: Registrar) -> None:
    def build(context: ComponentContext[PostgresStoreSettings]) -> PostgresStore:
        settings = context.settings
        return PostgresStore(settings.url.reveal(), settings, logger=context.logger)

    register(
        "postgres",
        build,
        settings=PostgresStoreSettings,
        description="conversations, messages and memories in PostgreSQL (psycopg pool), "
        "shared by every process",
    )
