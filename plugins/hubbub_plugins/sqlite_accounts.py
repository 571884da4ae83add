"""The ``sqlite`` account store: users, sessions and API keys in a SQLite file
(``accounts.sqlite3`` in the data directory), one table of records. Several processes on one
host may share the file; processes on several hosts share a PostgreSQL or Redis account store
instead. Registered by the ``sqlite_store`` plugin."""

from __future__ import annotations

import sqlite3

import msgspec

from hubbub.errors import ConflictError, NotFoundError
from hubbub.models import Health, Record
from hubbub.sqlite import DatabaseFailedError, SQLiteDatabase

__all__ = ["SQLiteAccountStore"]

MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE records (kind TEXT NOT NULL, id TEXT NOT NULL, owner TEXT NOT NULL, "
        "lookup TEXT, version INTEGER NOT NULL, expires_at REAL, data BLOB NOT NULL, "
        "PRIMARY KEY (kind, id))",
        "CREATE UNIQUE INDEX records_lookup ON records (kind, lookup) WHERE lookup IS NOT NULL",
        "CREATE INDEX records_owner ON records (kind, owner, id)",
        "CREATE INDEX records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL",
    ],
]
"""The schema, one list of statements per version."""

_COLUMNS = "kind, id, owner, lookup, version, expires_at, data"


def _record(row: tuple[object, ...]) -> Record:
    kind, record_id, owner, lookup, version, expires_at, data = row
    return Record(
        kind=str(kind),
        id=str(record_id),
        owner=str(owner),
        lookup=None if lookup is None else str(lookup),
        version=int(version),  # type: ignore[call-overload]
        expires_at=None if expires_at is None else float(expires_at),  # type: ignore[arg-type]
        data=bytes(data),  # type: ignore[call-overload]
    )


class SQLiteAccountStore:
    """A :class:`hubbub.contracts.AccountStore` in a SQLite file."""

    def __init__(self, path: str, busy_timeout: float = 5.0) -> None:
        # Credentials: a file deleted or replaced under a running server is an error, not an
        # empty store (or another one) quietly served from the file still open.
        self.db = SQLiteDatabase(
            path, migrations=MIGRATIONS, busy_timeout=busy_timeout, watch_file=True
        )

    async def start(self) -> None:
        """Open the file, creating or upgrading its schema."""
        await self.db.open()

    async def health(self) -> Health:
        """``ok`` with the file's path, or ``down`` with what is wrong with it."""
        try:
            self.db.check_file()
        except DatabaseFailedError as exc:
            return Health(status="down", detail=str(exc))
        problem = await self.db.problem()
        return Health(status="down", detail=problem) if problem else Health(detail=self.db.path)

    async def aclose(self) -> None:
        """Close the file."""
        await self.db.close()

    async def create(self, record: Record) -> Record:
        created = msgspec.structs.replace(record, version=1)

        def insert(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    f"INSERT INTO records ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        created.kind,
                        created.id,
                        created.owner,
                        created.lookup,
                        1,
                        created.expires_at,
                        created.data,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ConflictError(f"{record.kind} {record.id!r} exists already") from None

        await self.db.run(insert, write=True)
        return created

    async def get(self, kind: str, record_id: str) -> Record | None:
        def select(db: sqlite3.Connection) -> Record | None:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM records WHERE kind = ? AND id = ?", (kind, record_id)
            ).fetchone()
            return None if row is None else _record(row)

        return await self.db.run(select)

    async def find(self, kind: str, lookup: str) -> Record | None:
        def select(db: sqlite3.Connection) -> Record | None:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM records WHERE kind = ? AND lookup = ?", (kind, lookup)
            ).fetchone()
            return None if row is None else _record(row)

        return await self.db.run(select)

    async def list_records(
        self, kind: str, *, owner: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[Record]:
        clauses, params = ["kind = ?"], [kind]
        if owner is not None:
            clauses.append("owner = ?")
            params.append(owner)
        if after is not None:
            clauses.append("id > ?")
            params.append(after)

        def select(db: sqlite3.Connection) -> list[Record]:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM records WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?",
                (*params, max(0, limit)),
            ).fetchall()
            return [_record(row) for row in rows]

        return await self.db.run(select)

    async def replace(self, record: Record) -> Record:
        updated = msgspec.structs.replace(record, version=record.version + 1)

        def update(db: sqlite3.Connection) -> None:
            try:
                changed = db.execute(
                    "UPDATE records SET owner = ?, lookup = ?, version = ?, expires_at = ?, "
                    "data = ? WHERE kind = ? AND id = ? AND version = ?",
                    (
                        updated.owner,
                        updated.lookup,
                        updated.version,
                        updated.expires_at,
                        updated.data,
                        record.kind,
                        record.id,
                        record.version,
                    ),
                ).rowcount
            except sqlite3.IntegrityError:
                raise ConflictError(
                    f"another {record.kind} has the lookup of {record.id!r}"
                ) from None
            if changed:
                return
            exists = db.execute(
                "SELECT 1 FROM records WHERE kind = ? AND id = ?", (record.kind, record.id)
            ).fetchone()
            if exists is None:
                raise NotFoundError(f"there is no {record.kind} {record.id!r}")
            raise ConflictError(f"{record.kind} {record.id!r} changed meanwhile")

        await self.db.run(update, write=True)
        return updated

    async def delete(self, kind: str, record_id: str) -> bool:
        def remove(db: sqlite3.Connection) -> bool:
            return bool(
                db.execute(
                    "DELETE FROM records WHERE kind = ? AND id = ?", (kind, record_id)
                ).rowcount
            )

        return await self.db.run(remove, write=True)

    async def purge(self, *, now: float, limit: int) -> int:
        def remove(db: sqlite3.Connection) -> int:
            return db.execute(
                "DELETE FROM records WHERE rowid IN (SELECT rowid FROM records "
                "WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
                (now, max(0, limit)),
            ).rowcount

        return await self.db.run(remove, write=True)
