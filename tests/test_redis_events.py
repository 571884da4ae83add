"""The Redis event log against a real ``redis-server``: two buses stand for two processes.

Each "process" is an :class:`EventBus` with its own :class:`RedisEventLog` and its own Redis
client, as two server processes would have; they share nothing but the Redis server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio
from redis_support import RedisServer

from hubbub.events import Event, EventBus, MessageDelta, SessionRevoked, Status, parse_id
from hubbub.runtime import Runtime
from hubbub.services import Tasks
from hubbub_plugins.redis_events import RedisEventLog


@asynccontextmanager
async def process(
    url: str, name: str, **options: Any
) -> AsyncIterator[tuple[EventBus, RedisEventLog]]:
    """One process's bus over the Redis log at ``url``."""
    client = redis.asyncio.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    tasks = Tasks(name)
    bus = EventBus()

    async def connect() -> Any:
        await client.ping()
        return client

    options.setdefault("block_seconds", 0.2)
    log = RedisEventLog(connect, tasks, origin=bus.origin, **options)
    bus.use(log)
    await log.start()
    try:
        yield bus, log
    finally:
        await tasks.aclose()
        await log.aclose()
        await client.aclose()


async def take(subscription: Any, count: int, within: float = 10.0) -> list[Event]:
    """The next ``count`` events of ``subscription`` (failing after ``within`` seconds)."""
    got: list[Event] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            event = await subscription.get()
            assert event is not None
            got.append(event)
    return got


async def eventually(check: Callable[[], Any], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - health is polled, as a probe would
            await asyncio.sleep(0.05)


def delta(n: int, owner: str = "ada", conversation: str = "c1") -> MessageDelta:
    return MessageDelta(message_id="m", delta=f"{n} ", owner=owner, conversation_id=conversation)


async def test_an_event_published_on_one_process_reaches_both_in_one_order(
    redis_server: RedisServer,
) -> None:
    async with (
        process(redis_server.url, "a") as (a, _),
        process(redis_server.url, "b") as (b, _),
    ):
        on_a = a.subscribe(owner="ada")
        on_b = b.subscribe(owner="ada", conversation_id="c1")
        for n in range(10):  # interleaved: each process publishes half
            (a if n % 2 else b).publish(delta(n))
        seen_a, seen_b = await take(on_a, 10), await take(on_b, 10)
        # Both processes see the same events with the same Redis ids, in the same order.
        assert [e.id for e in seen_a] == [e.id for e in seen_b]
        pairs = [parse_id(e.id) for e in seen_a]
        assert pairs == sorted(pairs)  # type: ignore[type-var]
        assert {e.origin for e in seen_a} == {a.origin, b.origin}
        assert sorted(e.delta for e in seen_a) == sorted(f"{n} " for n in range(10))  # type: ignore[attr-defined]
        assert a.last_id == b.last_id == seen_a[-1].id


async def test_a_client_resumes_on_the_other_process_without_loss_or_repeat(
    redis_server: RedisServer,
) -> None:
    async with (
        process(redis_server.url, "a") as (a, _),
        process(redis_server.url, "b") as (b, _),
    ):
        on_a = a.subscribe(owner="ada")
        for n in range(5):
            b.publish(delta(n))
        first = await take(on_a, 5)
        b.publish(delta(99, owner="bo"))  # someone else's: never replayed to ada
        for n in range(5, 12):
            b.publish(delta(n))
        everything = await take(on_a, 7)
        # The client saw the first three on A, then reconnects to B with Last-Event-ID.
        missed = await b.read_after(first[2].id, owner="ada", conversation_id="c1")
        assert missed is not None
        assert [e.id for e in missed] == [e.id for e in first[3:] + everything]
        assert all(e.owner == "ada" for e in missed)
        # Only the conversation asked for, plus the owner's events outside any conversation.
        b.publish(delta(20, conversation="c2"))
        b.publish(SessionRevoked(session_id="key_1", principal_id="ada", owner="ada"))
        last = await take(on_a, 2)
        tail = await b.read_after(everything[-1].id, owner="ada", conversation_id="c1")
        assert [e.id for e in tail or []] == [last[1].id]


async def test_an_id_older_than_the_retention_or_foreign_cannot_resume(
    redis_server: RedisServer,
) -> None:
    async with process(redis_server.url, "a", retention_events=100) as (a, log):
        on_a = a.subscribe(owner="ada")
        a.publish(delta(0))
        (oldest,) = await take(on_a, 1)
        for chunk in range(8):  # in bursts the reader keeps up with
            for n in range(50):
                a.publish(delta(chunk * 50 + n))
            newest = (await take(on_a, 50))[-1]
        client = log.client
        assert client is not None
        assert await client.xlen(log.stream) < 400  # trimmed (approximately) to the retention
        assert await a.read_after(oldest.id) is None  # what followed it is gone: reset
        assert await a.read_after(newest.id) == []
        assert await a.read_after("99999999999999-0") is None  # never given by this stream
        assert await a.read_after("garbage") is None


async def test_redis_going_away_keeps_local_streams_and_catches_up_when_back(
    redis_server: RedisServer,
) -> None:
    async with (
        process(redis_server.url, "a") as (a, log_a),
        process(redis_server.url, "b") as (b, log_b),
    ):
        on_a, on_b = a.subscribe(owner="ada"), b.subscribe(owner="ada")
        a.publish(delta(0))
        await take(on_a, 1)
        await take(on_b, 1)
        redis_server.kill()
        a.publish(Status(state="thinking", owner="ada"))
        a.publish(delta(1))
        # Local streams keep working while Redis is away...
        local = await take(on_a, 2, within=15)
        assert [e.type for e in local] == ["status", "message.delta"]
        assert parse_id(local[0].id) < parse_id(local[1].id)  # type: ignore[operator]

        async def degraded() -> bool:
            return (await log_a.health()).status == "degraded"

        await eventually(degraded)
        health = await log_a.health()
        assert "Redis unreachable" in health.detail
        redis_server.start()  # the same port, empty
        # ...and the other process gets them once Redis is back, without A seeing them twice.
        caught_up = await take(on_b, 2, within=20)
        assert [e.type for e in caught_up] == ["status", "message.delta"]

        async def healthy() -> bool:
            return (await log_a.health()).status == "ok" and (await log_b.health()).status == "ok"

        await eventually(healthy, within=20)
        b.publish(delta(2))
        after = await take(on_a, 1)
        assert after[0].delta == "2 "  # type: ignore[attr-defined]
        assert on_a.pending == 0  # no duplicate of what A delivered itself
        assert log_a.lost == 0


async def test_a_full_buffer_while_redis_is_away_counts_the_loss(
    redis_server: RedisServer,
) -> None:
    async with process(redis_server.url, "a", buffer_size=100) as (a, log):
        on_a = a.subscribe(owner="ada", maxsize=1000)
        redis_server.kill()
        for n in range(150):
            a.publish(delta(n))
        got = await take(on_a, 150, within=20)  # every event still reaches local streams
        assert len({e.id for e in got}) == 150
        assert log.lost == 50
        assert "50 lost" in (await log.health()).detail


async def test_the_redis_backend_needs_a_url(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime('[events]\nbackend = "redis"\n')
    with pytest.raises(Exception, match=r"redis\.url: events\.backend uses Redis") as caught:
        await runtime.start()
    assert "[redis] url is not set" in str(caught.value)
    assert runtime.state != "running"


async def test_a_runtime_on_the_redis_log_reports_it_in_health(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer
) -> None:
    runtime = make_runtime(f'[redis]\nurl = "{redis_server.url}"\n[events]\nbackend = "redis"\n')
    async with runtime:
        health = await runtime.health()
        assert health.components["event_log"].status == "ok"
        assert health.components["event_log"].backend == "redis"
        with runtime.events.subscribe(owner="ada") as mine:
            runtime.events.publish(Status(state="idle"), owner="ada")
            (event,) = await take(mine, 1)
        assert parse_id(event.id) is not None
        assert event.id == runtime.events.last_id
        redis_server.kill()

        async def degraded() -> bool:
            return (await runtime.health()).components["event_log"].status == "degraded"

        await eventually(degraded, within=15)
        assert (await runtime.health()).status == "degraded"


async def test_an_event_that_cannot_be_encoded_never_blocks_the_ones_after_it(
    redis_server: RedisServer,
) -> None:
    # A lone surrogate (half an emoji from a provider's JSON escape) cannot be UTF-8 encoded: the
    # writer must skip that one event, not retry it forever ahead of every later event.
    async with process(redis_server.url, "a") as (a, log):
        on_a = a.subscribe(owner="ada")
        a.publish(MessageDelta(message_id="m", delta="\ud83d", owner="ada", conversation_id="c1"))
        a.publish(delta(1))
        (after,) = await take(on_a, 1)
        assert after.delta == "1 "  # type: ignore[attr-defined]
        assert log.unwritable == 1
        assert "1 not encodable" in (await log.health()).detail


async def test_a_resume_trimmed_while_read_is_a_reset_not_a_silent_gap(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with process(redis_server.url, "a") as (a, log):
        on_a = a.subscribe(owner="ada")
        for n in range(5):
            a.publish(delta(n))
        seen = await take(on_a, 5)
        read = log._range_after

        async def trimmed_meanwhile(*args: Any) -> list[Event]:
            # Retention trims the stream between the check and the read (another process's
            # XADD ... MAXLEN, or this one's periodic XTRIM).
            assert log.client is not None
            await log.client.xtrim(log.stream, maxlen=1, approximate=False)
            return await read(*args)

        monkeypatch.setattr(log, "_range_after", trimmed_meanwhile)
        assert await a.read_after(seen[1].id) is None


async def test_events_older_than_the_retention_are_trimmed_by_redis_clock(
    redis_server: RedisServer,
) -> None:
    async with process(redis_server.url, "a", retention_seconds=1.0) as (a, log):
        on_a = a.subscribe(owner="ada", maxsize=1000)
        for n in range(300):
            a.publish(delta(n))
        (first, *_) = await take(on_a, 300)
        await asyncio.sleep(1.5)
        a.publish(delta(300))
        await take(on_a, 1)
        await log._trim()  # what the writer does every few seconds
        assert log.client is not None
        assert await log.client.xlen(log.stream) < 301  # (approximately: whole nodes go)
        assert await a.read_after(first.id) is None  # gone: a reset, never a silent gap


async def test_a_hung_redis_holds_local_streams_up_for_the_write_timeout_only(
    redis_server: RedisServer,
) -> None:
    import os
    import signal
    import time

    async with (
        process(redis_server.url, "a", write_timeout=0.3) as (a, log_a),
        process(redis_server.url, "b", write_timeout=0.3) as (b, _),
    ):
        on_a, on_b = a.subscribe(owner="ada"), b.subscribe(owner="ada")
        a.publish(delta(0))
        await take(on_a, 1)
        await take(on_b, 1)
        assert redis_server.process is not None
        os.kill(redis_server.process.pid, signal.SIGSTOP)  # hung, not dead
        try:
            began = time.monotonic()
            a.publish(delta(1))
            (local,) = await take(on_a, 1, within=10)
            waited = time.monotonic() - began
            a.publish(delta(2))  # while the writer knows Redis hangs: at once
            await take(on_a, 1, within=10)
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        assert local.delta == "1 "  # type: ignore[attr-defined]
        assert waited < 1.5  # the write timeout (0.3 s), not the client's 2 s socket timeout
        # Once Redis answers again, the other process gets each event once, and the
        # publishing process none of them a second time (written twice or not).
        got = await take(on_b, 2, within=20)
        assert [e.delta for e in got] == ["1 ", "2 "]  # type: ignore[attr-defined]
        b.publish(delta(3))
        assert [e.delta for e in await take(on_a, 1, within=20)] == ["3 "]  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)
        assert on_a.pending == 0
        assert on_b.pending == 1  # its own 3, nothing twice
        missed = await b.read_after(got[0].id)
        assert [e.delta for e in missed or []].count("2 ") == 1  # type: ignore[attr-defined]
        assert log_a.lost == 0


async def test_events_and_the_cache_work_on_a_redis_cluster(
    make_runtime: Callable[..., Runtime], tmp_path: Any
) -> None:
    from redis_support import RedisCluster

    cluster = RedisCluster(tmp_path / "cluster").start()
    try:
        text = (
            f'[redis]\nurl = "{cluster.url}"\ncluster = true\n'
            '[events]\nbackend = "redis"\n[cache]\nbackend = "redis"\n'
        )
        async with make_runtime(text) as a, make_runtime(text) as b:
            health = await a.health()
            assert health.components["event_log"].status == "ok"
            assert health.components["cache"].status == "ok"
            with a.events.subscribe(owner="ada") as on_a:
                b.events.publish(Status(state="thinking"), owner="ada")
                (event,) = await take(on_a, 1)
            assert event.origin == b.events.origin
            assert await b.events.read_after(event.id) == []
            assert await a.cache.add("k", b"a") is True
            assert await b.cache.add("k", b"b") is False  # one shared cache across the nodes
            assert await b.cache.compare_and_set("k", b"a", b"c") is True
            assert await a.cache.get("k") == b"c"
    finally:
        cluster.stop()
