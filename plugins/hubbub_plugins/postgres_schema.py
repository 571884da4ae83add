"""The ``postgres`` memory and account stores' schema and its migrations, applied at start.

Every table lives in one schema of its own (``[plugins.postgres_store] schema``, default
``hubbub``). The table ``hubbub_schema`` in it records each migration applied (version,
description, when). :func:`migrate` runs in one transaction that first takes a transaction-level
advisory lock, so several processes starting at once apply each migration exactly once (the
others wait, then find nothing to do), and a failed migration leaves nothing half-done. A
database whose schema is newer than this code knows is refused: an older hubbub must not write
to tables it does not understand.

To change the schema, append a :class:`Migration` to :data:`MIGRATIONS` (never edit one that was
released): it runs once on every database at its next start.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hubbub.errors import ComponentError

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATIONS", "SCHEMA_NAME", "Migration", "migrate", "schema_version"]

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
"""What a schema name may be: a lower-case PostgreSQL identifier that needs no quoting."""


@dataclass(frozen=True)
class Migration:
    """One step of the schema: applied once, in order of :attr:`version`."""

    version: int
    """Its number: one more than the previous migration's."""
    description: str
    """What it does, recorded with it in ``hubbub_schema``."""
    sql: str
    """The statements, run with the store's schema first on the ``search_path``."""


_V1 = """
CREATE TABLE conversations (
    id TEXT COLLATE "C" PRIMARY KEY,
    owner TEXT COLLATE "C" NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    bytes BIGINT NOT NULL,
    total_bytes BIGINT NOT NULL,
    data BYTEA NOT NULL
);
COMMENT ON COLUMN conversations.bytes IS 'stored_size() of the conversation itself';
COMMENT ON COLUMN conversations.total_bytes IS 'bytes plus the bytes of its messages';
COMMENT ON COLUMN conversations.data IS 'msgspec JSON; the columns hold owner and updated_at';
CREATE INDEX conversations_by_owner ON conversations (owner, updated_at DESC, id DESC);
CREATE INDEX conversations_by_expiry ON conversations (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX conversations_by_update ON conversations (updated_at);

CREATE TABLE messages (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    data BYTEA NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, seq);

CREATE TABLE memories (
    id TEXT COLLATE "C" PRIMARY KEY,
    owner TEXT COLLATE "C" NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION,
    bytes BIGINT NOT NULL,
    data BYTEA NOT NULL
);
CREATE INDEX memories_by_owner ON memories (owner, created_at DESC, id DESC);
CREATE INDEX memories_by_expiry ON memories (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE summaries (
    conversation_id TEXT COLLATE "C" PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    data BYTEA NOT NULL
);

CREATE TABLE usage (
    owner TEXT COLLATE "C" PRIMARY KEY,
    conversations BIGINT NOT NULL DEFAULT 0,
    bytes BIGINT NOT NULL DEFAULT 0
);
COMMENT ON TABLE usage IS 'per owner: kept in the transaction of every write that changes it';
-- Every identifier column is in the "C" collation: orders are those of the strings' code
-- points (as in Python), whatever the database's locale, and compare fastest.
"""

_V2 = """
CREATE TABLE records (
    kind TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    owner TEXT COLLATE "C" NOT NULL,
    lookup TEXT COLLATE "C",
    version BIGINT NOT NULL,
    expires_at DOUBLE PRECISION,
    data BYTEA NOT NULL,
    PRIMARY KEY (kind, id)
);
COMMENT ON TABLE records IS 'the account store: users, login sessions, API keys (by kind)';
COMMENT ON COLUMN records.data IS 'opaque to the store: msgspec JSON written by hubbub';
CREATE UNIQUE INDEX records_by_lookup ON records (kind, lookup) WHERE lookup IS NOT NULL;
CREATE INDEX records_by_owner ON records (kind, owner, id);
CREATE INDEX records_by_expiry ON records (expires_at) WHERE expires_at IS NOT NULL;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "conversations, messages, memories, summaries and per-owner usage", _V1),
    Migration(2, "account records: users, login sessions and API keys", _V2),
)
"""Every migration, oldest first."""


def _lock_key(schema: str) -> int:
    """The advisory lock of ``schema``'s migrations: a signed 64-bit number from its name."""
    digest = hashlib.blake2b(f"hubbub-schema:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def schema_version(connection: psycopg.AsyncConnection[Any], schema: str) -> int:
    """The newest migration applied to ``schema`` (0 when none, or no such schema)."""
    cursor = await connection.execute(
        "SELECT to_regclass(format('%%I.hubbub_schema', %s::text)) IS NOT NULL", (schema,)
    )
    row = await cursor.fetchone()
    if not row or not row[0]:
        return 0
    from psycopg import sql

    cursor = await connection.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}.hubbub_schema").format(
            sql.Identifier(schema)
        )
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def migrate(
    connection: psycopg.AsyncConnection[Any],
    schema: str,
    *,
    where: str,
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> list[int]:
    """Bring ``schema`` up to the newest of ``migrations``; return the versions applied now.

    :param connection: a connection of its own, not in a transaction (autocommit or idle).
    :param where: the database, without credentials, for messages (``host:port/dbname``).
    :raises ComponentError: when the database's schema is newer than ``migrations`` know (naming
        both versions); a failing migration's error propagates, and nothing of it stays.
    """
    if not SCHEMA_NAME.match(schema):
        raise ComponentError(f"the PostgreSQL schema name {schema!r} is not a plain identifier")
    latest = migrations[-1].version if migrations else 0
    applied: list[int] = []
    from psycopg import sql

    name = sql.Identifier(schema)
    async with connection.transaction():
        # A migration may take long, and waiting for another process's lock too.
        await connection.execute("SET LOCAL statement_timeout = 0")
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        # CREATE SCHEMA IF NOT EXISTS needs the database's CREATE privilege even when the
        # schema exists: a role given only a schema its DBA made must still start.
        found = await connection.execute("SELECT to_regnamespace(%s)", (schema,))
        row = await found.fetchone()
        if row is None or row[0] is None:
            await connection.execute(sql.SQL("CREATE SCHEMA {}").format(name))
        await connection.execute(sql.SQL("SET LOCAL search_path TO {}").format(name))
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS hubbub_schema ("
            " version INTEGER PRIMARY KEY,"
            " description TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        current = await schema_version(connection, schema)
        if current > latest:
            raise ComponentError(
                f"the PostgreSQL database {where} has hubbub schema version {current} (in schema "
                f"{schema!r}), newer than version {latest}, the newest this hubbub knows: "
                "upgrade hubbub, or point [plugins.postgres_store] at another database or schema"
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            await connection.execute(migration.sql.encode())
            await connection.execute(
                "INSERT INTO hubbub_schema (version, description) VALUES (%s, %s)",
                (migration.version, migration.description),
            )
            applied.append(migration.version)
    return applied
