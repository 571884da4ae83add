"""SQLite memory store ``sqlite``: conversations and messages in one file.

The default store: nothing to install or run. Database calls run on a dedicated thread
(:class:`hubbub.sqlite.SQLiteDatabase`), never on the event loop; several processes can share the
file. The schema is created on first start.
"""

from __future__ import annotations

import base64
import sqlite3
from typing import TYPE_CHECKING, Any

import msgspec

from hubbub import hookimpl
from hubbub.errors import InvalidRequestError, NotFoundError
from hubbub.models import Conversation, Health, Message, Page, now
from hubbub.sqlite import SQLiteDatabase

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    updated_at REAL NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (owner, updated_at, id);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (conversation_id, seq);
PRAGMA user_version = 1;
"""


class SQLiteStoreSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``sqlite_store`` plugin (``[plugins.sqlite_store]``)."""

    path: str | None = None
    """Database file; default ``hubbub.sqlite3`` in the data directory. ``:memory:`` keeps
    everything in memory (lost on exit)."""
    busy_timeout: float = 5.0
    """Seconds to wait for another process's write lock before failing."""


_encode = msgspec.json.Encoder().encode
_decode_conversation = msgspec.json.Decoder(Conversation).decode


def _conversation(row: Any) -> Conversation:
    """A conversation from ``(data, updated_at, ...)``: the column holds the current
    ``updated_at`` (appending a message bumps only the column)."""
    conversation = _decode_conversation(row[0])
    conversation.updated_at = row[1]
    return conversation


_decode_message = msgspec.json.Decoder(Message).decode


def _cursor_out(*parts: object) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(parts)).decode()


def _cursor_in(cursor: str, *types: type | tuple[type, ...]) -> list[Any]:
    """Decode a cursor made by :func:`_cursor_out` whose parts have ``types``."""
    try:
        parts = msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, msgspec.DecodeError):
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != len(types)
        or not all(
            isinstance(part, kind) and not isinstance(part, bool)
            for part, kind in zip(parts, types, strict=True)
        )
    ):
        raise InvalidRequestError("cursor is not one this server issued", field="cursor")
    return parts


class SQLiteStore:
    """A :class:`hubbub.contracts.MemoryStore` in a SQLite file."""

    def __init__(self, path: str, busy_timeout: float = 5.0) -> None:
        self.db = SQLiteDatabase(path, schema=SCHEMA, busy_timeout=busy_timeout)
        self._run = self.db.run

    async def start(self) -> None:
        await self.db.open()

    async def health(self) -> Health:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())
        return Health(detail=self.db.path)

    async def aclose(self) -> None:
        await self.db.close()

    # -- conversations ------------------------------------------------------------------------

    async def create_conversation(self, conversation: Conversation) -> Conversation:
        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO conversations (id, owner, updated_at, data) VALUES (?, ?, ?, ?)",
                (
                    conversation.id,
                    conversation.owner,
                    conversation.updated_at,
                    _encode(conversation),
                ),
            )

        await self._run(insert)
        return conversation

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT data, updated_at FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()
        )
        return _conversation(row) if row else None

    async def list_conversations(
        self, owner: str, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Conversation]:
        after = _cursor_in(cursor, (float, int), str) if cursor else None

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

        rows = await self._run(select)
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(
            items=[_conversation(r) for r in rows],
            next_cursor=_cursor_out(rows[-1][1], rows[-1][2]) if more else None,
        )

    async def update_conversation(self, conversation: Conversation) -> Conversation:
        conversation.updated_at = now()

        def update(db: sqlite3.Connection) -> int:
            return db.execute(
                "UPDATE conversations SET updated_at = ?, data = ? WHERE id = ?",
                (conversation.updated_at, _encode(conversation), conversation.id),
            ).rowcount

        if not await self._run(update):
            raise NotFoundError(f"no conversation {conversation.id!r}")
        return conversation

    async def delete_conversation(self, conversation_id: str) -> bool:
        deleted = await self._run(
            lambda db: (
                db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,)).rowcount
            )
        )
        return bool(deleted)

    # -- messages -----------------------------------------------------------------------------

    async def append_message(self, message: Message) -> Message:
        conversation_id = message.conversation_id
        if conversation_id is None:
            raise InvalidRequestError("message has no conversation_id", field="conversation_id")

        def insert(db: sqlite3.Connection) -> None:
            # The column is the source of updated_at (see _conversation): no blob rewrite here.
            bumped = db.execute(
                "UPDATE conversations SET updated_at = max(?, updated_at) WHERE id = ?",
                (now(), conversation_id),
            ).rowcount
            if not bumped:
                raise NotFoundError(f"no conversation {conversation_id!r}")
            db.execute(
                "INSERT INTO messages (id, conversation_id, data) VALUES (?, ?, ?)",
                (message.id, conversation_id, _encode(message)),
            )

        await self._run(insert, write=True)
        return message

    async def list_messages(
        self, conversation_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Message]:
        after = _cursor_in(cursor, int)[0] if cursor else 0
        rows = await self._run(
            lambda db: db.execute(
                "SELECT data, seq FROM messages WHERE conversation_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (conversation_id, after, limit + 1),
            ).fetchall()
        )
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(
            items=[_decode_message(r[0]) for r in rows],
            next_cursor=_cursor_out(rows[-1][1]) if more else None,
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


@hookimpl
def register_memory_stores(register: Registrar) -> None:
    def build(context: ComponentContext[SQLiteStoreSettings]) -> SQLiteStore:
        settings = context.settings
        path = settings.path or str(context.data_dir / "hubbub.sqlite3")
        return SQLiteStore(path, busy_timeout=settings.busy_timeout)

    register(
        "sqlite",
        build,
        settings=SQLiteStoreSettings,
        description="conversations and messages in a SQLite file",
    )
