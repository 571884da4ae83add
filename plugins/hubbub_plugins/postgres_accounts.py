"""Account store ``postgres``: users, login sessions and API keys in PostgreSQL, shared by every
process that uses the same database and schema.

Select it with ``[accounts] backend = "postgres"`` (or leave ``[accounts] backend`` unset with
``[memory] backend = "postgres"``); it takes the ``[plugins.postgres_store]`` settings. Records
live in the table ``records`` of the store's schema (created by migration 2 of
:mod:`hubbub_plugins.postgres_schema`): primary key ``(kind, id)``, a unique index on
``(kind, lookup)`` where ``lookup`` is set, an index on ``(kind, owner, id)`` for listings and
one on ``expires_at`` for purges. Text keys are in the ``"C"`` collation, so ids list in byte
order, as in the other stores.

Every operation is one statement, so it is atomic on its own: :meth:`PostgresAccountStore.replace`
is an ``UPDATE ... WHERE version = ...`` that also tells a missing record from a changed one,
and a taken id or lookup is a :class:`hubbub.errors.ConflictError`. Connections, timeouts and
failures are the memory store's (:class:`hubbub_plugins.postgres_store.PostgresStore`: a pool of
its own, migrations at start, a PostgreSQL that goes away makes calls fail with
:class:`hubbub.errors.ComponentError`, which the server answers with 503).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec

from hubbub.errors import ConflictError, NotFoundError
from hubbub.models import Health, Record
from hubbub_plugins.postgres_store import PostgresStore, PostgresStoreSettings

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresAccountStore"]

_COLUMNS = "kind, id, owner, lookup, version, expires_at, data"

_CREATE = f"""
INSERT INTO records ({_COLUMNS}) VALUES (%s, %s, %s, %s, 1, %s, %s)
ON CONFLICT DO NOTHING
"""

# The CTEs see one snapshot: ``changed`` is the row written (none when the version differed
# or there is no record, the UPDATE re-checking the version after any concurrent writer),
# ``found`` tells the two apart.
_REPLACE = """
WITH found AS (
    SELECT 1 FROM records WHERE kind = %(kind)s AND id = %(id)s
), changed AS (
    UPDATE records
    SET owner = %(owner)s, lookup = %(lookup)s, version = version + 1,
        expires_at = %(expires_at)s, data = %(data)s
    WHERE kind = %(kind)s AND id = %(id)s AND version = %(version)s
    RETURNING version
)
SELECT (SELECT version FROM changed), EXISTS (SELECT 1 FROM found)
"""

_PURGE = """
DELETE FROM records r USING (
    SELECT kind, id FROM records WHERE expires_at <= %s LIMIT %s FOR UPDATE SKIP LOCKED
) due
WHERE r.kind = due.kind AND r.id = due.id
"""


def _record(row: Any) -> Record:
    kind, record_id, owner, lookup, version, expires_at, data = row
    return Record(
        kind=kind,
        id=record_id,
        owner=owner,
        lookup=lookup,
        version=int(version),
        expires_at=expires_at,
        data=bytes(data),
    )


class PostgresAccountStore:
    """A :class:`hubbub.contracts.AccountStore` in a PostgreSQL database (see the module's
    documentation).

    :param url: the database's URL (or libpq ``key=value`` string), password included.
    :param settings: the ``postgres_store`` plugin's settings (pool, timeouts, schema).
    """

    def __init__(
        self,
        url: str,
        settings: PostgresStoreSettings | None = None,
        *,
        logger: logging.Logger | None = None,
    ) -> None:
        self._database = PostgresStore(
            url, settings, logger=logger or logging.getLogger("hubbub.plugins.postgres_store")
        )
        self.where = self._database.where
        """``host:port/dbname``, without credentials: what messages and health name."""
        self.schema = self._database.schema
        """The PostgreSQL schema holding the ``records`` table."""

    async def start(self) -> None:
        """Bring the schema up to date (or refuse a newer one), then open the pool."""
        await self._database.start()

    async def health(self) -> Health:
        """As the memory store's: ``ok`` while a pooled connection answers, ``down`` with the
        reason when PostgreSQL cannot be reached, ``degraded`` when every connection is busy."""
        return await self._database.health()

    async def aclose(self) -> None:
        """Close the pool (safe after a failed start, and twice)."""
        await self._database.aclose()

    async def _fetch(self, doing: str, statement: str, params: Any) -> list[Any]:
        """The rows of a read (retried once on a fresh connection after a lost one)."""

        async def select(connection: psycopg.AsyncConnection[Any]) -> list[Any]:
            cursor = await connection.execute(statement, params, binary=True)
            return await cursor.fetchall()

        return await self._database._run(doing, select, read=True)

    # -- the contract -------------------------------------------------------------------------

    async def create(self, record: Record) -> Record:
        """One ``INSERT ... ON CONFLICT DO NOTHING``: no row means a taken id or lookup."""
        params = (
            record.kind,
            record.id,
            record.owner,
            record.lookup,
            record.expires_at,
            record.data,
        )

        async def insert(connection: psycopg.AsyncConnection[Any]) -> int:
            cursor = await connection.execute(_CREATE, params)
            return cursor.rowcount

        if not await self._database._run(f"create {record.kind} {record.id!r}", insert):
            raise ConflictError(
                f"{record.kind} {record.id!r} exists already, or another has its lookup"
            )
        return msgspec.structs.replace(record, version=1)

    async def get(self, kind: str, record_id: str) -> Record | None:
        """A primary-key lookup."""
        if "\x00" in kind or "\x00" in record_id:  # PostgreSQL text cannot hold one
            return None
        rows = await self._fetch(
            f"read {kind} {record_id!r}",
            f"SELECT {_COLUMNS} FROM records WHERE kind = %s AND id = %s",
            (kind, record_id),
        )
        return _record(rows[0]) if rows else None

    async def find(self, kind: str, lookup: str) -> Record | None:
        """A lookup in the unique ``(kind, lookup)`` index."""
        if "\x00" in kind or "\x00" in lookup:
            return None
        rows = await self._fetch(
            f"find a {kind} by its lookup",
            f"SELECT {_COLUMNS} FROM records WHERE kind = %s AND lookup = %s",
            (kind, lookup),
        )
        return _record(rows[0]) if rows else None

    async def list_records(
        self, kind: str, *, owner: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[Record]:
        """A keyset scan of the primary key, or of the owner index with ``owner``."""
        if limit < 1 or any("\x00" in text for text in (kind, owner or "", after or "")):
            return []
        clauses, params = ["kind = %s"], [kind]
        if owner is not None:
            clauses.append("owner = %s")
            params.append(owner)
        if after is not None:
            clauses.append("id > %s")
            params.append(after)
        rows = await self._fetch(
            f"list the {kind} records",
            f"SELECT {_COLUMNS} FROM records WHERE {' AND '.join(clauses)} ORDER BY id LIMIT %s",
            (*params, limit),
        )
        return [_record(row) for row in rows]

    async def replace(self, record: Record) -> Record:
        """One ``UPDATE ... WHERE version = ...`` that tells a missing record (404) from one
        written meanwhile (409); a lookup another record has is a conflict too."""
        import psycopg

        params = {
            "kind": record.kind,
            "id": record.id,
            "owner": record.owner,
            "lookup": record.lookup,
            "expires_at": record.expires_at,
            "data": record.data,
            "version": record.version,
        }

        async def update(connection: psycopg.AsyncConnection[Any]) -> Any:
            try:
                cursor = await connection.execute(_REPLACE, params)
            except psycopg.errors.UniqueViolation:
                raise ConflictError(
                    f"another {record.kind} has the lookup of {record.id!r}"
                ) from None
            return await cursor.fetchone()

        if "\x00" in record.kind or "\x00" in record.id:
            raise NotFoundError(f"there is no {record.kind} {record.id!r}")
        version, found = await self._database._run(f"replace {record.kind} {record.id!r}", update)
        if version is not None:
            return msgspec.structs.replace(record, version=int(version))
        if not found:
            raise NotFoundError(f"there is no {record.kind} {record.id!r}")
        raise ConflictError(f"{record.kind} {record.id!r} changed meanwhile")

    async def delete(self, kind: str, record_id: str) -> bool:
        """A primary-key ``DELETE``."""
        if "\x00" in kind or "\x00" in record_id:
            return False

        async def remove(connection: psycopg.AsyncConnection[Any]) -> int:
            cursor = await connection.execute(
                "DELETE FROM records WHERE kind = %s AND id = %s", (kind, record_id)
            )
            return cursor.rowcount

        return bool(await self._database._run(f"delete {kind} {record_id!r}", remove))

    async def purge(self, *, now: float, limit: int) -> int:
        """Delete at most ``limit`` records due by ``now``, skipping rows another process is
        writing or purging at the moment (the next purge gets them)."""
        if limit < 1:
            return 0

        async def remove(connection: psycopg.AsyncConnection[Any]) -> int:
            cursor = await connection.execute(_PURGE, (now, limit))
            return cursor.rowcount

        return int(await self._database._run("purge expired records", remove))
