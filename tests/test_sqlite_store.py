"""The SQLite memory store, on real files: round trips, paging, errors, concurrent writers (one
store and two stores sharing a file), schema creation and restarts."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from hubbub.errors import InvalidRequestError, NotFoundError
from hubbub.models import Conversation, Message, Page, ToolCall, Usage
from hubbub.runtime import Runtime
from hubbub_plugins.sqlite_store import SQLiteStore


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
        usage=Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5, cost_usd=0.0),
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
    assert version == 1
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
