"""The SQLite memory store, on real files: the store contract suite, round trips, paging, errors,
concurrent writers (one store and two stores sharing a file), schema creation, upgrades of
files from earlier releases, restarts, and the byte counts usage reads."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from hubbub.errors import ComponentError, InvalidRequestError, NotFoundError
from hubbub.models import (
    Conversation,
    MemoryItem,
    Message,
    Page,
    StoreUsage,
    Summary,
    ToolCall,
    Usage,
    now,
)
from hubbub.runtime import Runtime
from hubbub.testing import MemoryStoreContract
from hubbub_plugins.sqlite_store import MIGRATIONS, SQLiteStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "store.sqlite3"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(str(db_path))
    await store.start()
    yield store
    await store.aclose()


async def all_messages(store: SQLiteStore, conversation_id: str, limit: int) -> list[Message]:
    items: list[Message] = []
    cursor = None
    while True:
        page = await store.list_messages(conversation_id, limit=limit, cursor=cursor)
        items.extend(page.items)
        assert len(page.items) <= limit
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(value)).decode()


class TestSQLiteStore(MemoryStoreContract):
    """The store contract suite, on a file."""

    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        store = SQLiteStore(str(tmp_path / "contract.sqlite3"))
        await store.start()
        yield store
        await store.aclose()


# -- round trips -------------------------------------------------------------------------------


async def test_conversation_and_messages_round_trip(store: SQLiteStore) -> None:
    conversation = Conversation(owner="ada", title="Plans", model="offline/echo", metadata={"k": 1})
    assert await store.create_conversation(conversation) == conversation
    assert await store.get_conversation(conversation.id) == conversation
    assert await store.get_conversation("conv_missing") is None

    user = Message(role="user", content="hello", conversation_id=conversation.id, name="Ada")
    assistant = Message(
        role="assistant",
        content="",
        conversation_id=conversation.id,
        tool_calls=[ToolCall(id="call_1", name="calculator", arguments='{"expression": "1"}')],
        model="offline/tools",
        usage=Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5, cost=Decimal("0.000135")),
        metadata={"nested": {"list": [1, 2]}},
    )
    tool = Message(role="tool", content="1", conversation_id=conversation.id, tool_call_id="call_1")
    for message in (user, assistant, tool):
        await store.append_message(message)
    page = await store.list_messages(conversation.id)
    assert page.items == [user, assistant, tool]
    assert page.next_cursor is None


async def test_append_bumps_updated_at(store: SQLiteStore) -> None:
    conversation = await store.create_conversation(
        Conversation(owner="ada", created_at=1000.0, updated_at=1000.0)
    )
    await store.append_message(Message(role="user", content="x", conversation_id=conversation.id))
    stored = await store.get_conversation(conversation.id)
    assert stored is not None
    assert stored.updated_at > 1000.0
    assert stored.created_at == 1000.0


async def test_update_conversation(store: SQLiteStore) -> None:
    conversation = await store.create_conversation(
        Conversation(owner="ada", title="old", updated_at=1000.0)
    )
    conversation.title = "new"
    conversation.metadata = {"pinned": True}
    updated = await store.update_conversation(conversation)
    assert updated.updated_at > 1000.0
    stored = await store.get_conversation(conversation.id)
    assert stored is not None
    assert (stored.title, stored.metadata) == ("new", {"pinned": True})
    with pytest.raises(NotFoundError):
        await store.update_conversation(Conversation(owner="ada", id="conv_missing"))


async def test_append_to_unknown_conversation(store: SQLiteStore) -> None:
    with pytest.raises(NotFoundError, match="no conversation 'conv_nope'"):
        await store.append_message(Message(role="user", conversation_id="conv_nope"))
    with pytest.raises(InvalidRequestError) as caught:
        await store.append_message(Message(role="user"))
    assert caught.value.field == "conversation_id"


async def test_delete_cascades_to_messages(store: SQLiteStore, db_path: Path) -> None:
    keep = await store.create_conversation(Conversation(owner="ada"))
    doomed = await store.create_conversation(Conversation(owner="ada"))
    for conversation in (keep, doomed):
        for n in range(3):
            await store.append_message(
                Message(role="user", content=str(n), conversation_id=conversation.id)
            )
    assert await store.delete_conversation(doomed.id) is True
    assert await store.delete_conversation(doomed.id) is False
    assert await store.get_conversation(doomed.id) is None
    assert (await store.list_messages(doomed.id)).items == []
    assert len((await store.list_messages(keep.id)).items) == 3
    with sqlite3.connect(db_path) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM messages WHERE conversation_id = ?", (doomed.id,)
        ).fetchone()
    assert count == 0


# -- paging ------------------------------------------------------------------------------------


async def test_conversations_page_newest_updated_first(store: SQLiteStore) -> None:
    conversations = [
        await store.create_conversation(
            Conversation(owner="ada", title=f"c{n}", updated_at=1000.0 + n)
        )
        for n in range(7)
    ]
    await store.create_conversation(Conversation(owner="bob", updated_at=5000.0))
    # two with the same updated_at: the id breaks the tie, and paging must not skip either
    twins = [
        await store.create_conversation(
            Conversation(owner="ada", id=f"conv_twin{n}", updated_at=1003.5)
        )
        for n in range(2)
    ]
    seen: list[Conversation] = []
    cursor = None
    pages = 0
    while True:
        page: Page = await store.list_conversations("ada", limit=3, cursor=cursor)
        seen.extend(page.items)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert [c.title for c in seen if c.title] == [f"c{n}" for n in reversed(range(7))]
    assert len(seen) == 9
    assert {c.id for c in seen} == {c.id for c in conversations + twins}
    assert [c.updated_at for c in seen] == sorted((c.updated_at for c in seen), reverse=True)

    # a new message makes the oldest conversation the most recent
    await store.append_message(Message(role="user", conversation_id=conversations[0].id))
    first = await store.list_conversations("ada", limit=1)
    assert first.items[0].id == conversations[0].id


async def test_messages_page_in_order(store: SQLiteStore) -> None:
    conversation = await store.create_conversation(Conversation(owner="ada"))
    sent = [
        await store.append_message(
            Message(role="user", content=f"m{n}", conversation_id=conversation.id)
        )
        for n in range(10)
    ]
    assert await all_messages(store, conversation.id, limit=3) == sent
    assert await all_messages(store, conversation.id, limit=10) == sent
    last = await store.list_messages(conversation.id, limit=10)
    assert last.next_cursor is None


@pytest.mark.parametrize("cursor", ["not base64 at all!", cursor_of({"a": 1}), "e30", "%%%"])
async def test_bad_cursor_is_an_invalid_request(store: SQLiteStore, cursor: str) -> None:
    for listing in (
        lambda: store.list_messages("conv_x", cursor=cursor),
        lambda: store.list_conversations("ada", cursor=cursor),
    ):
        with pytest.raises(InvalidRequestError) as caught:
            await listing()
        assert caught.value.field == "cursor"


@pytest.mark.parametrize("cursor", [cursor_of([]), cursor_of(["x"]), cursor_of([1])])
async def test_wrong_shaped_conversation_cursor_is_an_invalid_request(
    store: SQLiteStore, cursor: str
) -> None:
    # e.g. a message cursor ([seq]) handed to list_conversations, or a tampered one
    with pytest.raises(InvalidRequestError):
        await store.list_conversations("ada", cursor=cursor)


@pytest.mark.parametrize(
    "cursor", [cursor_of([]), cursor_of(["x"]), cursor_of([1.5, "conv_x"]), cursor_of([True])]
)
async def test_wrong_shaped_message_cursor_is_an_invalid_request(
    store: SQLiteStore, cursor: str
) -> None:
    # e.g. a conversation cursor ([updated_at, id]) handed to list_messages
    with pytest.raises(InvalidRequestError):
        await store.list_messages("conv_x", cursor=cursor)


# -- concurrency -------------------------------------------------------------------------------


async def test_many_concurrent_appends_on_one_store(store: SQLiteStore) -> None:
    conversation = await store.create_conversation(Conversation(owner="ada"))
    messages = [
        Message(role="user", content=f"m{n}", conversation_id=conversation.id) for n in range(200)
    ]
    await asyncio.gather(*(store.append_message(m) for m in messages))
    stored = await all_messages(store, conversation.id, limit=64)
    assert [m.id for m in stored] == [m.id for m in messages]


async def test_two_stores_on_one_file_write_concurrently(db_path: Path) -> None:
    first, second = SQLiteStore(str(db_path)), SQLiteStore(str(db_path))
    await first.start()
    await second.start()
    try:
        conversation = await first.create_conversation(Conversation(owner="ada"))
        assert await second.get_conversation(conversation.id) == conversation

        def batch(tag: str) -> list[Message]:
            return [
                Message(role="user", content=f"{tag}{n}", conversation_id=conversation.id)
                for n in range(100)
            ]

        from_first, from_second = batch("a"), batch("b")
        extra = [await first.create_conversation(Conversation(owner="bob")) for _ in range(3)]
        await asyncio.gather(
            *(first.append_message(m) for m in from_first),
            *(second.append_message(m) for m in from_second),
            *(second.delete_conversation(c.id) for c in extra),
        )
        seen_by_first = await all_messages(first, conversation.id, limit=50)
        seen_by_second = await all_messages(second, conversation.id, limit=77)
        assert seen_by_first == seen_by_second
        ids = [m.id for m in seen_by_first]
        assert len(ids) == 200
        assert set(ids) == {m.id for m in from_first + from_second}
        # each writer's messages keep the order it wrote them in
        assert [i for i in ids if i in {m.id for m in from_first}] == [m.id for m in from_first]
        assert [i for i in ids if i in {m.id for m in from_second}] == [m.id for m in from_second]
        assert (await first.list_conversations("bob")).items == []
    finally:
        await first.aclose()
        await second.aclose()


async def test_append_does_not_undo_another_writers_rename(db_path: Path) -> None:
    store = SQLiteStore(str(db_path), busy_timeout=10.0)
    await store.start()
    try:
        conversation = await store.create_conversation(Conversation(owner="ada", title="old"))
        renamed = msgspec.structs.replace(conversation, title="new")
        other = sqlite3.connect(db_path, isolation_level=None)  # another process, say
        other.execute("BEGIN IMMEDIATE")
        other.execute(
            "UPDATE conversations SET data = ? WHERE id = ?",
            (msgspec.json.encode(renamed), conversation.id),
        )
        append = asyncio.ensure_future(
            store.append_message(Message(role="user", conversation_id=conversation.id))
        )
        await asyncio.sleep(0.5)  # the append has read the row and waits for the write lock
        other.execute("COMMIT")
        other.close()
        await append
        stored = await store.get_conversation(conversation.id)
        assert stored is not None
        assert stored.title == "new"
    finally:
        await store.aclose()


# -- lifecycle ---------------------------------------------------------------------------------


async def test_schema_created_on_first_start(db_path: Path) -> None:
    assert not db_path.exists()  # noqa: ASYNC240
    store = SQLiteStore(str(db_path))
    with pytest.raises(RuntimeError, match="is not open"):
        await store.get_conversation("x")
    await store.start()
    await store.aclose()
    with sqlite3.connect(db_path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        (version,) = db.execute("PRAGMA user_version").fetchone()
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
    assert {"conversations", "messages"} <= tables
    assert version == len(MIGRATIONS)
    assert mode == "wal"


async def test_data_survives_a_restart(db_path: Path) -> None:
    store = SQLiteStore(str(db_path))
    await store.start()
    conversation = await store.create_conversation(Conversation(owner="ada", title="kept"))
    message = await store.append_message(
        Message(role="user", content="remember me", conversation_id=conversation.id)
    )
    await store.aclose()

    again = SQLiteStore(str(db_path))
    await again.start()  # the schema script runs again on an existing database
    try:
        stored = await again.get_conversation(conversation.id)
        assert stored is not None
        assert stored.title == "kept"
        assert (await again.list_messages(conversation.id)).items == [message]
    finally:
        await again.aclose()


async def test_health_reports_the_file(store: SQLiteStore, db_path: Path) -> None:
    health = await store.health()
    assert (health.status, health.detail) == ("ok", str(db_path))


async def test_runtime_puts_the_database_in_home_or_the_configured_path(
    make_runtime: Callable[..., Runtime], home: Path, tmp_path: Path
) -> None:
    async with make_runtime() as runtime:
        conversation = await runtime.memory.create_conversation(Conversation(owner="ada"))
    assert (home / "hubbub.sqlite3").is_file()

    elsewhere = tmp_path / "elsewhere" / "db.sqlite3"
    async with make_runtime(f'[plugins.sqlite_store]\npath = "{elsewhere}"\n') as runtime:
        assert await runtime.memory.get_conversation(conversation.id) is None
    assert elsewhere.is_file()


def test_processes_creating_one_fresh_file_at_once_all_start(tmp_path: Path) -> None:
    """Workers starting together race to create the schema and switch the file to WAL."""
    import subprocess
    import sys
    import time

    path = tmp_path / "fresh.sqlite3"
    code = (
        "import asyncio, sys, time\n"
        "from hubbub_plugins.sqlite_store import SQLiteStore\n"
        "from hubbub.models import Conversation\n"
        "async def main():\n"
        "    store = SQLiteStore(sys.argv[1])\n"
        "    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all open at once\n"
        "    await store.start()\n"
        "    await store.create_conversation(Conversation(owner='p'))\n"
        "    await store.aclose()\n"
        "asyncio.run(main())\n"
    )
    start = str(time.time() + 1.0)
    processes = [
        subprocess.Popen([sys.executable, "-c", code, str(path), start], stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, errors


async def test_recent_messages_are_the_latest_oldest_first(store: SQLiteStore) -> None:
    conversation = await store.create_conversation(Conversation(owner="ada"))
    for n in range(10):
        await store.append_message(
            Message(role="user", content=f"m{n}", conversation_id=conversation.id)
        )
    recent = await store.recent_messages(conversation.id, limit=3)
    assert [m.content for m in recent] == ["m7", "m8", "m9"]
    assert await store.recent_messages("conv_none", limit=3) == []


# -- schema upgrades ---------------------------------------------------------------------------

V1_SCHEMA = """
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
"""The schema of the first release, verbatim: the files existing users have."""


def v1_file(path: Path) -> tuple[list[Conversation], list[Message], int]:
    """A version-1 file as the first release wrote it (WAL, its schema, its encoding): two of
    ada's conversations (the first with three messages, its updated_at bumped past the blob's
    as appends did) and one of bob's. Returns them, ada's messages and ada's bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.executescript(V1_SCHEMA)
    talk = Conversation(owner="ada", title="old talk", created_at=1000.0, updated_at=1000.0)
    quiet = Conversation(owner="ada", title="quiet", created_at=900.0, updated_at=900.0)
    other = Conversation(owner="bob", title="bob's", created_at=950.0, updated_at=950.0)
    messages = [
        Message(role="user", content=f"m{n} é", conversation_id=talk.id, created_at=1000.0 + n)
        for n in range(3)
    ]
    total = 0
    for conversation in (talk, quiet, other):
        data = msgspec.json.encode(conversation)
        total += len(data) if conversation.owner == "ada" else 0
        db.execute(
            "INSERT INTO conversations (id, owner, updated_at, data) VALUES (?, ?, ?, ?)",
            (conversation.id, conversation.owner, conversation.updated_at, data),
        )
    for message in messages:
        data = msgspec.json.encode(message)
        total += len(data)
        db.execute(
            "INSERT INTO messages (id, conversation_id, data) VALUES (?, ?, ?)",
            (message.id, talk.id, data),
        )
    db.execute("UPDATE conversations SET updated_at = 1003.0 WHERE id = ?", (talk.id,))
    talk.updated_at = 1003.0
    db.close()
    return [talk, quiet, other], messages, total


def schema_of(path: Path) -> tuple[int, set[str], set[str]]:
    """The file's version, its tables and indexes, and the conversations table's columns."""
    with sqlite3.connect(path) as db:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        columns = {row[1] for row in db.execute("PRAGMA table_info(conversations)")}
    return version, names, columns


async def test_a_version_1_file_is_upgraded_in_place_and_reads_back(db_path: Path) -> None:
    (talk, quiet, other), messages, ada_bytes = v1_file(db_path)
    assert schema_of(db_path)[0] == 1
    store = SQLiteStore(str(db_path))
    await store.start()
    try:
        version, names, columns = schema_of(db_path)
        assert version == len(MIGRATIONS) == 2
        assert {"expires_at", "bytes"} <= columns
        assert {"memories", "summaries", "conversations_expiring", "memories_by_owner"} <= names
        # everything reads back as it was
        assert await store.get_conversation(talk.id) == talk
        assert (await store.list_conversations("ada")).items == [talk, quiet]
        assert (await store.list_messages(talk.id)).items == messages
        assert await store.recent_messages(talk.id, limit=2) == messages[1:]
        # usage counts the old data, exactly: backfilled from the stored bytes
        assert await store.usage("ada") == StoreUsage(conversations=2, bytes=ada_bytes)
        assert (await store.usage("bob")).conversations == 1
        # and the new methods work on it
        added = await store.append_message(
            Message(role="user", content="new", conversation_id=talk.id)
        )
        assert (await store.list_messages(talk.id)).items == [*messages, added]
        after = await store.usage("ada")
        assert after.bytes == ada_bytes + len(msgspec.json.encode(added))
        memory = await store.add_memory(MemoryItem(owner="ada", content="likes tea"))
        assert (await store.list_memories("ada")).items == [memory]
        summary = Summary(
            conversation_id=talk.id, content="older", through_message_id=messages[1].id, covered=2
        )
        await store.save_summary(summary)
        assert await store.get_summary(talk.id) == summary
        quiet.expires_at = 1.0
        await store.update_conversation(quiet)
        assert await store.purge(now=now(), limit=10) == 1
        assert await store.get_conversation(quiet.id) is None
        assert (await store.list_owners()).items == ["ada", "bob"]
    finally:
        await store.aclose()
    # a second start finds nothing to do, and the data is still there
    again = SQLiteStore(str(db_path))
    await again.start()
    try:
        assert (await again.list_messages(talk.id)).items == [*messages, added]
        assert await again.get_conversation(other.id) == other
    finally:
        await again.aclose()


async def test_a_failed_upgrade_leaves_the_file_as_it_was(db_path: Path) -> None:
    _conversations, messages, _ = v1_file(db_path)
    with sqlite3.connect(db_path) as db:  # the last statement of version 2 will fail on it
        db.execute("CREATE TABLE summaries (x)")
    store = SQLiteStore(str(db_path))
    with pytest.raises(sqlite3.OperationalError, match="summaries already exists"):
        await store.start()
    version, names, columns = schema_of(db_path)
    assert version == 1
    assert "expires_at" not in columns
    assert "bytes" not in columns
    assert "memories" not in names
    assert "conversations_expiring" not in names
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (len(messages),)
        assert db.execute("SELECT count(*) FROM conversations").fetchone() == (3,)


async def test_a_file_from_a_newer_release_is_refused_naming_both_versions(
    db_path: Path,
) -> None:
    v1_file(db_path)
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA user_version = 7")
    store = SQLiteStore(str(db_path))
    with pytest.raises(ComponentError) as caught:
        await store.start()
    message = str(caught.value)
    assert "schema version 7" in message
    assert f"version {len(MIGRATIONS)} " in message
    assert str(db_path) in message
    assert schema_of(db_path)[0] == 7  # untouched
    with pytest.raises(RuntimeError, match="is not open"):
        await store.get_conversation("x")
    await store.aclose()


async def test_the_runtime_refuses_to_start_on_a_newer_file(
    make_runtime: Callable[..., Runtime], home: Path
) -> None:
    v1_file(home / "hubbub.sqlite3")
    with sqlite3.connect(home / "hubbub.sqlite3") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(ComponentError, match="schema version 99, newer than the version 2"):
        async with make_runtime():
            pass


def test_processes_upgrading_one_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    """Workers starting together on an old file: one upgrades it, the others find it done (the
    backfill of byte counts runs once, not once per process)."""
    import subprocess
    import sys
    import time

    path = tmp_path / "old.sqlite3"
    _, _, ada_bytes = v1_file(path)
    code = (
        "import asyncio, sys, time\n"
        "from hubbub_plugins.sqlite_store import SQLiteStore\n"
        "async def main():\n"
        "    store = SQLiteStore(sys.argv[1])\n"
        "    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all open at once\n"
        "    await store.start()\n"
        "    print((await store.usage('ada')).bytes)\n"
        "    await store.aclose()\n"
        "asyncio.run(main())\n"
    )
    start = str(time.time() + 1.0)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path), start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, [e.decode() for _, e in outputs]
    assert [int(out) for out, _ in outputs] == [ada_bytes] * 4
    assert schema_of(path)[0] == len(MIGRATIONS)


# -- byte counts kept beside the data -----------------------------------------------------------


async def test_usage_follows_every_write_exactly(store: SQLiteStore) -> None:
    """The kept counts equal the encoded sizes after creates, appends, updates, imports,
    deletes and purges: what the per-user byte quota is checked against."""

    def size(item: msgspec.Struct) -> int:
        return len(msgspec.json.encode(item))

    conversation = await store.create_conversation(Conversation(owner="cy", title="a"))
    expected = size(conversation)
    assert await store.usage("cy") == StoreUsage(conversations=1, bytes=expected)
    message = await store.append_message(
        Message(role="user", content="x" * 1000, conversation_id=conversation.id)
    )
    expected += size(message)
    assert (await store.usage("cy")).bytes == expected
    before = await store.get_conversation(conversation.id)
    assert before is not None
    before.title, before.metadata = "a much longer title than before", {"k": "v" * 50}
    updated = await store.update_conversation(before)
    with sqlite3.connect(store.db.path) as db:
        (blob,) = db.execute(
            "SELECT data FROM conversations WHERE id = ?", (conversation.id,)
        ).fetchone()
    assert len(blob) == size(updated)
    expected += size(updated) - size(conversation)
    assert (await store.usage("cy")).bytes == expected
    imported = Conversation(owner="cy", updated_at=5.0)
    batch = [Message(role="user", content="i", conversation_id=imported.id) for _ in range(3)]
    assert await store.import_conversation(imported, batch) == 3
    assert await store.import_conversation(imported, batch) == 0  # nothing counted twice
    expected += size(imported) + sum(size(m) for m in batch)
    assert await store.usage("cy") == StoreUsage(conversations=2, bytes=expected)
    memory = await store.add_memory(MemoryItem(owner="cy", content="m", expires_at=1.0))
    assert (await store.usage("cy")).bytes == expected + size(memory)
    assert await store.purge(now=now(), limit=10) == 1  # the expired memory
    assert (await store.usage("cy")).bytes == expected
    await store.delete_conversation(conversation.id)
    assert await store.usage("cy") == StoreUsage(
        conversations=1, bytes=size(imported) + sum(size(m) for m in batch)
    )
    # the kept row agrees with a count from scratch
    recount = await store.db.run(
        lambda db: db.execute(
            "SELECT count(*), sum(length(c.data)) + (SELECT coalesce(sum(length(m.data)), 0) "
            "FROM messages AS m JOIN conversations AS k ON k.id = m.conversation_id "
            "WHERE k.owner = 'cy') FROM conversations AS c WHERE c.owner = 'cy'"
        ).fetchone()
    )
    assert await store.usage("cy") == StoreUsage(conversations=recount[0], bytes=recount[1])
    await store.delete_conversation(imported.id)
    assert await store.usage("cy") == StoreUsage()
    assert await store.db.run(lambda db: db.execute("SELECT * FROM owner_usage").fetchall()) == []


async def test_message_cursors_are_tied_to_their_conversation(store: SQLiteStore) -> None:
    first = await store.create_conversation(Conversation(owner="ada"))
    second = await store.create_conversation(Conversation(owner="ada"))
    for conversation in (first, second):
        for n in range(3):
            await store.append_message(
                Message(role="user", content=str(n), conversation_id=conversation.id)
            )
    page = await store.list_messages(first.id, limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidRequestError, match="another conversation"):
        await store.list_messages(second.id, cursor=page.next_cursor)


async def test_purge_and_usage_use_the_indexes(store: SQLiteStore) -> None:
    """The sweeper's queries read the expiry and idle indexes, not the whole table, and
    usage is one row found by its key."""

    def plans(db: sqlite3.Connection) -> list[str]:
        queries = [
            "SELECT id FROM conversations WHERE expires_at IS NOT NULL AND expires_at <= 1 LIMIT 5",
            "SELECT id FROM conversations WHERE updated_at < 1 "
            "AND (expires_at IS NULL OR expires_at > 1) LIMIT 5",
            "SELECT id FROM memories WHERE expires_at IS NOT NULL AND expires_at <= 1 LIMIT 5",
            "SELECT data FROM memories WHERE owner = 'a' ORDER BY created_at DESC, id DESC",
            "SELECT conversations, bytes FROM owner_usage WHERE owner = 'a'",
        ]
        return [
            " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + query))
            for query in queries
        ]

    found = await store.db.run(plans)
    assert "conversations_expiring" in found[0]
    assert "conversations_by_updated_at" in found[1]
    assert "memories_expiring" in found[2]
    assert "memories_by_owner" in found[3]
    assert "TEMP B-TREE" not in found[3]
    assert "SEARCH owner_usage USING PRIMARY KEY" in found[4]
