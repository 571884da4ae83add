"""Issue 17's store benchmark: message appends and page reads per second, SQLite vs PostgreSQL
(and Redis), the same workload at the same concurrency in one run.

Each store is built and started by a real :class:`hubbub.runtime.Runtime` from ``[memory]
backend = ...``, exactly as the server builds it, on a throwaway server this script starts
(``tests/postgres_support.py``, ``tests/redis_support.py``): PostgreSQL without fsync, SQLite
in WAL mode with ``synchronous = NORMAL``, Redis without persistence, so none of the three waits
for a disk flush at commit and the figures compare the stores, not the disk. Then, for each:

* **append**: ``--concurrency`` tasks (default 8) each append messages of ``--size`` characters
  (default 200) to a conversation of its own for ``--seconds`` (default 3): appends per second,
  p50 and p99 of one call;
* **page read**: the same tasks read pages of 100 messages (``list_messages(limit=100)`` with
  cursors, walking a conversation of at least 1,000 messages from the start again and again)
  for ``--seconds``: pages per second, p50 and p99.

Ratios are against SQLite. Client and servers share this 2-core machine (with whatever else
runs on it): compare the ratios, not the absolute figures.

    .venv/bin/python bench/stores.py [--stores sqlite,postgres,redis] [--concurrency 8]
        [--seconds 3] [--size 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's throwaway servers

from postgres_support import PostgresServer  # noqa: E402
from redis_support import RedisServer  # noqa: E402

from hubbub.config import load_config  # noqa: E402
from hubbub.contracts import MemoryStore  # noqa: E402
from hubbub.models import Conversation, Message  # noqa: E402
from hubbub.plugins import load_plugins  # noqa: E402
from hubbub.runtime import Runtime  # noqa: E402

SHARED = "client and servers share this 2-core machine: compare the ratios, not the figures"
PAGE = 100
READ_MESSAGES = 1_000


@dataclass
class Figure:
    """What one phase measured for one store."""

    operations: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.operations / self.seconds

    def percentile(self, share: float) -> float:
        """The latency (ms) under which ``share`` of the calls finished."""
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


def redis_store_exists() -> bool:
    """Whether the ``redis`` store is written yet (not the placeholder module)."""
    try:
        import hubbub_plugins.redis_store as module
    except ImportError:
        return False
    return hasattr(module, "register_memory_stores")


@contextlib.contextmanager
def servers(names: list[str], home: Path) -> Iterator[dict[str, str]]:
    """Start the servers the stores need; yield the TOML of each store's configuration."""
    tomls: dict[str, str] = {}
    started: list[Any] = []
    try:
        for name in names:
            if name == "sqlite":
                path = home / "bench.sqlite3"
                tomls[name] = (
                    f'[memory]\nbackend = "sqlite"\n[plugins.sqlite_store]\npath = "{path}"\n'
                )
            elif name == "postgres":
                postgres = PostgresServer().start()
                started.append(postgres)
                url = postgres.create_database("bench")
                tomls[name] = (
                    '[memory]\nbackend = "postgres"\n'
                    f'[plugins.postgres_store]\nurl = "{url}"\nmax_size = 10\n'
                )
            elif name == "redis":
                redis = RedisServer(home / "redis").start()
                started.append(redis)
                tomls[name] = f'[memory]\nbackend = "redis"\n[redis]\nurl = "{redis.url}"\n'
            else:
                raise SystemExit(f"unknown store {name!r}: sqlite, postgres or redis")
        yield tomls
    finally:
        for server in started:
            with contextlib.suppress(Exception):
                server.close() if isinstance(server, PostgresServer) else server.stop()


@contextlib.asynccontextmanager
async def store_of(toml: str, home: Path) -> AsyncIterator[MemoryStore]:
    """The store of ``toml``, built and started by a runtime as the server does."""
    config = load_config(text="[auth]\nmethods = []\n" + toml, env={"HUBBUB_HOME": str(home)})
    plugins = load_plugins(disabled=config.plugins.disabled, env={})
    async with Runtime.from_config(config, plugins=plugins) as runtime:
        yield runtime.memory


async def timed(tasks: int, seconds: float, step: Any) -> Figure:
    """Run ``step(task_number)`` in a loop on ``tasks`` tasks for ``seconds``."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def loop(n: int) -> None:
        while (began := time.perf_counter()) < stop:
            await step(n)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(loop(n) for n in range(tasks)))
    return Figure(len(latencies), time.perf_counter() - began, latencies)


async def measure(store: MemoryStore, tasks: int, seconds: float, size: int) -> dict[str, Figure]:
    """The append and page-read figures of one started store."""
    owner = f"bench-{time.time_ns()}"
    mine = [await store.create_conversation(Conversation(owner=owner)) for _ in range(tasks)]
    text = "x" * size
    counts = [0] * tasks

    async def append(n: int) -> None:
        counts[n] += 1
        await store.append_message(
            Message(role="user", content=f"{counts[n]} {text}", conversation_id=mine[n].id)
        )

    await timed(tasks, 0.3, append)  # warm up: connections, prepared statements, caches
    appended = await timed(tasks, seconds, append)

    reading = await store.create_conversation(Conversation(owner=owner))
    for i in range(READ_MESSAGES):
        await store.append_message(
            Message(role="user", content=f"{i} {text}", conversation_id=reading.id)
        )
    cursors: list[str | None] = [None] * tasks

    async def read(n: int) -> None:
        page = await store.list_messages(reading.id, limit=PAGE, cursor=cursors[n])
        assert len(page.items) == PAGE or page.next_cursor is None
        cursors[n] = page.next_cursor

    await timed(tasks, 0.3, read)
    pages = await timed(tasks, seconds, read)
    return {"append": appended, "page read": pages}


def report(results: dict[str, dict[str, Figure]], tasks: int) -> None:
    base = results.get("sqlite")
    for phase, unit in (("append", "appends/s"), ("page read", "pages/s")):
        print(f"{phase} ({tasks} tasks{f', pages of {PAGE}' if phase == 'page read' else ''}):")
        for name, figures in results.items():
            figure = figures[phase]
            ratio = f"  x{figure.rate / base[phase].rate:.2f} vs sqlite" if base else ""
            print(
                f"  {name:<9} {figure.rate:9,.0f} {unit:<10} p50 {figure.percentile(0.5):6.2f} ms"
                f"  p99 {figure.percentile(0.99):6.2f} ms{ratio}"
            )
    print(f"[{SHARED}]")


async def run(args: argparse.Namespace) -> None:
    names = [name.strip() for name in args.stores.split(",") if name.strip()]
    if "redis" in names and not redis_store_exists():
        print("redis store not written yet: skipped")
        names.remove("redis")
    with tempfile.TemporaryDirectory(prefix="hubbub-bench-stores-") as tmp:
        home = Path(tmp)
        with servers(names, home) as tomls:
            results: dict[str, dict[str, Figure]] = {}
            for name in names:
                async with store_of(tomls[name], home / name) as store:
                    results[name] = await measure(store, args.concurrency, args.seconds, args.size)
    report(results, args.concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,postgres,redis")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run(args))


if __name__ == "__main__":
    main()
