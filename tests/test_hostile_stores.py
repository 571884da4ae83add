"""Hostile operators and owners of ``hubbub store copy`` and the stores under it: a target
PostgreSQL that dies in the middle of a copy (a rerun must finish it, with nothing lost or
counted twice), one database named by two different URLs, and an owner whose id looks like the
probe the copy writes to tell two stores apart; and the creation rate quota read across a
minute's boundary."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hubbub.config import QuotasConfig
from hubbub.contracts import MemoryStore
from hubbub.errors import QuotaExceededError
from hubbub.memory import Quotas
from hubbub.models import Conversation, MemoryItem, Message, Summary, now
from hubbub.store_copy import PROBE_PREFIX, copy_store
from hubbub_plugins.memory_cache import MemoryCache, MemoryCacheSettings
from hubbub_plugins.postgres_store import PostgresStore
from hubbub_plugins.sqlite_store import SQLiteStore

HUBBUB = str(Path(sys.executable).parent / "hubbub")
OWNERS = 4
CONVERSATIONS = 10
MESSAGES = 60


def config_file(root: Path, name: str, extra: str = "") -> Path:
    path = root / f"{name}.toml"
    path.write_text(f'home = "{root / name}"\n\n[auth]\nmethods = []\n{extra}')
    return path


def postgres_toml(root: Path, name: str, url: str) -> Path:
    return config_file(
        root, name, f'[memory]\nbackend = "postgres"\n[plugins.postgres_store]\nurl = "{url}"\n'
    )


def copy_command(source: Path, target: Path, *extra: str) -> list[str]:
    return [HUBBUB, "store", "copy", "--from", str(source), "--to", str(target), *extra]


def environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBBUB_")}
    env.pop("PYTHONPATH", None)
    env["HUBBUB_HOME"] = str(root / "home")
    return env


async def sqlite_at(path: Path) -> SQLiteStore:
    path.parent.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(str(path))
    await store.start()
    return store


async def fill(store: MemoryStore, owners: list[str]) -> None:
    """Conversations of many messages (a summary on some) and memories, for each owner."""
    t = now()
    for owner in owners:
        for n in range(CONVERSATIONS):
            conversation = Conversation(
                owner=owner, title=f"{owner} {n}", created_at=t - 1000 + n, updated_at=t - 1000 + n
            )
            messages = [
                Message(
                    role="user" if m % 2 == 0 else "assistant",
                    content=f"{owner} {n}/{m} " + "x" * 100,
                    conversation_id=conversation.id,
                )
                for m in range(MESSAGES)
            ]
            await store.import_conversation(conversation, messages)
            if n % 3 == 0:
                await store.save_summary(
                    Summary(
                        conversation_id=conversation.id,
                        content=f"summary of {owner} {n}",
                        through_message_id=messages[9].id,
                        covered=10,
                    )
                )
        for k in range(12):
            await store.add_memory(
                MemoryItem(owner=owner, content=f"{owner} fact {k}", created_at=t - 100 + k)
            )


async def everything(
    store: MemoryStore, owners: list[str], *, usage: bool = True
) -> dict[str, Any]:
    """What ``store`` holds for ``owners``, through the contract (with their usage: a store
    filled by appending counts each conversation as first written, a copy as last updated, a
    few bytes apart; compare usage only between stores filled alike)."""
    seen: dict[str, Any] = {}
    for owner in owners:
        conversations = (await store.list_conversations(owner, limit=1000)).items
        seen[owner] = {
            "conversations": conversations,
            "messages": {
                c.id: (await store.list_messages(c.id, limit=1000)).items for c in conversations
            },
            "summaries": {c.id: await store.get_summary(c.id) for c in conversations},
            "memories": (await store.list_memories(owner, limit=1000)).items,
        }
        if usage:
            seen[owner]["usage"] = await store.usage(owner)
    return seen


def target_messages(url: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=2) as connection:
            row = connection.execute("SELECT count(*) FROM hubbub.messages").fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


async def _filled(path: Path, owners: list[str]) -> dict[str, Any]:
    store = await sqlite_at(path)
    try:
        await fill(store, owners)
        return await everything(store, owners)
    finally:
        await store.aclose()


async def _in_postgres(url: str, owners: list[str]) -> tuple[dict[str, Any], list[str]]:
    """What the PostgreSQL store at ``url`` holds for ``owners``, and every owner it lists."""
    store = PostgresStore(url)
    await store.start()
    try:
        return await everything(store, owners), (await store.list_owners(limit=100)).items
    finally:
        await store.aclose()


def test_a_copy_cut_short_by_the_target_dying_is_finished_by_a_rerun(
    tmp_path: Path, postgres_server: Any
) -> None:
    """PostgreSQL is killed while ``hubbub store copy`` writes into it (the copy paused
    half-way, so the kill lands mid-copy): the command fails with a clear error, and once the
    server is back a rerun copies the rest: the target then reads back as the source, and each
    owner's usage counts everything once."""
    owners = [f"owner{i}" for i in range(OWNERS)]
    expected = asyncio.run(_filled(tmp_path / "a" / "hubbub.sqlite3", owners))
    url = postgres_server.create_database()
    source_toml = config_file(tmp_path, "a")
    target_toml = postgres_toml(tmp_path, "b", url)
    command = copy_command(source_toml, target_toml, "--batch-size", "5")
    total = OWNERS * CONVERSATIONS * MESSAGES

    copying = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while target_messages(url) < total // 4 and time.monotonic() < deadline:
            assert copying.poll() is None, copying.communicate()
            time.sleep(0.01)
        copying.send_signal(signal.SIGSTOP)
        landed = target_messages(url)
        assert 0 < landed < total, landed
        postgres_server.kill()
        copying.send_signal(signal.SIGCONT)
        out, err = copying.communicate(timeout=60)
    finally:
        if copying.poll() is None:
            copying.kill()
            copying.wait()
    assert copying.returncode == 1, (out, err)
    assert "PostgreSQL" in err
    assert "Traceback" not in err

    postgres_server.start()
    rerun = subprocess.run(
        command,
        cwd=tmp_path,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert asyncio.run(_in_postgres(url, owners)) == (expected, owners)


async def _filled_postgres(url: str, owners: list[str]) -> dict[str, Any]:
    store = PostgresStore(url)
    await store.start()
    try:
        await fill(store, owners)
        return await everything(store, owners)
    finally:
        await store.aclose()


def test_one_database_named_by_two_urls_is_not_copied_onto_itself(
    tmp_path: Path, postgres_session: Any
) -> None:
    """The same PostgreSQL database as a URL and as a libpq key=value string (localhost for
    127.0.0.1): the copy is refused (exit code 2) and the database keeps exactly what it had."""
    url = postgres_session.create_database()
    database = url.rsplit("/", 1)[1]
    before = asyncio.run(_filled_postgres(url, ["ada"]))
    other = f"host=localhost port={postgres_session.port} dbname={database} user=postgres"
    done = subprocess.run(
        copy_command(postgres_toml(tmp_path, "a", url), postgres_toml(tmp_path, "b", other)),
        cwd=tmp_path,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "same store" in done.stderr
    assert asyncio.run(_in_postgres(url, ["ada"])) == (before, ["ada"])  # the probe is gone


async def test_an_owner_whose_id_starts_like_the_probe_is_copied(tmp_path: Path) -> None:
    """The copy leaves out the probe memories it writes itself, and nothing else: a real owner
    whose id happens to start like one keeps their conversations and memories."""
    lookalike = f"{PROBE_PREFIX}alice"
    source = await sqlite_at(tmp_path / "a.sqlite3")
    target = await sqlite_at(tmp_path / "b.sqlite3")
    try:
        conversation = await source.create_conversation(Conversation(owner=lookalike))
        await source.append_message(
            Message(role="user", content="keep me", conversation_id=conversation.id)
        )
        await source.add_memory(MemoryItem(owner=lookalike, content="a fact worth keeping"))
        report = await copy_store(source, target)
        assert report.owners == 1
        copied = await everything(target, [lookalike], usage=False)
        assert copied == await everything(source, [lookalike], usage=False)
        assert copied[lookalike]["memories"]
    finally:
        await source.aclose()
        await target.aclose()


async def test_a_probe_left_behind_by_a_dead_copy_is_not_copied(tmp_path: Path) -> None:
    """A probe memory that a copy killed mid-probe left in a store is not carried along by
    the next copy from it (it expires there on its own)."""
    source = await sqlite_at(tmp_path / "a.sqlite3")
    target = await sqlite_at(tmp_path / "b.sqlite3")
    try:
        left = MemoryItem(
            owner=f"{PROBE_PREFIX}{'0' * 32}",
            content="written by hubbub store copy to tell two stores apart; safe to delete",
            expires_at=now() + 600,
        )
        await source.add_memory(left)
        await source.add_memory(MemoryItem(owner="ada", content="real"))
        report = await copy_store(source, target)
        assert report.owners == 1
        assert (await target.list_owners()).items == ["ada"]
    finally:
        await source.aclose()
        await target.aclose()


async def test_the_creation_rate_holds_across_a_minute_boundary(tmp_path: Path) -> None:
    """Six creations a minute: six at 59.5 s past a minute, then more at 0.5 s past the next
    one (one second later) are refused."""
    moment = [1_800_000_000.0 + 59.5]
    store = await sqlite_at(tmp_path / "quota.sqlite3")
    cache = MemoryCache(MemoryCacheSettings())
    await cache.start()
    quotas = Quotas(
        store,
        cache,
        QuotasConfig(conversations_per_minute=6, max_conversations=0, max_stored_bytes=0),
        clock=lambda: moment[0],
    )
    try:
        for _ in range(6):
            await quotas.check_conversation("ada")
        moment[0] += 1.0
        refused = 0
        for _ in range(6):
            try:
                await quotas.check_conversation("ada")
            except QuotaExceededError:
                refused += 1
        assert refused == 6  # the six of a second ago still count
        moment[0] += 61.0  # a minute later, the slide has let them go
        for _ in range(6):
            await quotas.check_conversation("ada")
        with pytest.raises(QuotaExceededError) as caught:
            await quotas.check_conversation("ada")
        assert caught.value.retry_after is not None
        assert 1 <= caught.value.retry_after <= 60
    finally:
        await cache.aclose()
        await store.aclose()
