"""SQLite memory store ``sqlite``: conversations and messages in one file.

The default store: nothing to install or run. Database calls run on a dedicated thread
(:class:`hubbub.sqlite.SQLiteDatabase`), never on the event loop; several processes can share the
file. The schema is created on first start.
"""

from __future__ import annotations

import base64
import math
import sqlite3
from typing import TYPE_CHECKING, Annotated, Any

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
    busy_timeout: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    """Seconds to wait for another process's write lock before failing."""
    health_interval: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 5.0
    """Seconds a health probe's answer is reused (``/health/ready`` polled by anyone costs at
    most one probe per interval): the probe checks free space, commits a one-row write and
    reads the last ``PRAGMA quick_check``, itself run at most once a minute."""


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


_INT64 = (-(2**63), 2**63 - 1)
"""SQLite's INTEGER range: a larger Python int cannot be bound to a query."""


def _storable(part: object) -> bool:
    """Whether a cursor part can be compared with a column: an int in SQLite's 64-bit range,
    a finite float, or a string."""
    if isinstance(part, int):
        return _INT64[0] <= part <= _INT64[1]
    if isinstance(part, float):
        return math.isfinite(part)
    return isinstance(part, str)


def _cursor_in(cursor: str, *types: type | tuple[type, ...]) -> list[Any]:
    """Decode a cursor made by :func:`_cursor_out` whose parts have ``types`` (and values
    SQLite can compare: a forged cursor's number past 64 bits is refused here, not by the
    database)."""
    try:
        parts = msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, RecursionError, msgspec.DecodeError):
        parts = None
    if (
        not isinstance(parts, list)
        or len(parts) != len(types)
        or not all(
            isinstance(part, kind) and not isinstance(part, bool) and _storable(part)
            for part, kind in zip(parts, types, strict=True)
        )
    ):
        raise InvalidRequestError("cursor is not one this server issued", field="cursor")
    return parts


class SQLiteStore:
    """A :class:`hubbub.contracts.MemoryStore` in a SQLite file."""

    def __init__(self, path: str, busy_timeout: float = 5.0, health_interval: float = 5.0) -> None:
        self.db = SQLiteDatabase(
            path, schema=SCHEMA, busy_timeout=busy_timeout, health_ttl=health_interval
        )
        self._run = self.db.run

    async def start(self) -> None:
        await self.db.open()

    async def health(self) -> Health:
        """``ok`` with the file's path, or ``down`` with what is wrong: the file is probed for
        real (room, a committed write, integrity) at most every few seconds, see
        :meth:`hubbub.sqlite.SQLiteDatabase.problem`."""
        problem = await self.db.problem()
        return Health(status="down", detail=problem) if problem else Health(detail=self.db.path)

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
        return SQLiteStore(
            path, busy_timeout=settings.busy_timeout, health_interval=settings.health_interval
        )

    register(
        "sqlite",
        build,
        settings=SQLiteStoreSettings,
        description="conversations and messages in a SQLite file",
    )
