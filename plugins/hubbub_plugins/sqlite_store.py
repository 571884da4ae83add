"""SQLite memory store ``sqlite``: conversations, messages, summaries and memories in one file.

The default store: nothing to install or run. Database calls run on a dedicated thread
(:class:`hubbub.sqlite.SQLiteDatabase`), never on the event loop; several processes can share the
file, and a call that meets another process's write lock is retried for up to ``busy_timeout``
seconds (then a 503). The schema is versioned (``PRAGMA user_version``, see :data:`MIGRATIONS`):
a file from an earlier release is upgraded in place at start, in one transaction; a file from a
newer release is refused.

What each owner keeps (:meth:`SQLiteStore.usage`) is one row of ``owner_usage``, kept by
triggers in the same transaction as every write from byte counts stored beside the data
(``conversations.bytes``: the conversation's encoded size plus its messages'; ``memories.bytes``:
the memory's): asking costs one primary-key lookup, whatever the owner keeps.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from hubbub import hookimpl
from hubbub.errors import ConflictError, InvalidRequestError, NotFoundError
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
from hubbub.sqlite import SQLiteDatabase
from hubbub_plugins.sqlite_accounts import SQLiteAccountStore

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar

SCHEMA_V1: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS conversations (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        updated_at REAL NOT NULL,
        data BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (owner, updated_at, id)",
    """CREATE TABLE IF NOT EXISTS messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
        data BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, seq)",
)
"""Version 1 (the first release): conversations and messages. ``IF NOT EXISTS`` because
files of that release had these tables before they had a version number."""

SCHEMA_V2: tuple[str, ...] = (
    # expiry and usage of conversations
    "ALTER TABLE conversations ADD COLUMN expires_at REAL",
    "ALTER TABLE conversations ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0",
    """UPDATE conversations SET bytes = length(data) + coalesce(
        (SELECT sum(length(m.data)) FROM messages AS m WHERE m.conversation_id = conversations.id),
        0)""",
    # purge: what expired, what sat idle
    "CREATE INDEX conversations_expiring ON conversations (expires_at) "
    "WHERE expires_at IS NOT NULL",
    "CREATE INDEX conversations_by_updated_at ON conversations (updated_at)",
    # long-term memories
    """CREATE TABLE memories (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL,
        bytes INTEGER NOT NULL,
        data BLOB NOT NULL
    )""",
    "CREATE INDEX memories_by_owner ON memories (owner, created_at, id)",
    "CREATE INDEX memories_expiring ON memories (expires_at) WHERE expires_at IS NOT NULL",
    # summaries, one per conversation
    """CREATE TABLE summaries (
        conversation_id TEXT PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
        data BLOB NOT NULL
    )""",
    # what each owner keeps, one row read by usage(); kept by triggers in every write's
    # transaction (deletes through ON DELETE CASCADE included)
    """CREATE TABLE owner_usage (
        owner TEXT PRIMARY KEY,
        conversations INTEGER NOT NULL,
        bytes INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """INSERT INTO owner_usage (owner, conversations, bytes)
        SELECT owner, count(*), sum(bytes) FROM conversations GROUP BY owner""",
    """CREATE TRIGGER conversation_counted AFTER INSERT ON conversations BEGIN
        INSERT INTO owner_usage (owner, conversations, bytes) VALUES (NEW.owner, 1, NEW.bytes)
        ON CONFLICT (owner) DO UPDATE SET conversations = conversations + 1,
            bytes = bytes + excluded.bytes;
    END""",
    """CREATE TRIGGER conversation_resized AFTER UPDATE OF bytes ON conversations BEGIN
        UPDATE owner_usage SET bytes = bytes + NEW.bytes - OLD.bytes WHERE owner = NEW.owner;
    END""",
    """CREATE TRIGGER conversation_uncounted AFTER DELETE ON conversations BEGIN
        UPDATE owner_usage SET conversations = conversations - 1, bytes = bytes - OLD.bytes
        WHERE owner = OLD.owner;
        DELETE FROM owner_usage WHERE owner = OLD.owner AND conversations = 0 AND bytes = 0;
    END""",
    """CREATE TRIGGER memory_counted AFTER INSERT ON memories BEGIN
        INSERT INTO owner_usage (owner, conversations, bytes) VALUES (NEW.owner, 0, NEW.bytes)
        ON CONFLICT (owner) DO UPDATE SET bytes = bytes + excluded.bytes;
    END""",
    """CREATE TRIGGER memory_uncounted AFTER DELETE ON memories BEGIN
        UPDATE owner_usage SET bytes = bytes - OLD.bytes WHERE owner = OLD.owner;
        DELETE FROM owner_usage WHERE owner = OLD.owner AND conversations = 0 AND bytes = 0;
    END""",
)
"""Version 2: conversations' ``expires_at`` and ``bytes`` (backfilled from the stored data),
memories, summaries, each owner's usage, and the indexes purging and listing them use."""

MIGRATIONS: tuple[tuple[str, ...], ...] = (SCHEMA_V1, SCHEMA_V2)
"""Every schema version's statements, from 1: a file at ``PRAGMA user_version`` ``n`` gets
``MIGRATIONS[n:]`` at start (see :class:`hubbub.sqlite.SQLiteDatabase`). Append a version to
change the schema; never edit a released one."""


class SQLiteStoreSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``sqlite_store`` plugin (``[plugins.sqlite_store]``)."""

    path: str | None = None
    """Database file; default ``hubbub.sqlite3`` in the data directory. ``:memory:`` keeps
    everything in memory (lost on exit)."""
    busy_timeout: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    """Seconds a request may wait, in all, for another process's write lock (retried with
    back-off meanwhile) before it fails with 503 ``database_locked``."""
    health_interval: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    """Seconds a health probe's answer is reused (``/health/ready`` polled by anyone costs at
    most one probe per interval): the probe checks free space, commits a one-row write and
    reads the last ``PRAGMA quick_check``, itself run at most once a minute."""
    accounts_path: str | None = None
    """The account store's file (users, sessions, API keys), when ``[accounts] backend`` is
    ``sqlite``; default ``accounts.sqlite3`` in the data directory."""


_encode = msgspec.json.Encoder().encode
_decode_conversation = msgspec.json.Decoder(Conversation).decode
_decode_message = msgspec.json.Decoder(Message).decode
_decode_memory = msgspec.json.Decoder(MemoryItem).decode
_decode_summary = msgspec.json.Decoder(Summary).decode


def _conversation(row: Any) -> Conversation:
    """A conversation from ``(data, updated_at, ...)``: the column holds the current
    ``updated_at`` (appending a message bumps only the column)."""
    conversation = _decode_conversation(row[0])
    conversation.updated_at = row[1]
    return conversation


def _page_after(rows: list[Any], limit: int, decode: Any, cursor_of: Any) -> Page[Any]:
    """A page of ``limit`` items from ``limit + 1`` rows; the extra row says there is more."""
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        items=[decode(row) for row in rows],
        next_cursor=cursor_of(rows[-1]) if more else None,
    )


class SQLiteStore:
    """A :class:`hubbub.contracts.MemoryStore` in a SQLite file."""

    def __init__(self, path: str, busy_timeout: float = 5.0, health_interval: float = 5.0) -> None:
        self.db = SQLiteDatabase(
            path, migrations=MIGRATIONS, busy_timeout=busy_timeout, health_ttl=health_interval
        )
        self._run = self.db.run

    async def start(self) -> None:
        """Open the file, upgrading its schema (or refusing one newer than this code)."""
        await self.db.open()

    async def health(self) -> Health:
        """``ok`` with the file's path, or ``down`` with what is wrong: the file is probed for
        real (room, a committed write, integrity) at most every few seconds, see
        :meth:`hubbub.sqlite.SQLiteDatabase.problem`."""
        problem = await self.db.problem()
        return Health(status="down", detail=problem) if problem else Health(detail=self.db.path)

    async def aclose(self) -> None:
        """Close the file."""
        await self.db.close()

    # -- conversations ------------------------------------------------------------------------

    async def create_conversation(self, conversation: Conversation) -> Conversation:
        """Store a new conversation; :class:`ConflictError` when its id is taken."""
        data = _encode(conversation)

        def insert(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO conversations (id, owner, updated_at, expires_at, bytes, data) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        conversation.id,
                        conversation.owner,
                        conversation.updated_at,
                        conversation.expires_at,
                        len(data),
                        data,
                    ),
                )
            except sqlite3.IntegrityError:
                raise ConflictError(f"conversation {conversation.id!r} exists") from None

        await self._run(insert, write=True)
        return conversation

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT data, updated_at, owner FROM conversations WHERE id = ?",
                (conversation_id,),
            ).fetchone()
        )
        if not row:
            return None
        conversation = _conversation(row)
        conversation.owner = row[2]  # the column, as listings see it, whatever the data says
        return conversation

    async def list_conversations(
        self, owner: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Conversation]:
        after = decode_cursor(cursor, "c", float, str) if cursor else None

        def select(db: sqlite3.Connection) -> list[Any]:
            if after is None:
                return db.execute(
                    "SELECT data, updated_at, id FROM conversations WHERE owner = ? "
                    "ORDER BY updated_at DESC, id DESC LIMIT ?",
                    (owner, limit + 1),
                ).fetchall()
            return db.execute(
                "SELECT data, updated_at, id FROM conversations WHERE owner = ? "
                "AND (updated_at < ? OR (updated_at = ? AND id < ?)) "
                "ORDER BY updated_at DESC, id DESC LIMIT ?",
                (owner, after[0], after[0], after[1], limit + 1),
            ).fetchall()

        return _page_after(
            await self._run(select), limit, _conversation, lambda r: encode_cursor("c", r[1], r[2])
        )

    async def update_conversation(self, conversation: Conversation) -> Conversation:
        conversation.updated_at = now()
        data = _encode(conversation)

        def update(db: sqlite3.Connection) -> int:
            # Right of "=", columns are the old row's: bytes loses the old data's length.
            return db.execute(
                "UPDATE conversations SET updated_at = ?, expires_at = ?, "
                "bytes = bytes - length(data) + ?, data = ? WHERE id = ?",
                (
                    conversation.updated_at,
                    conversation.expires_at,
                    len(data),
                    data,
                    conversation.id,
                ),
            ).rowcount

        if not await self._run(update, write=True):
            raise NotFoundError(f"no conversation {conversation.id!r}")
        return conversation

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete it; its messages and summary go with it (``ON DELETE CASCADE``)."""
        deleted = await self._run(
            lambda db: (
                db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount
            ),
            write=True,
        )
        return bool(deleted)

    # -- messages -----------------------------------------------------------------------------

    async def append_message(self, message: Message) -> Message:
        conversation_id = message.conversation_id
        if conversation_id is None:
            raise InvalidRequestError("message has no conversation_id", field="conversation_id")
        data = _encode(message)

        def insert(db: sqlite3.Connection) -> None:
            # The column is the source of updated_at (see _conversation): no blob rewrite here.
            bumped = db.execute(
                "UPDATE conversations SET updated_at = max(?, updated_at), bytes = bytes + ? "
                "WHERE id = ?",
                (now(), len(data), conversation_id),
            ).rowcount
            if not bumped:
                raise NotFoundError(f"no conversation {conversation_id!r}")
            try:
                db.execute(
                    "INSERT INTO messages (id, conversation_id, data) VALUES (?, ?, ?)",
                    (message.id, conversation_id, data),
                )
            except sqlite3.IntegrityError:  # the whole transaction (the bump too) rolls back
                raise ConflictError(f"message {message.id!r} is stored already") from None

        await self._run(insert, write=True)
        return message

    async def list_messages(
        self, conversation_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Message]:
        after = 0
        if cursor:  # [conversation, seq]: a cursor of another listing or conversation is refused
            of, after = decode_cursor(cursor, "m", str, int)
            if of != conversation_id:
                raise InvalidRequestError(
                    "cursor belongs to another conversation's messages", field="cursor"
                )
        rows = await self._run(
            lambda db: db.execute(
                "SELECT data, seq FROM messages WHERE conversation_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (conversation_id, after, limit + 1),
            ).fetchall()
        )
        return _page_after(
            rows,
            limit,
            lambda r: _decode_message(r[0]),
            lambda r: encode_cursor("m", conversation_id, r[1]),
        )

    async def recent_messages(self, conversation_id: str, *, limit: int) -> list[Message]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT data FROM (SELECT data, seq FROM messages WHERE conversation_id = ? "
                "ORDER BY seq DESC LIMIT ?) ORDER BY seq",
                (conversation_id, limit),
            ).fetchall()
        )
        return [_decode_message(r[0]) for r in rows]

    # -- usage and retention ------------------------------------------------------------------

    async def usage(self, owner: str) -> StoreUsage:
        """One row of ``owner_usage``, which triggers keep in every write's transaction."""
        row = await self._run(
            lambda db: db.execute(
                "SELECT conversations, bytes FROM owner_usage WHERE owner = ?", (owner,)
            ).fetchone()
        )
        return StoreUsage(conversations=row[0], bytes=row[1]) if row else StoreUsage()

    async def purge(self, *, now: float, idle_before: float | None = None, limit: int) -> int:
        """Delete up to ``limit`` due conversations (expired first, then idle) and expired
        memories in one write transaction, through the ``expires_at`` and ``updated_at``
        indexes; a conversation's messages and summary go with it."""

        def delete(db: sqlite3.Connection) -> int:
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT id FROM conversations WHERE expires_at IS NOT NULL "
                    "AND expires_at <= ? LIMIT ?",
                    (now, limit),
                )
            ]
            if idle_before is not None and len(ids) < limit:
                ids += [
                    row[0]
                    for row in db.execute(
                        "SELECT id FROM conversations WHERE updated_at < ? "
                        "AND (expires_at IS NULL OR expires_at > ?) LIMIT ?",
                        (idle_before, now, limit - len(ids)),
                    )
                ]
            db.executemany("DELETE FROM conversations WHERE id = ?", [(i,) for i in ids])
            gone = len(ids)
            if gone < limit:
                gone += db.execute(
                    "DELETE FROM memories WHERE id IN (SELECT id FROM memories "
                    "WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
                    (now, limit - gone),
                ).rowcount
            return gone

        if limit <= 0:
            return 0
        return await self._run(delete, write=True)

    # -- long-term memories -------------------------------------------------------------------

    async def add_memory(self, item: MemoryItem) -> MemoryItem:
        """Store a memory; :class:`ConflictError` when its id is taken."""
        data = _encode(item)

        def insert(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO memories (id, owner, created_at, expires_at, bytes, data) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (item.id, item.owner, item.created_at, item.expires_at, len(data), data),
                )
            except sqlite3.IntegrityError:
                raise ConflictError(f"memory {item.id!r} exists") from None

        await self._run(insert, write=True)
        return item

    async def list_memories(
        self, owner: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[MemoryItem]:
        after = decode_cursor(cursor, "k", float, str) if cursor else None
        current = now()

        def select(db: sqlite3.Connection) -> list[Any]:
            live = "owner = ? AND (expires_at IS NULL OR expires_at > ?)"
            if after is None:
                return db.execute(
                    f"SELECT data, created_at, id FROM memories WHERE {live} "
                    "ORDER BY created_at DESC, id DESC LIMIT ?",
                    (owner, current, limit + 1),
                ).fetchall()
            return db.execute(
                f"SELECT data, created_at, id FROM memories WHERE {live} "
                "AND (created_at < ? OR (created_at = ? AND id < ?)) "
                "ORDER BY created_at DESC, id DESC LIMIT ?",
                (owner, current, after[0], after[0], after[1], limit + 1),
            ).fetchall()

        return _page_after(
            await self._run(select),
            limit,
            lambda r: _decode_memory(r[0]),
            lambda r: encode_cursor("k", r[1], r[2]),
        )

    async def delete_memory(self, owner: str, memory_id: str) -> bool:
        deleted = await self._run(
            lambda db: (
                db.execute(
                    "DELETE FROM memories WHERE id = ? AND owner = ?", (memory_id, owner)
                ).rowcount
            ),
            write=True,
        )
        return bool(deleted)

    async def delete_memories(self, owner: str) -> int:
        deleted: int = await self._run(
            lambda db: db.execute("DELETE FROM memories WHERE owner = ?", (owner,)).rowcount,
            write=True,
        )
        return deleted

    # -- summaries ----------------------------------------------------------------------------

    async def save_summary(self, summary: Summary) -> None:
        data = _encode(summary)
        conversation_id = summary.conversation_id

        def upsert(db: sqlite3.Connection) -> int:
            return db.execute(
                "INSERT INTO summaries (conversation_id, data) SELECT ?1, ?2 "
                "WHERE EXISTS (SELECT 1 FROM conversations WHERE id = ?1) "
                "ON CONFLICT (conversation_id) DO UPDATE SET data = excluded.data",
                (conversation_id, data),
            ).rowcount

        if not await self._run(upsert, write=True):
            raise NotFoundError(f"no conversation {conversation_id!r}")

    async def get_summary(self, conversation_id: str) -> Summary | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT data FROM summaries WHERE conversation_id = ?", (conversation_id,)
            ).fetchone()
        )
        return _decode_summary(row[0]) if row else None

    # -- copying a whole store ----------------------------------------------------------------

    async def list_owners(self, *, limit: int = 100, cursor: str | None = None) -> Page[str]:
        """Owners with a conversation or a memory, read from ``owner_usage`` in key order."""
        after = decode_cursor(cursor, "o", str)[0] if cursor else ""
        rows = await self._run(
            lambda db: db.execute(
                "SELECT owner FROM owner_usage WHERE owner > ? "
                "AND (conversations > 0 OR bytes > 0) ORDER BY owner LIMIT ?",
                (after, limit + 1),
            ).fetchall()
        )
        return _page_after(rows, limit, lambda r: r[0], lambda r: encode_cursor("o", r[0]))

    async def import_conversation(
        self, conversation: Conversation, messages: Sequence[Message]
    ) -> int:
        for message in messages:
            if message.conversation_id != conversation.id:
                raise InvalidRequestError(
                    f"message {message.id!r} belongs to conversation "
                    f"{message.conversation_id!r}, not {conversation.id!r}",
                    field="conversation_id",
                )
        data = _encode(conversation)
        encoded = [(m.id, conversation.id, _encode(m)) for m in messages]

        def write(db: sqlite3.Connection) -> int:
            db.execute(
                "INSERT OR IGNORE INTO conversations "
                "(id, owner, updated_at, expires_at, bytes, data) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    conversation.id,
                    conversation.owner,
                    conversation.updated_at,
                    conversation.expires_at,
                    len(data),
                    data,
                ),
            )
            (owner,) = db.execute(
                "SELECT owner FROM conversations WHERE id = ?", (conversation.id,)
            ).fetchone()
            if owner != conversation.owner:
                raise ConflictError(
                    f"conversation {conversation.id!r} exists here with another owner"
                )
            # stored before: brought up to date when the copy is newer
            db.execute(
                "UPDATE conversations SET updated_at = ?, expires_at = ?, "
                "bytes = bytes - length(data) + ?, data = ? WHERE id = ? AND updated_at < ?",
                (
                    conversation.updated_at,
                    conversation.expires_at,
                    len(data),
                    data,
                    conversation.id,
                    conversation.updated_at,
                ),
            )
            stored = added = 0
            for row in encoded:
                if db.execute(
                    "INSERT OR IGNORE INTO messages (id, conversation_id, data) VALUES (?, ?, ?)",
                    row,
                ).rowcount:
                    stored += 1
                    added += len(row[2])
            if added:
                db.execute(
                    "UPDATE conversations SET bytes = bytes + ? WHERE id = ?",
                    (added, conversation.id),
                )
            return stored

        stored: int = await self._run(write, write=True)
        return stored


@hookimpl
def register_account_stores(register: Registrar) -> None:
    def build(context: ComponentContext[SQLiteStoreSettings]) -> SQLiteAccountStore:
        settings = context.settings
        path = settings.accounts_path or str(context.data_dir / "accounts.sqlite3")
        return SQLiteAccountStore(path, busy_timeout=settings.busy_timeout)

    register(
        "sqlite",
        build,
        settings=SQLiteStoreSettings,
        description="users, sessions and API keys in a SQLite file",
    )


@hookimpl
def register_memory_stores(register: Registrar) -> None:
    def build(context: ComponentContext[SQLiteStoreSettings]) -> SQLiteStore:
        settings = context.settings
        path = settings.path or str(context.data_dir / "hubbub.sqlite3")
        return SQLiteStore(
            path, busy_timeout=settings.busy_timeout, health_interval=settings.health_interval
        )

    register(
        "sqlite",
        build,
        settings=SQLiteStoreSettings,
        description="conversations, messages, summaries and memories in a SQLite file",
    )
