"""The ``redis`` memory store against real ``redis-server``s: the store contract suite (on one
Redis and on a three-node Redis Cluster), the runtime serving from it, its key prefix, writes
that stay whole under races between processes, clear errors while Redis is away or hung, and
corrupt records."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio
from redis_support import RedisCluster, RedisServer
from support import keyring_toml

from hubbub.config import Config
from hubbub.errors import ComponentError, ConflictError, InvalidRequestError, NotFoundError
from hubbub.models import (
    Conversation,
    MemoryItem,
    Message,
    Principal,
    Summary,
    new_id,
    now,
    stored_size,
)
from hubbub.runtime import Runtime
from hubbub.testing import MemoryStoreContract, context_for
from hubbub_plugins import redis_store
from hubbub_plugins.redis_store import RedisStore, RedisStoreSettings

TIMEOUT = 1.0
"""``[redis] timeout`` of these tests' stores."""
MARGIN = 4.0
"""Slack allowed over ``TIMEOUT`` for an operation against a dead or hung Redis (a loaded
machine): the bound tested is "no hang", not a latency."""


def redis_toml(url: str, extra: str = "") -> str:
    return f'[redis]\nurl = "{url}"\ntimeout = {TIMEOUT}\n' + extra


@contextlib.asynccontextmanager
async def open_store(config: Config, prefix: str | None = None) -> AsyncIterator[RedisStore]:
    """A started store built by the plugin's class with a context like the runtime's (its own
    shared-resources registry, so two of them are two clients: two processes)."""
    settings = RedisStoreSettings() if prefix is None else RedisStoreSettings(key_prefix=prefix)
    context = context_for(
        config, kind="memory", name="redis", plugin="redis_store", settings=settings
    )
    store = RedisStore(context)
    try:
        await store.start()
        yield store
    finally:
        await store.aclose()
        await context.tasks.aclose()
        await context.resources.release_all()


@pytest.fixture
async def store(
    redis_server: RedisServer, make_config: Callable[..., Config]
) -> AsyncIterator[RedisStore]:
    async with open_store(make_config(redis_toml(redis_server.url))) as opened:
        yield opened


async def all_keys(client: redis.asyncio.Redis) -> list[str]:
    return sorted([key.decode() async for key in client.scan_iter(count=1000)])


def owner() -> str:
    return new_id("owner_")


class TestRedisStore(MemoryStoreContract):
    """The contract suite on one ``redis-server`` per test."""


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One three-node Redis Cluster for the module (the contract suite shares it: each test
    uses owners of its own)."""
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


class TestRedisStoreOnACluster(MemoryStoreContract):
    """The contract suite on a Redis Cluster (``[redis] cluster = true``)."""

    @pytest.fixture
    async def store(
        self, redis_cluster: RedisCluster, make_config: Callable[..., Config]
    ) -> AsyncIterator[RedisStore]:
        config = make_config(redis_toml(redis_cluster.url, "cluster = true\n"))
        async with open_store(config) as opened:
            yield opened

    async def test_every_key_lives_in_one_slot(
        self, store: RedisStore, redis_cluster: RedisCluster
    ) -> None:
        await fill(store, owner())
        client = redis.asyncio.RedisCluster.from_url(redis_cluster.url)
        try:
            keys = [key async for key in client.scan_iter(match="{hubbub:store:}*")]
            assert len(keys) >= 9
            slots = {client.keyslot(key) for key in keys}
        finally:
            await client.aclose()
        assert len(slots) == 1


# -- through the runtime ----------------------------------------------------------------------


async def test_the_runtime_serves_conversations_from_redis(
    tmp_path: Path,
    make_runtime: Callable[..., Runtime],
    redis_server: RedisServer,
    redis_client: redis.asyncio.Redis,
    principal: Principal,
) -> None:
    text = '[memory]\nbackend = "redis"\n' + redis_toml(redis_server.url)
    text += keyring_toml(tmp_path)
    async with make_runtime(text) as runtime:
        assert isinstance(runtime.memory, RedisStore)
        engine = runtime.conversations
        conversation = await engine.create(principal)
        _, answer = await engine.post_message(principal, conversation.id, "hello", wait=True)
        assert answer is not None
        assert answer.content == "[offline echo] You said: hello"
        stored = (await engine.messages(principal, conversation.id)).items
        assert [(m.role, m.content) for m in stored] == [
            ("user", "hello"),
            ("assistant", "[offline echo] You said: hello"),
        ]
        health = await runtime.health()
        assert health.components["memory"].status == "ok"
        assert health.components["memory"].backend == "redis"
        assert "PING" in health.components["memory"].detail
    # what the runtime wrote is in Redis, under the default prefix, and outlives the runtime
    assert await redis_client.llen(f"hubbub:store:messages:{conversation.id}") == 2
    async with make_runtime(text) as again:
        listed = (await again.conversations.messages(principal, conversation.id)).items
        assert [m.id for m in listed] == [m.id for m in stored]


async def test_a_redis_store_without_a_redis_url_is_a_configuration_error(
    make_runtime: Callable[..., Runtime],
) -> None:
    from hubbub.errors import ConfigError

    with pytest.raises(ConfigError, match=r"redis\.url.*memory\.backend uses Redis"):
        async with make_runtime('[memory]\nbackend = "redis"\n'):
            pass


async def test_an_unknown_setting_is_refused_with_its_path(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer
) -> None:
    from hubbub.errors import ConfigError

    text = '[memory]\nbackend = "redis"\n' + redis_toml(redis_server.url)
    with pytest.raises(ConfigError, match=r"plugins\.redis_store\.prefix"):
        async with make_runtime(text + '[plugins.redis_store]\nprefix = "x:"\n'):
            pass


# -- keys and prefixes ------------------------------------------------------------------------


async def fill(store: RedisStore, who: str) -> Conversation:
    """One of everything the store keeps: a conversation with a message, a summary and an
    expiry, an idle one, memories with and without expiry."""
    conversation = await store.create_conversation(
        Conversation(owner=who, title="t", expires_at=now() + 3600)
    )
    message = await store.append_message(
        Message(role="user", content="hi", conversation_id=conversation.id)
    )
    await store.save_summary(
        Summary(
            conversation_id=conversation.id, content="s", through_message_id=message.id, covered=1
        )
    )
    await store.create_conversation(Conversation(owner=who))
    await store.add_memory(MemoryItem(owner=who, content="m", expires_at=now() + 3600))
    await store.add_memory(MemoryItem(owner=who, content="kept"))
    return conversation


async def test_every_key_carries_the_prefix(
    redis_server: RedisServer,
    redis_client: redis.asyncio.Redis,
    make_config: Callable[..., Config],
) -> None:
    async with open_store(make_config(redis_toml(redis_server.url)), "team-a:") as store:
        who = owner()
        conversation = await fill(store, who)
        keys = await all_keys(redis_client)
        assert len(keys) >= 9  # every kind of key, see the module's layout
        assert all(key.startswith("team-a:") for key in keys), keys
        assert f"team-a:conversation:{conversation.id}" in keys
        assert f"team-a:usage:{who}" in keys
        assert "team-a:expiring" in keys
        assert "team-a:idle" in keys
        # everything deleted: nothing is left behind but the emptied indexes' absence
        for item in (await store.list_conversations(who)).items:
            assert await store.delete_conversation(item.id)
        assert await store.delete_memories(who) == 2
        assert await all_keys(redis_client) == []


async def test_two_prefixes_on_one_redis_do_not_see_each_other(
    redis_server: RedisServer, make_config: Callable[..., Config]
) -> None:
    config = make_config(redis_toml(redis_server.url))
    async with open_store(config, "a:") as a, open_store(config, "b:") as b:
        who = owner()
        theirs = await fill(a, who)
        due = await a.create_conversation(Conversation(owner=who, expires_at=now() - 10))
        assert await b.get_conversation(theirs.id) is None
        assert (await b.list_conversations(who)).items == []
        assert (await b.list_memories(who)).items == []
        assert await b.recent_messages(theirs.id, limit=10) == []
        assert await b.get_summary(theirs.id) is None
        assert (await b.usage(who)).conversations == 0
        assert await b.purge(now=now() + 10_000, idle_before=now() + 10_000, limit=100) == 0
        assert await b.delete_conversation(theirs.id) is False
        assert await b.delete_memories(who) == 0
        with pytest.raises(NotFoundError):
            await b.append_message(Message(role="user", content="x", conversation_id=theirs.id))
        # a's data is whole, and a's own sweep finds its due conversation
        assert (await a.usage(who)).conversations == 3
        assert len((await a.list_memories(who)).items) == 2
        assert await a.purge(now=now(), limit=100) == 1
        assert await a.get_conversation(due.id) is None


# -- races between processes -------------------------------------------------------------------


async def test_appends_racing_a_delete_leave_nothing_behind(
    redis_server: RedisServer,
    redis_client: redis.asyncio.Redis,
    make_config: Callable[..., Config],
) -> None:
    config = make_config(redis_toml(redis_server.url))
    async with open_store(config) as one, open_store(config) as two:
        who = owner()
        for _ in range(5):
            conversation = await one.create_conversation(Conversation(owner=who))

            async def say(i: int, conversation_id: str = conversation.id) -> str:
                try:
                    await one.append_message(
                        Message(role="user", content=str(i), conversation_id=conversation_id)
                    )
                except NotFoundError:
                    return "refused"
                return "stored"

            async def delete(conversation_id: str = conversation.id) -> str:
                await asyncio.sleep(0.002)
                return "deleted" if await two.delete_conversation(conversation_id) else "?"

            outcomes = await asyncio.gather(*(say(i) for i in range(60)), delete())
            assert outcomes[-1] == "deleted"
        # whatever interleaving happened, no message outlived its conversation and usage is 0
        assert await all_keys(redis_client) == []
        assert (await one.usage(who)).bytes == 0


async def test_two_processes_purging_at_once_delete_each_item_once(
    redis_server: RedisServer,
    redis_client: redis.asyncio.Redis,
    make_config: Callable[..., Config],
) -> None:
    config = make_config(redis_toml(redis_server.url))
    async with open_store(config) as one, open_store(config) as two:
        who = owner()
        for i in range(30):
            c = await one.create_conversation(Conversation(owner=who, expires_at=now() - 1))
            await one.append_message(Message(role="user", content=str(i), conversation_id=c.id))
            await one.add_memory(MemoryItem(owner=who, content=str(i), expires_at=now() - 1))

        async def sweep(store: RedisStore) -> int:
            total = 0
            while (batch := await store.purge(now=now(), limit=7)) > 0:
                total += batch
            return total

        counts = await asyncio.gather(sweep(one), sweep(two), sweep(one), sweep(two))
        assert sum(counts) == 60
        assert await all_keys(redis_client) == []


async def test_usage_follows_updates_exactly(store: RedisStore) -> None:
    who = owner()
    conversation = await store.create_conversation(Conversation(owner=who, title="short"))
    assert (await store.usage(who)).bytes == stored_size(conversation)
    conversation.title = "a much longer title than before"
    conversation.metadata = {"k": "v" * 100}
    updated = await store.update_conversation(conversation)
    assert (await store.usage(who)).bytes == stored_size(updated)
    message = await store.append_message(
        Message(role="user", content="hello", conversation_id=conversation.id)
    )
    updated.title, updated.metadata = "", {}
    again = await store.update_conversation(updated)
    assert (await store.usage(who)).bytes == stored_size(again) + stored_size(message)
    assert await store.delete_conversation(conversation.id)
    assert (await store.usage(who)).bytes == 0


async def test_a_taken_id_is_a_conflict_not_an_overwrite(store: RedisStore) -> None:
    first = await store.create_conversation(Conversation(owner=owner(), title="mine"))
    with pytest.raises(ConflictError):
        await store.create_conversation(Conversation(owner=owner(), id=first.id, title="theirs"))
    assert await store.get_conversation(first.id) == first
    memory = await store.add_memory(MemoryItem(owner="ada", content="mine"))
    with pytest.raises(ConflictError):
        await store.add_memory(MemoryItem(owner="eve", id=memory.id, content="theirs"))
    assert (await store.list_memories("ada")).items == [memory]
    assert (await store.list_memories("eve")).items == []


async def test_conversations_updated_at_the_same_instant_page_exactly(store: RedisStore) -> None:
    who = owner()
    at = now()
    made = [
        await store.create_conversation(Conversation(owner=who, updated_at=at)) for _ in range(25)
    ]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.list_conversations(who, limit=4, cursor=cursor)
        seen += [c.id for c in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == sorted((c.id for c in made), reverse=True)


async def test_a_cursor_of_another_listing_is_refused(store: RedisStore) -> None:
    who = owner()
    for i in range(3):
        await store.add_memory(MemoryItem(owner=who, content=str(i)))
        conversation = await store.create_conversation(Conversation(owner=who))
        await store.append_message(
            Message(role="user", content=str(i), conversation_id=conversation.id)
        )
    memories = (await store.list_memories(who, limit=1)).next_cursor
    conversations = (await store.list_conversations(who, limit=1)).next_cursor
    assert memories
    assert conversations
    with pytest.raises(InvalidRequestError) as caught:
        await store.list_conversations(who, cursor=memories)
    assert caught.value.field == "cursor"
    with pytest.raises(InvalidRequestError):
        await store.list_memories(who, cursor=conversations)
    with pytest.raises(InvalidRequestError):
        await store.list_messages(conversation.id, cursor=conversations)


async def test_a_page_past_many_expired_memories_ends_early_with_a_cursor(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "_SCAN_BUDGET", 5)
    who = owner()
    oldest = await store.add_memory(MemoryItem(owner=who, content="old", created_at=now() - 100))
    for i in range(20):  # newer, but expired: a listing looks past them
        await store.add_memory(
            MemoryItem(owner=who, content=str(i), created_at=now() - 50 + i, expires_at=now() - 1)
        )
    newest = await store.add_memory(MemoryItem(owner=who, content="new"))
    seen: list[MemoryItem] = []
    pages = 0
    cursor: str | None = None
    while True:
        page = await store.list_memories(who, limit=2, cursor=cursor)
        pages += 1
        seen += page.items
        if (cursor := page.next_cursor) is None:
            break
    assert seen == [newest, oldest]
    assert pages > 1  # the budget ended pages early, and the cursor went on from there


# -- Redis away -------------------------------------------------------------------------------


async def every_operation_fails_cleanly(store: RedisStore, conversation: Conversation) -> None:
    """Each operation raises a ComponentError naming the Redis store, within the timeout plus
    the margin."""
    who = conversation.owner
    calls = [
        lambda: store.get_conversation(conversation.id),
        lambda: store.list_conversations(who),
        lambda: store.create_conversation(Conversation(owner=who)),
        lambda: store.update_conversation(conversation),
        lambda: store.append_message(
            Message(role="user", content="x", conversation_id=conversation.id)
        ),
        lambda: store.list_messages(conversation.id),
        lambda: store.recent_messages(conversation.id, limit=5),
        lambda: store.usage(who),
        lambda: store.purge(now=now(), limit=10),
        lambda: store.add_memory(MemoryItem(owner=who, content="m")),
        lambda: store.list_memories(who),
        lambda: store.delete_memory(who, "mem_x"),
        lambda: store.delete_memories(who),
        lambda: store.get_summary(conversation.id),
        lambda: store.delete_conversation(conversation.id),
    ]
    for call in calls:
        began = time.monotonic()
        with pytest.raises(ComponentError, match=r"^the Redis store at redis://127\.0\.0\.1:"):
            await call()
        assert time.monotonic() - began < TIMEOUT + MARGIN


async def test_redis_killed_mid_use_is_a_clear_error_and_coming_back_heals(
    store: RedisStore, redis_server: RedisServer
) -> None:
    who = owner()
    conversation = await store.create_conversation(Conversation(owner=who))
    redis_server.kill()
    with pytest.raises(ComponentError) as caught:
        await store.get_conversation(conversation.id)
    message = str(caught.value)
    assert message.startswith(f"the Redis store at {redis_server.url} failed to read conversation ")
    assert "Traceback" not in message
    await every_operation_fails_cleanly(store, conversation)
    health = await store.health()
    assert health.status == "down"
    assert f"Redis at {redis_server.url} does not answer" in health.detail
    redis_server.start()  # same port, empty: nothing was persisted
    assert (await store.health()).status == "ok"
    assert await store.get_conversation(conversation.id) is None
    again = await store.create_conversation(Conversation(owner=who))
    await store.append_message(Message(role="user", content="back", conversation_id=again.id))
    assert [m.content for m in await store.recent_messages(again.id, limit=5)] == ["back"]


async def test_a_hung_redis_fails_within_the_timeout_and_recovers(
    store: RedisStore, redis_server: RedisServer
) -> None:
    conversation = await store.create_conversation(Conversation(owner=owner()))
    assert redis_server.process is not None
    pid = redis_server.process.pid
    os.kill(pid, signal.SIGSTOP)  # alive, listening, never answering
    try:
        began = time.monotonic()
        with pytest.raises(ComponentError, match=r"no answer within 1 s \(\[redis\] timeout\)"):
            await store.get_conversation(conversation.id)
        assert time.monotonic() - began < TIMEOUT + MARGIN
        began = time.monotonic()
        health = await store.health()
        assert health.status == "down"
        assert time.monotonic() - began < TIMEOUT + MARGIN
    finally:
        os.kill(pid, signal.SIGCONT)
    assert await store.get_conversation(conversation.id) == conversation
    assert (await store.health()).status == "ok"


async def test_starting_without_redis_names_it_without_the_password(
    redis_server: RedisServer, make_config: Callable[..., Config]
) -> None:
    url = redis_server.url.replace("redis://", "redis://:s3cret@")
    redis_server.kill()
    with pytest.raises(ComponentError) as caught:
        async with open_store(make_config(redis_toml(url))):
            pass
    assert "s3cret" not in str(caught.value)
    assert str(caught.value).startswith("the Redis store at redis://:***@127.0.0.1:")


# -- corrupt records --------------------------------------------------------------------------


async def test_a_corrupt_conversation_is_skipped_by_listings_and_refused_alone(
    store: RedisStore, redis_client: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    who = owner()
    good = await store.create_conversation(Conversation(owner=who, title="good"))
    garbled = await store.create_conversation(Conversation(owner=who, title="garbled"))
    replaced = await store.create_conversation(Conversation(owner=who, title="replaced"))
    await redis_client.hset(f"hubbub:store:conversation:{garbled.id}", "data", b"\xff{not json")
    await redis_client.delete(f"hubbub:store:conversation:{replaced.id}")
    await redis_client.set(f"hubbub:store:conversation:{replaced.id}", b"garbage")
    with caplog.at_level(logging.WARNING, logger="hubbub.plugins.redis_store"):
        assert [c.id for c in (await store.list_conversations(who)).items] == [good.id]
    skipped = [r.getMessage() for r in caplog.records if "skipped corrupt record" in r.message]
    assert len(skipped) == 2
    assert any(f"hubbub:store:conversation:{garbled.id}" in text for text in skipped)
    for corrupt in (garbled, replaced):
        with pytest.raises(ComponentError, match=rf"conversation '{corrupt.id}' .* is corrupt"):
            await store.get_conversation(corrupt.id)
    with pytest.raises(ComponentError, match="is corrupt"):
        await store.append_message(Message(role="user", content="x", conversation_id=replaced.id))
    with pytest.raises(ComponentError, match="is corrupt"):
        await store.update_conversation(replaced)
    # deleting clears them; the good one is untouched
    assert await store.delete_conversation(garbled.id) is True
    assert await store.delete_conversation(replaced.id) is True
    assert await store.get_conversation(garbled.id) is None
    assert await store.get_conversation(replaced.id) is None
    assert [c.id for c in (await store.list_conversations(who)).items] == [good.id]
    assert await store.get_conversation(good.id) == good


async def test_corrupt_messages_memories_and_summaries_are_skipped(
    store: RedisStore, redis_client: redis.asyncio.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    who = owner()
    conversation = await store.create_conversation(Conversation(owner=who))
    first = await store.append_message(
        Message(role="user", content="1", conversation_id=conversation.id)
    )
    await redis_client.rpush(f"hubbub:store:messages:{conversation.id}", b"[]garbage")
    last = await store.append_message(
        Message(role="user", content="3", conversation_id=conversation.id)
    )
    await store.save_summary(
        Summary(
            conversation_id=conversation.id, content="s", through_message_id=first.id, covered=1
        )
    )
    await redis_client.set(f"hubbub:store:summary:{conversation.id}", b"{")
    kept = await store.add_memory(MemoryItem(owner=who, content="kept"))
    bad = await store.add_memory(MemoryItem(owner=who, content="bad"))
    await redis_client.hset(f"hubbub:store:memory:{bad.id}", "data", b"nope")
    with caplog.at_level(logging.WARNING, logger="hubbub.plugins.redis_store"):
        assert (await store.list_messages(conversation.id)).items == [first, last]
        assert await store.recent_messages(conversation.id, limit=2) == [last]
        assert await store.get_summary(conversation.id) is None
        assert (await store.list_memories(who)).items == [kept]
    assert len([r for r in caplog.records if "skipped corrupt record" in r.message]) == 4
    assert await store.delete_memories(who) == 2


# -- messages, owners and imports -------------------------------------------------------------


async def test_a_message_is_stored_once_and_its_cursor_stays_with_its_conversation(
    store: RedisStore,
) -> None:
    first = await store.create_conversation(Conversation(owner=owner()))
    second = await store.create_conversation(Conversation(owner=first.owner))
    said = await store.append_message(Message(role="user", content="1", conversation_id=first.id))
    with pytest.raises(ConflictError, match="already"):  # a retried append
        await store.append_message(said)
    for conversation in (first, second):
        for n in range(3):
            await store.append_message(
                Message(role="user", content=str(n), conversation_id=conversation.id)
            )
    assert len((await store.list_messages(first.id)).items) == 4
    page = await store.list_messages(first.id, limit=1)
    assert page.next_cursor is not None
    with pytest.raises(InvalidRequestError, match="another conversation") as caught:
        await store.list_messages(second.id, cursor=page.next_cursor)
    assert caught.value.field == "cursor"


async def test_owners_are_listed_once_each_in_order_and_leave_with_their_data(
    store: RedisStore,
) -> None:
    tag = new_id()
    names = [f"{tag}-{n}" for n in ("dee", "ada", "cy", "bob", "eve")]
    for name in names[:3]:
        c = await store.create_conversation(Conversation(owner=name))
        await store.create_conversation(Conversation(owner=name))
        await store.append_message(Message(role="user", content="x", conversation_id=c.id))
    await store.add_memory(MemoryItem(owner=names[3], content="only a memory"))
    await store.add_memory(MemoryItem(owner=names[0], content="and a memory"))
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.list_owners(limit=2, cursor=cursor)
        assert len(page.items) <= 2
        seen += page.items
        if (cursor := page.next_cursor) is None:
            break
    assert seen == sorted(names[:4])
    for forged in ("W10=", "WzFd", "not a cursor"):
        with pytest.raises(InvalidRequestError):
            await store.list_owners(cursor=forged)
    # an owner with nothing left is no longer listed
    assert await store.delete_memories(names[3]) == 1
    for item in (await store.list_conversations(names[1])).items:
        await store.delete_conversation(item.id)
    assert (await store.list_owners()).items == sorted([names[0], names[2]])


async def test_an_import_is_stored_as_given_and_never_twice(store: RedisStore) -> None:
    who = owner()
    newer = await store.create_conversation(Conversation(owner=who))
    imported = Conversation(owner=who, title="old", updated_at=5.0, expires_at=now() + 3600)
    batch = [
        Message(role="user", content=str(i), conversation_id=imported.id, created_at=4.0)
        for i in range(3)
    ]
    assert await store.import_conversation(imported, batch[:2]) == 2
    assert await store.import_conversation(imported, batch) == 1  # the third only
    assert await store.import_conversation(imported, batch) == 0  # a copy run twice
    assert await store.get_conversation(imported.id) == imported  # not bumped
    assert (await store.list_messages(imported.id)).items == batch
    assert [c.id for c in (await store.list_conversations(who)).items] == [newer.id, imported.id]
    expected = stored_size(newer) + stored_size(imported) + sum(stored_size(m) for m in batch)
    assert (await store.usage(who)).bytes == expected
    assert (await store.usage(who)).conversations == 2
    # imported as idle as it was: the sweeper's idle rule finds it
    assert await store.purge(now=now(), idle_before=10.0, limit=10) == 1
    assert await store.get_conversation(imported.id) is None
    assert (await store.usage(who)).bytes == stored_size(newer)


async def test_an_import_refuses_strangers_messages_and_another_owners_conversation(
    store: RedisStore,
) -> None:
    theirs = await store.create_conversation(Conversation(owner=owner(), title="theirs"))
    stray = Message(role="user", content="x", conversation_id=new_id("conv_"))
    with pytest.raises(InvalidRequestError) as caught:
        await store.import_conversation(Conversation(owner=owner()), [stray])
    assert caught.value.field == "conversation_id"
    impostor = Conversation(owner=owner(), id=theirs.id, title="mine now")
    with pytest.raises(ConflictError, match="another owner"):
        await store.import_conversation(
            impostor, [Message(role="user", content="x", conversation_id=theirs.id)]
        )
    assert await store.get_conversation(theirs.id) == theirs
    assert (await store.list_messages(theirs.id)).items == []
