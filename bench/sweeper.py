"""Issue 17's sweeper benchmark: a store holding 1,000,000 conversations of which 1% have
expired, swept by :class:`hubbub.memory.Sweeper` while a ticker measures how late the event loop
runs it (target: never more than 10 ms late).

For each store (SQLite, and PostgreSQL on a throwaway server from ``tests/postgres_support.py``)
the script builds the store through a real runtime, fills it in bulk with SQL (the store's own
schema, 1,000 owners; its usage counts rebuilt to match), then:

* **baseline**: the ticker alone for ``--idle`` seconds (default 2): how late the loop is when
  nothing else runs, on this machine, now;
* **sweep**: one full sweep (``purge`` batches of ``[retention] batch_size``, 500) with the same
  ticker: items deleted, seconds, the ticker's worst and p99 lateness, and the ratio of its worst
  to the baseline's.

Client and database server share this 2-core machine: compare the ratios, not the figures.

    .venv/bin/python bench/sweeper.py [--entries 1000000] [--stores sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's throwaway servers

from postgres_support import PostgresServer  # noqa: E402

from hubbub.config import load_config  # noqa: E402
from hubbub.models import Conversation  # noqa: E402
from hubbub.plugins import load_plugins  # noqa: E402
from hubbub.runtime import Runtime  # noqa: E402

SHARED = "client and database server share this 2-core machine: compare the ratios"
TICK = 0.001
OWNERS = 1000
EXPIRED_SHARE = 0.01


def _rows(entries: int, moment: float) -> list[tuple[str, str, float, float | None, int, bytes]]:
    """``entries`` conversations: (id, owner, updated_at, expires_at, bytes, data)."""
    every = int(1 / EXPIRED_SHARE)
    rows = []
    for n in range(entries):
        conversation = Conversation(
            owner=f"owner{n % OWNERS:04d}",
            id=f"conv_{n:032x}",
            title=f"conversation {n}",
            created_at=moment - 3600,
            updated_at=moment - 3600,
            expires_at=moment - 60 if n % every == 0 else None,
        )
        data = msgspec.json.encode(conversation)
        rows.append(
            (
                conversation.id,
                conversation.owner,
                conversation.updated_at,
                conversation.expires_at,
                len(data),
                data,
            )
        )
    return rows


def _fill_sqlite(path: str, rows: list[Any]) -> None:
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO conversations (id, owner, updated_at, expires_at, bytes, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )


async def _fill_postgres(url: str, rows: list[Any]) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url) as connection:
        async with connection.cursor() as cursor:
            async with cursor.copy(
                "COPY hubbub.conversations "
                "(id, owner, updated_at, expires_at, bytes, total_bytes, data) FROM STDIN"
            ) as copy:
                for id_, owner, updated, expires, size, data in rows:
                    await copy.write_row((id_, owner, updated, expires, size, size, data))
            await cursor.execute(
                "INSERT INTO hubbub.usage (owner, conversations, bytes) "
                "SELECT owner, count(*), sum(total_bytes) FROM hubbub.conversations "
                "GROUP BY owner ON CONFLICT (owner) DO UPDATE SET "
                "conversations = excluded.conversations, bytes = excluded.bytes"
            )
        await connection.commit()


async def _lateness(seconds: float | None, until: asyncio.Future[Any] | None) -> list[float]:
    """How late each tick of a ``TICK`` sleep ran, in ms, for ``seconds`` or until ``until``."""
    late = []
    loop = asyncio.get_running_loop()
    began = loop.time()
    while True:
        before = loop.time()
        await asyncio.sleep(TICK)
        late.append(max(loop.time() - before - TICK, 0.0) * 1000)
        if until is not None and until.done():
            return late
        if seconds is not None and loop.time() - began >= seconds:
            return late


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


@contextlib.asynccontextmanager
async def _runtime(home: Path, toml: str) -> AsyncIterator[Runtime]:
    config = load_config(text=f'home = "{home}"\n[auth]\nmethods = []\n{toml}', env={})
    async with Runtime.from_config(config, plugins=load_plugins()) as runtime:
        yield runtime


async def _measure(
    name: str, runtime: Runtime, fill: Callable[[], Awaitable[None]], idle: float
) -> None:
    while runtime.sweeper.last_sweep is None:  # noqa: ASYNC110 (its first sweep, of nothing)
        await asyncio.sleep(0.01)
    began = time.perf_counter()
    await fill()
    filled = time.perf_counter() - began
    baseline = await _lateness(idle, None)
    began = time.perf_counter()
    sweeping = asyncio.ensure_future(runtime.sweeper.sweep())
    late = await _lateness(None, sweeping)
    deleted = sweeping.result()
    seconds = time.perf_counter() - began
    worst, base_worst = max(late), max(baseline)
    print(
        f"{name:9} filled in {filled:5.1f} s; swept {deleted} expired in {seconds:5.2f} s; "
        f"loop lateness while sweeping: worst {worst:5.2f} ms, p99 {_p99(late):5.2f} ms "
        f"(idle baseline: worst {base_worst:5.2f} ms, p99 {_p99(baseline):5.2f} ms; "
        f"worst x{worst / max(base_worst, 0.01):.1f}); target worst <= 10 ms: "
        f"{'met' if worst <= 10 else 'MISSED'}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--idle", type=float, default=2.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    stores = args.stores.split(",")
    print(
        f"sweeper: {args.entries:,} conversations, {EXPIRED_SHARE:.0%} expired, "
        f"batches of 500 ({SHARED})"
    )
    rows = _rows(args.entries, time.time())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "sqlite" in stores:
            path = root / "sweep.sqlite3"
            toml = f'[plugins.sqlite_store]\npath = "{path}"\n[retention]\nsweep_interval = 86400\n'
            async with _runtime(root / "sqlite", toml) as runtime:

                async def fill_sqlite() -> None:
                    await asyncio.to_thread(_fill_sqlite, str(path), rows)

                await _measure("sqlite", runtime, fill_sqlite, args.idle)
        if "postgres" in stores:
            server = PostgresServer().start()
            try:
                url = server.create_database()
                toml = (
                    f'[memory]\nbackend = "postgres"\n[plugins.postgres_store]\nurl = "{url}"\n'
                    "[retention]\nsweep_interval = 86400\n"
                )
                async with _runtime(root / "postgres", toml) as runtime:

                    async def fill_postgres() -> None:
                        await _fill_postgres(url, rows)

                    await _measure("postgres", runtime, fill_postgres, args.idle)
            finally:
                server.close()


if __name__ == "__main__":
    asyncio.run(main())
