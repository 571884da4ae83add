"""The memory store contract suite: the tests every :class:`hubbub.contracts.MemoryStore` passes.

hubbub runs it against its ``sqlite``, ``redis`` and ``postgres`` stores; a third-party store
runs it unchanged by subclassing it in a test module and providing a ``store`` fixture that
yields a started, empty store (async tests need pytest-asyncio)::

    import pytest
    from hubbub.testing import MemoryStoreContract

    class TestMyStore(MemoryStoreContract):
        @pytest.fixture
        async def store(self, tmp_path):
            store = MyStore(tmp_path / "data")
            await store.start()
            yield store
            await store.aclose()

Every test uses owners of its own, so a store shared between tests (one database per session)
works too, as long as nothing else writes to it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hubbub.contracts import MemoryStore
from hubbub.errors import ConflictError, InvalidRequestError, NotFoundError
from hubbub.models import (
    Conversation,
    MemoryItem,
    Message,
    Summary,
    new_id,
    now,
    stored_size,
)

__all__ = ["MemoryStoreContract"]


def _owner() -> str:
    return new_id("owner_")


async def _conversation(store: MemoryStore, owner: str, **fields: Any) -> Conversation:
    return await store.create_conversation(Conversation(owner=owner, **fields))


async def _say(store: MemoryStore, conversation_id: str, content: str) -> Message:
    return await store.append_message(
        Message(role="user", content=content, conversation_id=conversation_id)
    )


class MemoryStoreContract:
    """The tests; subclass it and provide a ``store`` fixture (see the module's docstring)."""

    pytestmark = [pytest.mark.asyncio]

    # -- conversations ------------------------------------------------------------------------

    async def test_a_conversation_reads_back_as_created(self, store: MemoryStore) -> None:
        created = await _conversation(
            store,
            _owner(),
            title="Trip ✈ planning",
            model="offline/echo",
            metadata={"tags": ["a", "b"], "n": 1},
            expires_at=now() + 3600,
            tools=["basic.*", "time.get_current_time"],
        )
        assert await store.get_conversation(created.id) == created
        no_tools = await _conversation(store, _owner(), tools=[])
        assert (await store.get_conversation(no_tools.id)) == no_tools
        read = await store.get_conversation(no_tools.id)
        assert read is not None
        assert read.tools == []  # no tools at all, which is not "unset"

    async def test_an_unknown_conversation_is_none(self, store: MemoryStore) -> None:
        assert await store.get_conversation(new_id("conv_")) is None

    async def test_conversations_list_newest_first_in_pages(self, store: MemoryStore) -> None:
        owner = _owner()
        made = [await _conversation(store, owner, title=str(i)) for i in range(7)]
        await _conversation(store, _owner(), title="someone else's")
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = await store.list_conversations(owner, limit=3, cursor=cursor)
            assert len(page.items) <= 3
            seen += [c.id for c in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == [c.id for c in reversed(made)]

    async def test_a_forged_cursor_is_refused(self, store: MemoryStore) -> None:
        conversation = await _conversation(store, _owner())
        for cursor in ("not a cursor", "WzFd", "W10=", "eyJ4Ijo1fQ==", "WzFlOTk5LCJhIl0="):
            with pytest.raises(InvalidRequestError):
                await store.list_conversations(conversation.owner, cursor=cursor)
            with pytest.raises(InvalidRequestError):
                await store.list_messages(conversation.id, cursor=cursor)
            with pytest.raises(InvalidRequestError):
                await store.list_memories(conversation.owner, cursor=cursor)

    async def test_update_replaces_fields_and_bumps_updated_at(self, store: MemoryStore) -> None:
        owner = _owner()
        first = await _conversation(store, owner, title="first")
        second = await _conversation(store, owner, title="second")
        first.title, first.model, first.metadata = "renamed", "m", {"k": "v"}
        first.expires_at = now() + 60
        updated = await store.update_conversation(first)
        assert updated.updated_at >= second.updated_at
        stored = await store.get_conversation(first.id)
        assert stored is not None
        assert (stored.title, stored.model, stored.metadata) == ("renamed", "m", {"k": "v"})
        assert stored.expires_at == first.expires_at
        page = await store.list_conversations(owner)
        assert [c.id for c in page.items] == [first.id, second.id]

    async def test_updating_an_unknown_conversation_fails(self, store: MemoryStore) -> None:
        with pytest.raises(NotFoundError):
            await store.update_conversation(Conversation(owner=_owner()))

    async def test_delete_takes_messages_and_summary(self, store: MemoryStore) -> None:
        conversation = await _conversation(store, _owner())
        message = await _say(store, conversation.id, "hello")
        await store.save_summary(
            Summary(
                conversation_id=conversation.id,
                content="s",
                through_message_id=message.id,
                covered=1,
            )
        )
        assert await store.delete_conversation(conversation.id) is True
        assert await store.delete_conversation(conversation.id) is False
        assert await store.get_conversation(conversation.id) is None
        assert (await store.list_messages(conversation.id)).items == []
        assert await store.recent_messages(conversation.id, limit=5) == []
        assert await store.get_summary(conversation.id) is None

    # -- messages -----------------------------------------------------------------------------

    async def test_messages_keep_their_order_and_fields(self, store: MemoryStore) -> None:
        conversation = await _conversation(store, _owner())
        sent = [await _say(store, conversation.id, f"{i} — ünïcode \u0000 ok") for i in range(5)]
        sent.append(
            await store.append_message(
                Message(
                    role="assistant",
                    content="x" * 100_000,
                    conversation_id=conversation.id,
                    model="offline/echo",
                    metadata={"nested": {"a": [1, 2.5, None]}},
                    interrupted="cancelled",
                )
            )
        )
        assert (await store.list_messages(conversation.id)).items == sent
        assert await store.recent_messages(conversation.id, limit=2) == sent[-2:]
        assert await store.recent_messages(conversation.id, limit=100) == sent

    async def test_messages_list_in_pages(self, store: MemoryStore) -> None:
        conversation = await _conversation(store, _owner())
        sent = [await _say(store, conversation.id, str(i)) for i in range(7)]
        seen: list[Message] = []
        cursor: str | None = None
        while True:
            page = await store.list_messages(conversation.id, limit=3, cursor=cursor)
            seen += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == sent

    async def test_appending_bumps_the_conversation(self, store: MemoryStore) -> None:
        owner = _owner()
        older = await _conversation(store, owner)
        newer = await _conversation(store, owner)
        await _say(store, older.id, "bump")
        page = await store.list_conversations(owner)
        assert [c.id for c in page.items] == [older.id, newer.id]
        stored = await store.get_conversation(older.id)
        assert stored is not None
        assert stored.updated_at >= newer.updated_at

    async def test_a_message_is_stored_once(self, store: MemoryStore) -> None:
        conversation = await _conversation(store, _owner())
        message = await _say(store, conversation.id, "once")
        before = await store.usage(conversation.owner)
        with pytest.raises(ConflictError):
            await store.append_message(message)
        assert (await store.list_messages(conversation.id)).items == [message]
        assert await store.usage(conversation.owner) == before

    async def test_appending_to_an_unknown_conversation_fails(self, store: MemoryStore) -> None:
        with pytest.raises(NotFoundError):
            await _say(store, new_id("conv_"), "lost")

    async def test_concurrent_appends_all_land(self, store: MemoryStore) -> None:
        conversation = await _conversation(store, _owner())
        await asyncio.gather(*(_say(store, conversation.id, str(i)) for i in range(40)))
        page = await store.list_messages(conversation.id, limit=100)
        assert sorted(int(m.content) for m in page.items) == list(range(40))

    # -- usage --------------------------------------------------------------------------------

    async def test_usage_counts_what_an_owner_keeps(self, store: MemoryStore) -> None:
        owner, other = _owner(), _owner()
        assert (await store.usage(owner)).conversations == 0
        assert (await store.usage(owner)).bytes == 0
        conversation = await _conversation(store, owner)
        await _conversation(store, other)
        after_create = await store.usage(owner)
        assert after_create.conversations == 1
        assert after_create.bytes >= stored_size(conversation) - 16
        message = await _say(store, conversation.id, "y" * 5000)
        after_append = await store.usage(owner)
        assert after_append.bytes - after_create.bytes >= stored_size(message) - 16
        memory = await store.add_memory(MemoryItem(owner=owner, content="z" * 3000))
        after_memory = await store.usage(owner)
        assert after_memory.bytes - after_append.bytes >= stored_size(memory) - 16
        assert after_memory.conversations == 1
        await store.delete_conversation(conversation.id)
        await store.delete_memories(owner)
        assert (await store.usage(owner)).conversations == 0
        assert (await store.usage(owner)).bytes == 0
        assert (await store.usage(other)).conversations == 1

    # -- long-term memory ---------------------------------------------------------------------

    async def test_memories_list_newest_first_per_owner(self, store: MemoryStore) -> None:
        owner = _owner()
        made = [
            await store.add_memory(
                MemoryItem(
                    owner=owner,
                    content=f"fact {i}",
                    source_conversation_id="conv_x",
                    created_at=now() + i,
                )
            )
            for i in range(5)
        ]
        await store.add_memory(MemoryItem(owner=_owner(), content="someone else's"))
        seen: list[MemoryItem] = []
        cursor: str | None = None
        while True:
            page = await store.list_memories(owner, limit=2, cursor=cursor)
            seen += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == list(reversed(made))

    async def test_expired_memories_are_not_listed(self, store: MemoryStore) -> None:
        owner = _owner()
        kept = await store.add_memory(MemoryItem(owner=owner, content="kept"))
        await store.add_memory(MemoryItem(owner=owner, content="gone", expires_at=now() - 1))
        assert (await store.list_memories(owner)).items == [kept]

    async def test_a_memory_is_deleted_only_by_its_owner(self, store: MemoryStore) -> None:
        owner = _owner()
        item = await store.add_memory(MemoryItem(owner=owner, content="secret"))
        assert await store.delete_memory(_owner(), item.id) is False
        assert (await store.list_memories(owner)).items == [item]
        assert await store.delete_memory(owner, item.id) is True
        assert await store.delete_memory(owner, item.id) is False
        assert (await store.list_memories(owner)).items == []

    async def test_delete_memories_clears_one_owner(self, store: MemoryStore) -> None:
        owner, other = _owner(), _owner()
        for i in range(3):
            await store.add_memory(MemoryItem(owner=owner, content=str(i)))
        theirs = await store.add_memory(MemoryItem(owner=other, content="theirs"))
        assert await store.delete_memories(owner) == 3
        assert (await store.list_memories(owner)).items == []
        assert (await store.list_memories(other)).items == [theirs]

    # -- summaries ----------------------------------------------------------------------------

    async def test_the_latest_summary_is_kept(self, store: MemoryStore) -> None:
        conversation = await _conversation(store, _owner())
        first = await _say(store, conversation.id, "one")
        second = await _say(store, conversation.id, "two")
        assert await store.get_summary(conversation.id) is None
        one = Summary(
            conversation_id=conversation.id,
            content="1",
            through_message_id=first.id,
            covered=1,
            tokens=3,
            model="m",
        )
        await store.save_summary(one)
        assert await store.get_summary(conversation.id) == one
        two = Summary(
            conversation_id=conversation.id,
            content="1 and 2",
            through_message_id=second.id,
            covered=2,
            tokens=5,
            model="m",
        )
        await store.save_summary(two)
        assert await store.get_summary(conversation.id) == two
        assert len((await store.list_messages(conversation.id)).items) == 2

    async def test_a_summary_needs_its_conversation(self, store: MemoryStore) -> None:
        with pytest.raises(NotFoundError):
            await store.save_summary(
                Summary(
                    conversation_id=new_id("conv_"), content="s", through_message_id="m", covered=1
                )
            )

    # -- expiry and retention -----------------------------------------------------------------

    async def test_purge_deletes_what_is_due_and_nothing_else(self, store: MemoryStore) -> None:
        owner = _owner()
        t = now()
        expired = await _conversation(store, owner, expires_at=t - 10)
        await _say(store, expired.id, "going")
        later = await _conversation(store, owner, expires_at=t + 3600)
        forever = await _conversation(store, owner)
        old_memory = await store.add_memory(
            MemoryItem(owner=owner, content="old", expires_at=t - 1)
        )
        memory = await store.add_memory(MemoryItem(owner=owner, content="new", expires_at=t + 3600))
        purged = 0
        while (batch := await store.purge(now=t, limit=1)) > 0:
            assert batch == 1
            purged += batch
        assert purged >= 2  # another test's due items may go too
        assert await store.get_conversation(expired.id) is None
        assert (await store.list_messages(expired.id)).items == []
        assert await store.get_conversation(later.id) is not None
        assert await store.get_conversation(forever.id) is not None
        assert await store.delete_memory(owner, old_memory.id) is False
        assert (await store.list_memories(owner)).items == [memory]
        assert (await store.usage(owner)).conversations == 2

    async def test_purge_takes_idle_conversations(self, store: MemoryStore) -> None:
        owner = _owner()
        idle = await _conversation(store, owner, updated_at=now() - 86_400 * 40)
        busy = await _conversation(store, owner)
        while await store.purge(now=now(), idle_before=now() - 86_400 * 30, limit=100) == 100:
            pass
        assert await store.get_conversation(idle.id) is None
        assert await store.get_conversation(busy.id) is not None
        assert (await store.usage(owner)).conversations == 1

    async def test_purge_stops_at_its_limit(self, store: MemoryStore) -> None:
        owner = _owner()
        for _ in range(5):
            await _conversation(store, owner, expires_at=now() - 5)
        assert await store.purge(now=now(), limit=2) == 2
        while await store.purge(now=now(), limit=2) == 2:
            pass
        assert (await store.usage(owner)).conversations == 0

    # -- copying between stores ---------------------------------------------------------------

    async def test_owners_list_once_each_in_order_in_pages(self, store: MemoryStore) -> None:
        prefix = new_id("owners_")
        a, b, m, x = (f"{prefix}_{letter}" for letter in "abmx")
        for owner in (m, b, b, x):
            await _conversation(store, owner)
        await store.add_memory(MemoryItem(owner=a, content="memories only"))
        await store.add_memory(MemoryItem(owner=m, content="both"))
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = await store.list_owners(limit=2, cursor=cursor)
            assert len(page.items) <= 2
            seen += page.items
            cursor = page.next_cursor
            if cursor is None:
                break
        assert len(seen) == len(set(seen))
        assert seen == sorted(seen)
        assert [owner for owner in seen if owner.startswith(prefix)] == [a, b, m, x]
        with pytest.raises(InvalidRequestError):
            await store.list_owners(cursor="not a cursor")

    async def test_import_keeps_the_conversation_as_it_was(self, store: MemoryStore) -> None:
        conversation = Conversation(
            owner=_owner(), title="t", created_at=100.0, updated_at=200.0, expires_at=now() + 60
        )
        messages = [
            Message(role="user", content=str(n), conversation_id=conversation.id, created_at=150.0)
            for n in range(5)
        ]
        assert await store.import_conversation(conversation, messages[:2]) == 2
        assert await store.import_conversation(conversation, messages[:4]) == 2  # 2 were there
        assert await store.import_conversation(conversation, messages[4:]) == 1
        assert await store.get_conversation(conversation.id) == conversation  # nothing bumped
        assert (await store.list_messages(conversation.id)).items == messages
        fresh = Conversation(owner=_owner(), updated_at=1.0)
        assert await store.import_conversation(fresh, []) == 0
        assert await store.get_conversation(fresh.id) == fresh

    async def test_import_replaces_only_with_a_later_version(self, store: MemoryStore) -> None:
        owner = _owner()
        conversation = Conversation(owner=owner, title="first", updated_at=200.0)
        await store.import_conversation(conversation, [])
        older = Conversation(owner=owner, id=conversation.id, title="older", updated_at=100.0)
        await store.import_conversation(older, [])
        assert await store.get_conversation(conversation.id) == conversation
        later = Conversation(owner=owner, id=conversation.id, title="later", updated_at=300.0)
        await store.import_conversation(later, [])
        assert await store.get_conversation(conversation.id) == later

    async def test_import_refuses_what_is_not_its_own(self, store: MemoryStore) -> None:
        conversation = await _conversation(store, _owner())
        stray = Message(role="user", content="x", conversation_id=new_id("conv_"))
        with pytest.raises(InvalidRequestError):
            await store.import_conversation(conversation, [stray])
        impostor = Conversation(owner=_owner(), id=conversation.id, updated_at=now() + 10)
        with pytest.raises(ConflictError):
            await store.import_conversation(impostor, [])
        assert await store.get_conversation(conversation.id) == conversation
        assert (await store.list_messages(conversation.id)).items == []
