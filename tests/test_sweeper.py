"""The memory store's sweeper: expired and idle items go, in batches, one process at a time."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis_support import RedisServer

from hubbub.models import Conversation, MemoryItem, Message, now
from hubbub.testing import config_for, runtime_for


async def test_the_scheduled_sweep_deletes_what_expired(tmp_path: Path) -> None:
    config = config_for(tmp_path, "[retention]\nsweep_interval = 1\nbatch_size = 3\n")
    async with runtime_for(config) as runtime:
        store = runtime.memory
        due = [
            await store.create_conversation(Conversation(owner="u", expires_at=now() + 0.5))
            for _ in range(7)
        ]
        for conversation in due:
            await store.append_message(
                Message(role="user", content="bye", conversation_id=conversation.id)
            )
        kept = await store.create_conversation(Conversation(owner="u"))
        await store.add_memory(MemoryItem(owner="u", content="gone", expires_at=now() + 0.5))
        for _ in range(300):
            if (await store.usage("u")).conversations == 1:
                break
            await asyncio.sleep(0.05)
        assert (await store.usage("u")).conversations == 1
        assert await store.get_conversation(kept.id) is not None
        assert (await store.list_memories("u")).items == []
        assert runtime.sweeper.deleted >= 8
        health = await runtime.health()
        assert health.components["sweeper"].status == "ok"


async def test_idle_conversations_go_after_the_configured_days(tmp_path: Path) -> None:
    config = config_for(tmp_path, "[retention]\nconversation_idle_days = 30\n")
    async with runtime_for(config) as runtime:
        store = runtime.memory
        idle = await store.create_conversation(
            Conversation(owner="u", updated_at=now() - 31 * 86_400)
        )
        recent = await store.create_conversation(
            Conversation(owner="u", updated_at=now() - 29 * 86_400)
        )
        assert await runtime.sweeper.sweep() == 1
        assert await store.get_conversation(idle.id) is None
        assert await store.get_conversation(recent.id) is not None


async def test_only_one_process_sweeps_at_a_time(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        toml = (
            f'[cache]\nbackend = "redis"\n[redis]\nurl = "{redis.url}"\n'
            f'[plugins.sqlite_store]\npath = "{tmp_path / "shared.sqlite3"}"\n'
            "[retention]\nsweep_interval = 60\n"
        )
        a_config = config_for(tmp_path / "a", toml)
        b_config = config_for(tmp_path / "b", toml)
        async with runtime_for(a_config) as a, runtime_for(b_config) as b:
            # both started their sweepers: exactly one of them took the lease and swept
            await asyncio.sleep(0.5)
            swept = [r.sweeper.last_sweep is not None for r in (a, b)]
            assert sorted(swept) == [False, True]
            leads = [await r.sweeper._lease() for r in (a, b)]
            assert leads == swept  # the holder renews its own lease; the other waits
    finally:
        redis.stop()
