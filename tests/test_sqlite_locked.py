"""The SQLite store while another process holds the file's write lock: a real second process
(python with sqlite3: ``BEGIN IMMEDIATE``, then sleep, then ``COMMIT``) holds it. A lock shorter
than ``busy_timeout`` is waited out (writes retried with back-off, reads served meanwhile, the
event loop free); a longer one fails the write cleanly (503 ``database_locked`` over HTTP), loses
nothing that was acknowledged, and a retry afterwards succeeds."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from server.live_support import assert_problem, running

from hubbub.models import Conversation, Message
from hubbub.sqlite import DatabaseLockedError
from hubbub_plugins.sqlite_store import SQLiteStore

HOLDER = """
import select, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT OR REPLACE INTO hubbub_health (id, checked_at) VALUES (1, 0)")
print("locked", flush=True)
select.select([sys.stdin], [], [], float(sys.argv[2]))  # sleep, or until told to let go
db.execute("COMMIT")
print("committed", time.time(), flush=True)
"""
"""Another writer: takes the write lock, holds it for ``argv[2]`` seconds (or until a line
arrives on its input), commits, and prints when it committed."""


class Holder:
    """The process holding the lock."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def lock(cls, path: Path, hold: float) -> Holder:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HOLDER,
            str(path),
            str(hold),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        holder = cls(process)
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"locked\n"
        return holder

    @property
    def holding(self) -> bool:
        return self.process.returncode is None

    async def committed(self) -> float:
        """Wait for the commit; when it happened (``time.time()`` of the holder)."""
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        assert line.startswith(b"committed "), line
        await self.process.wait()
        return float(line.split()[1])

    async def release(self) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write(b"go\n")
        await self.process.stdin.drain()
        return await self.committed()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


class Ticker:
    """Counts how often a task that sleeps 10 ms gets the event loop."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.ticks += 1

    async def stop(self) -> int:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.ticks


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "locked.sqlite3"


async def open_store(path: Path, busy_timeout: float) -> SQLiteStore:
    store = SQLiteStore(str(path), busy_timeout=busy_timeout)
    await store.start()
    return store


@pytest.fixture
async def patient(db_path: Path) -> AsyncIterator[SQLiteStore]:
    """A store that waits up to 30 s for a lock."""
    store = await open_store(db_path, busy_timeout=30.0)
    yield store
    await store.aclose()


async def test_a_lock_shorter_than_the_bound_is_waited_out(
    patient: SQLiteStore, db_path: Path
) -> None:
    conversation = await patient.create_conversation(Conversation(owner="ada"))
    holder = await Holder.lock(db_path, hold=3.0)
    try:
        ticker = Ticker()
        sent = [
            Message(role="user", content=str(n), conversation_id=conversation.id) for n in range(10)
        ]
        appends = [asyncio.ensure_future(patient.append_message(m)) for m in sent]
        await asyncio.sleep(0.2)  # the appends have met the lock and wait for it
        assert not any(append.done() for append in appends)
        # reads go on meanwhile: the database's thread is not parked on the lock
        read = await patient.get_conversation(conversation.id)
        read_at = time.time()
        assert read == conversation
        stored = await asyncio.gather(*appends)
        appended_at = time.time()
        ticks = await ticker.stop()
        committed_at = await holder.committed()
    finally:
        holder.kill()
    assert read_at < committed_at <= appended_at
    assert stored == sent
    assert (await patient.list_messages(conversation.id)).items == sent  # in the order made
    assert ticks >= 5  # the event loop kept turning while the writes waited


async def test_a_lock_longer_than_the_bound_fails_cleanly_and_a_retry_succeeds(
    db_path: Path,
) -> None:
    store = await open_store(db_path, busy_timeout=1.0)
    holder: Holder | None = None
    try:
        conversation = await store.create_conversation(Conversation(owner="ada"))
        kept = await store.append_message(
            Message(role="user", content="acknowledged", conversation_id=conversation.id)
        )
        holder = await Holder.lock(db_path, hold=60.0)
        ticker = Ticker()
        late = Message(role="user", content="late", conversation_id=conversation.id)
        with pytest.raises(DatabaseLockedError) as caught:
            await store.append_message(late)
        ticks = await ticker.stop()
        assert holder.holding  # it gave up while the lock was still held: the bound held
        error = caught.value
        assert (error.status, error.code) == (503, "database_locked")
        assert str(db_path) in str(error)
        assert "locked by another writer" in str(error)
        assert "nothing of this request was written" in str(error)
        assert error.tries >= 2  # tried again with back-off, not failed at once
        assert error.retry_after is not None
        assert ticks >= 5  # the event loop kept turning meanwhile
        await holder.release()
        # nothing acknowledged was lost, nothing of the failed write was kept
        assert (await store.list_messages(conversation.id)).items == [kept]
        # and once the lock is gone, the same write goes through
        assert await store.append_message(late) == late
        assert (await store.list_messages(conversation.id)).items == [kept, late]
    finally:
        if holder is not None:
            holder.kill()
        await store.aclose()


async def test_the_health_probe_says_locked_instead_of_raising(db_path: Path) -> None:
    store = await open_store(db_path, busy_timeout=0.3)
    holder = await Holder.lock(db_path, hold=60.0)
    try:
        health = await store.health()
        assert health.status == "down"
        assert "locked by another writer" in health.detail
    finally:
        await holder.release()
        await store.aclose()


async def test_the_server_answers_503_while_the_store_stays_locked(tmp_path: Path) -> None:
    toml = """
    [plugins.sqlite_store]
    busy_timeout = 0.5
    """
    with running(tmp_path / "server", toml, keys=("alice",)) as server:
        key = server.keys["alice"][1]
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            base_url=server.url, headers=headers, trust_env=False, timeout=30
        ) as client:
            created = await client.post("/api/conversations", json={"title": "before"})
            assert created.status_code == 201, created.text
            holder = await Holder.lock(server.home / "hubbub.sqlite3", hold=60.0)
            try:
                refused = await client.post("/api/conversations", json={"title": "during"})
                body = assert_problem(refused, 503)
                assert body["code"] == "database_locked"
                assert "locked by another writer" in body["detail"]
                assert refused.headers["retry-after"] == "1"
                # reads are served meanwhile (WAL): what was acknowledged is there
                listed = await client.get("/api/conversations")
                assert listed.status_code == 200
                assert [c["title"] for c in listed.json()["items"]] == ["before"]
            finally:
                await holder.release()
            again = await client.post("/api/conversations", json={"title": "during"})
            assert again.status_code == 201, again.text
            titles = [c["title"] for c in (await client.get("/api/conversations")).json()["items"]]
            assert sorted(titles) == ["before", "during"]
