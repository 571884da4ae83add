"""One reply at a time per conversation across processes: the reply lease in the shared cache.

Two :class:`Runtime` objects sharing one ``redis-server`` (and one data directory) stand for two
server processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio
from redis_support import RedisServer
from reply_support import SLOW

from hubbub.conversation.lease import ReplyLeases
from hubbub.errors import ComponentError, ConflictError
from hubbub.events import MessageCompleted
from hubbub.models import Principal
from hubbub.runtime import Runtime
from hubbub_plugins.memory_cache import MemoryCache, MemoryCacheSettings

LONG = " ".join(["word"] * 100)  # about 2 s of streaming at 0.02 s a word


def shared(server: RedisServer, extra: str = "") -> str:
    """Configuration of one "process": the cache (so the leases) in ``server``."""
    return f'[cache]\nbackend = "redis"\n[redis]\nurl = "{server.url}"\n' + SLOW + extra


@pytest.fixture
async def memory_cache() -> AsyncIterator[MemoryCache]:
    cache = MemoryCache(MemoryCacheSettings())
    await cache.start()
    yield cache
    await cache.aclose()


def lease_key(conversation_id: str) -> str:
    return f"hubbub:cache:hubbub:reply:{conversation_id}"


# -- the leases themselves ----------------------------------------------------------------------


async def test_a_lease_is_held_until_released(memory_cache: MemoryCache) -> None:
    leases = ReplyLeases(memory_cache, ttl=5)
    lease = await leases.acquire("c1", "reply_one")
    assert lease is not None
    assert await leases.holder("c1") == "reply_one"  # what a cancel request names
    assert await ReplyLeases(memory_cache).holder("c1") == "reply_one"  # seen by anyone
    assert await leases.acquire("c1") is None
    assert await leases.acquire("c2") is not None  # another conversation is free
    await lease.release()
    await lease.release()  # twice is harmless
    assert await leases.holder("c1") is None
    again = await leases.acquire("c1")
    assert again is not None
    assert (await leases.holder("c1") or "").startswith("reply_")  # a new id when not given
    assert await leases.holder("c1") != "reply_one"


async def test_a_running_reply_keeps_its_lease_past_its_ttl(memory_cache: MemoryCache) -> None:
    leases = ReplyLeases(memory_cache, ttl=1.0, renew_every=0.1)
    lease = await leases.acquire("c1")
    assert lease is not None
    await asyncio.sleep(2.5)  # more than twice the ttl: only renewal keeps it
    assert await leases.acquire("c1") is None
    assert not lease.lost
    await lease.release()
    assert await leases.holder("c1") is None


async def test_a_lease_that_expired_and_was_taken_is_not_released_by_its_old_holder(
    memory_cache: MemoryCache,
) -> None:
    old = ReplyLeases(memory_cache, ttl=0.1, renew_every=60)  # a holder that stalled
    new = ReplyLeases(memory_cache, ttl=5)
    stale = await old.acquire("c1")
    assert stale is not None
    await asyncio.sleep(0.3)
    taken = await new.acquire("c1")
    assert taken is not None
    await stale.release()
    assert await memory_cache.get("hubbub:reply:c1") == taken.token  # still the new holder's
    await taken.release()


async def test_renewal_notices_a_lost_lease(memory_cache: MemoryCache) -> None:
    leases = ReplyLeases(memory_cache, ttl=0.1, renew_every=0.3)  # renews too late
    told: list[str] = []
    lease = await leases.acquire("c1", on_lost=lambda: told.append("lost"))
    assert lease is not None
    await asyncio.sleep(0.15)
    assert await memory_cache.add("hubbub:reply:c1", b"someone else", ttl=5)
    for _ in range(100):
        if lease.lost:
            break
        await asyncio.sleep(0.05)
    assert lease.lost
    assert told == ["lost"]  # the holder is told once, and stops its reply
    # the renewal did not take it back
    assert await memory_cache.get("hubbub:reply:c1") == b"someone else"
    await lease.release()
    assert await memory_cache.get("hubbub:reply:c1") == b"someone else"


# -- the engine, two runtimes sharing Redis -----------------------------------------------------


async def test_a_second_reply_in_another_runtime_is_refused_until_the_first_ends(
    make_runtime: Callable[..., Runtime],
    redis_server: RedisServer,
    redis_client: redis.asyncio.Redis,
    principal: Principal,
) -> None:
    async with make_runtime(shared(redis_server)) as a, make_runtime(shared(redis_server)) as b:
        conversation = await a.conversations.create(principal)
        done = a.events.subscribe(
            lambda e: isinstance(e, MessageCompleted) and e.message.role == "assistant"
        )
        await a.conversations.post_message(principal, conversation.id, LONG)
        assert 0 < await redis_client.pttl(lease_key(conversation.id)) <= 30_000
        with pytest.raises(ConflictError, match="still being written"):
            await b.conversations.post_message(principal, conversation.id, "too soon")
        with pytest.raises(ConflictError):
            await b.conversations.reply(principal, conversation.id)
        completed = await asyncio.wait_for(done.get(), 30)
        assert isinstance(completed, MessageCompleted)
        # message.completed comes once the lease is given back: the next message goes at once
        assert await redis_client.exists(lease_key(conversation.id)) == 0
        _, reply = await b.conversations.post_message(principal, conversation.id, "now", wait=True)
        assert reply is not None
        assert reply.content == "[offline echo] You said: now"
        assert await redis_client.exists(lease_key(conversation.id)) == 0
        stored = [
            m.content for m in (await b.conversations.messages(principal, conversation.id)).items
        ]
    assert "too soon" not in stored
    assert stored[0] == LONG


async def test_a_lease_left_by_a_dead_process_expires(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer, principal: Principal
) -> None:
    async with make_runtime(shared(redis_server)) as a, make_runtime(shared(redis_server)) as b:
        conversation = await a.conversations.create(principal)
        # Process A takes the lease, then dies: no renewal, no release.
        dying = ReplyLeases(a.cache, ttl=0.5)
        lease = await dying.acquire(conversation.id)
        assert lease is not None
        assert lease._renewal is not None
        lease._renewal.cancel()
        with pytest.raises(ConflictError):
            await b.conversations.post_message(principal, conversation.id, "anyone there?")
        reply = None
        for _ in range(100):  # the lease lasts 0.5 s: free again well within 5 s
            await asyncio.sleep(0.05)
            try:
                _, reply = await b.conversations.post_message(
                    principal, conversation.id, "hello", wait=True
                )
                break
            except ConflictError:
                continue
        assert reply is not None
        assert reply.content == "[offline echo] You said: hello"


async def test_conversations_are_leased_one_by_one(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer, principal: Principal
) -> None:
    async with make_runtime(shared(redis_server)) as a, make_runtime(shared(redis_server)) as b:
        one, two = await a.conversations.create(principal), await a.conversations.create(principal)
        replies = await asyncio.gather(
            a.conversations.post_message(principal, one.id, "alpha", wait=True),
            b.conversations.post_message(principal, two.id, "beta", wait=True),
        )
    assert [r[1].content for r in replies if r[1]] == [
        "[offline echo] You said: alpha",
        "[offline echo] You said: beta",
    ]


async def test_many_runtimes_racing_for_one_conversation_start_one_reply(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer, principal: Principal
) -> None:
    runtimes = [make_runtime(shared(redis_server)) for _ in range(3)]
    for runtime in runtimes:
        await runtime.start()
    try:
        conversation = await runtimes[0].conversations.create(principal)
        outcomes = await asyncio.gather(
            *(
                runtime.conversations.post_message(principal, conversation.id, f"try {i}")
                for i in range(4)
                for runtime in runtimes
            ),
            return_exceptions=True,
        )
        assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
        assert all(isinstance(o, ConflictError) for o in outcomes if isinstance(o, BaseException))
    finally:
        for runtime in runtimes:
            await runtime.stop()


async def test_without_redis_a_reply_is_refused_clearly_and_nothing_is_stored(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer, principal: Principal
) -> None:
    async with make_runtime(shared(redis_server)) as runtime:
        conversation = await runtime.conversations.create(principal)
        redis_server.kill()
        with pytest.raises(ComponentError, match=r"^the Redis cache at .* failed to add"):
            await runtime.conversations.post_message(principal, conversation.id, "hello")
        redis_server.start()  # back (empty): replies work again
        _, reply = await runtime.conversations.post_message(
            principal, conversation.id, "again", wait=True
        )
        stored = await runtime.conversations.messages(principal, conversation.id)
    assert reply is not None
    assert [m.content for m in stored.items] == ["again", "[offline echo] You said: again"]


async def test_a_reply_ends_normally_when_redis_goes_away_under_it(
    make_runtime: Callable[..., Runtime],
    redis_server: RedisServer,
    principal: Principal,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with make_runtime(shared(redis_server)) as runtime:
        conversation = await runtime.conversations.create(principal)
        done = runtime.events.subscribe(
            lambda e: isinstance(e, MessageCompleted) and e.message.role == "assistant"
        )
        await runtime.conversations.post_message(principal, conversation.id, "a few words here")
        redis_server.kill()  # the lease cannot be released: it will expire
        completed = await asyncio.wait_for(done.get(), 30)
        assert isinstance(completed, MessageCompleted)
        assert completed.message.interrupted is None
    assert "could not release the reply lease" in caplog.text
