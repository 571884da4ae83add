"""Issue 17's cache benchmarks: get/set throughput and p99 latency per layer, and the fallback's
switch-over when Redis is killed under load.

Figures (each against a baseline measured in the same run):

* (a) get and set operations per second and p99 latency, at the same concurrency (``--workers``
  tasks on one uvloop event loop), key space (``--keys``) and value size (``--value-bytes``)
  for, in memory: raw aiocache ``SimpleMemoryCache`` (its defaults, as a user would create it:
  the baseline), the ``memory`` backend, and the typed facade (:class:`hubbub.cache.Cache`)
  over it; in Redis (a real ``redis-server`` on a free loopback port): raw redis-py (the
  baseline; the runtime's client options), the ``redis`` backend, the facade over it, and the
  facade over ``redis`` with ``fallback = "memory"`` (:class:`hubbub.cache.FallbackCache`, what
  a deployment with a fallback runs). Rounds alternate the subjects; each figure is the median
  of the rounds. Overhead is time per operation against the baseline; target: the facade over
  the memory backend costs under 15% over raw aiocache.
* (b) switch-over: ``--workers`` tasks call the facade over the runtime-built FallbackCache
  (``[cache] backend = "redis"``, ``fallback = "memory"``, default ``[cache] timeout``)
  steadily; ``redis-server`` is killed (SIGKILL) mid-run, then started again, empty, on the same
  port. Reported: failed calls (target 0), p99 latency in the second after the kill (target
  under 300 ms) against the steady p99 before it, how long until health said ``degraded`` and,
  after the restart, ``ok`` (and calls served by Redis again). The same load against
  ``redis`` without a fallback is the baseline: its failed calls are what the fallback saves.

Client, server and Redis share this 2-core machine (with other work): compare the ratios, not the
absolute numbers.

    .venv/bin/python bench/cache.py [--figures a,b] [--workers 16] [--keys 1000]
        [--value-bytes 256] [--seconds 0.5] [--rounds 3] [--switch-seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHARED = "client, server and Redis share this 2-core machine"
TARGET_FACADE_OVERHEAD = 0.15
TARGET_SWITCH_P99_MS = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A ``redis-server`` on a free loopback port, killable and restartable on that port."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (make test installs it)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise SystemExit(f"redis-server did not answer on port {self.port}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None


@contextmanager
def redis_server() -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="hubbub-bench-redis-") as directory:
        server = RedisProcess(Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.kill()


@contextmanager
def runtime_config(text: str) -> Iterator[Any]:
    """The configuration for ``text`` with a throwaway ``HUBBUB_HOME``."""
    from hubbub.config import load_config

    with tempfile.TemporaryDirectory(prefix="hubbub-bench-home-") as home:
        yield load_config(text=text, env={"HUBBUB_HOME": home})


def percentile(values: list[float], share: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


# -- (a) throughput and latency per layer ----------------------------------------------------


@dataclass
class Subject:
    """One layer under test: ``get(key)`` and ``set(key)`` coroutines."""

    name: str
    group: str
    get: Callable[[str], Awaitable[Any]]
    set: Callable[[str], Awaitable[Any]]
    results: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Per operation: (ops/s, p99 seconds) of each round."""


async def drive(
    op: Callable[[str], Awaitable[Any]], keys: list[str], workers: int, seconds: float
) -> tuple[float, float]:
    """Run ``op`` from ``workers`` tasks for ``seconds``: (ops/s, p99 latency in seconds)."""
    latencies: list[list[float]] = [[] for _ in range(workers)]
    clock = time.perf_counter
    stop = clock() + seconds

    async def worker(n: int) -> None:
        mine = latencies[n]
        i = n
        count = len(keys)
        while True:
            began = clock()
            if began >= stop:
                return
            await op(keys[i % count])
            mine.append(clock() - began)
            i += workers

    began = clock()
    await asyncio.gather(*(worker(n) for n in range(workers)))
    elapsed = clock() - began
    every = [x for lane in latencies for x in lane]
    return len(every) / elapsed, percentile(every, 0.99)


async def memory_subjects(value: bytes) -> list[Subject]:
    from aiocache import SimpleMemoryCache

    from hubbub.cache import Cache
    from hubbub_plugins.memory_cache import MemoryCache, MemoryCacheSettings

    raw = SimpleMemoryCache()
    lean = SimpleMemoryCache(timeout=None)  # no asyncio.wait_for around every call
    backend = MemoryCache(MemoryCacheSettings())
    await backend.start()
    facade = Cache(backend, "bench")
    return [
        Subject("raw aiocache SimpleMemoryCache", "memory", raw.get, lambda k: raw.set(k, value)),
        Subject("  the same, timeout=None", "memory", lean.get, lambda k: lean.set(k, value)),
        Subject("memory backend", "memory", backend.get, lambda k: backend.set(k, value)),
        Subject(
            "facade over memory",
            "memory",
            lambda k: facade.get(k, bytes),
            lambda k: facade.set(k, value),
        ),
    ]


async def redis_subjects(value: bytes, runtimes: list[Any], server: RedisProcess) -> list[Subject]:
    import redis.asyncio

    from hubbub.cache import Cache
    from hubbub.runtime import Runtime

    plain = f'[redis]\nurl = "{server.url}"\ntimeout = 5\n[cache]\nbackend = "redis"\n'
    with runtime_config(plain) as config:
        redis_runtime = Runtime.from_config(config)
        await redis_runtime.start()
    with runtime_config(plain + 'fallback = "memory"\n') as config:
        fallback_runtime = Runtime.from_config(config)
        await fallback_runtime.start()
    runtimes += [redis_runtime, fallback_runtime]
    raw = redis.asyncio.Redis.from_url(  # the runtime's client options (hubbub.redis)
        server.url,
        socket_connect_timeout=5,
        socket_timeout=5,
        health_check_interval=30,
        client_name="bench",
    )
    backend = redis_runtime.cache
    facade = Cache(backend, "bench")
    with_fallback = fallback_runtime.cache_for("bench")
    return [
        Subject("raw redis-py", "redis", raw.get, lambda k: raw.set(k, value)),
        Subject("redis backend", "redis", backend.get, lambda k: backend.set(k, value)),
        Subject(
            "facade over redis",
            "redis",
            lambda k: facade.get(k, bytes),
            lambda k: facade.set(k, value),
        ),
        Subject(
            "facade over redis + fallback",
            "redis",
            lambda k: with_fallback.get(k, bytes),
            lambda k: with_fallback.set(k, value),
        ),
    ]


async def figure_a_async(args: argparse.Namespace) -> None:
    value = bytes(range(256)) * (args.value_bytes // 256) + bytes(args.value_bytes % 256)
    keys = [f"key:{i:06d}" for i in range(args.keys)]
    runtimes: list[Any] = []
    with redis_server() as server:
        try:
            subjects = await memory_subjects(value)
            subjects += await redis_subjects(value, runtimes, server)
            for subject in subjects:  # warm up, and every key exists before the gets
                for key in keys:
                    await subject.set(key)
            for round_ in range(args.rounds):
                order = subjects[round_ % len(subjects) :] + subjects[: round_ % len(subjects)]
                for subject in order:
                    for name, op in (("set", subject.set), ("get", subject.get)):
                        result = await drive(op, keys, args.workers, args.seconds)
                        subject.results.setdefault(name, []).append(result)
        finally:
            for runtime in runtimes:
                await runtime.stop()
    report_a(subjects, args)


def report_a(subjects: list[Subject], args: argparse.Namespace) -> None:
    print(
        f"(a) get/set: {args.workers} concurrent tasks on one uvloop loop, {args.keys:,} keys, "
        f"{args.value_bytes}-byte values; median of {args.rounds} alternating rounds "
        f"[{SHARED}]"
    )
    medians: dict[str, dict[str, tuple[float, float]]] = {}
    for subject in subjects:
        medians[subject.name] = {
            name: (
                statistics.median(r[0] for r in rounds),
                statistics.median(r[1] for r in rounds),
            )
            for name, rounds in subject.results.items()
        }
    baselines = {"memory": "raw aiocache SimpleMemoryCache", "redis": "raw redis-py"}
    print(f"  {'subject':34} {'set/s':>10} {'p99 set':>10} {'get/s':>10} {'p99 get':>10}"
          f" {'overhead get':>13} {'overhead set':>13}")  # fmt: skip
    for subject in subjects:
        mine = medians[subject.name]
        base = medians[baselines[subject.group]]
        overheads = [base[op][0] / mine[op][0] - 1 for op in ("get", "set")]
        print(
            f"  {subject.name:34} {mine['set'][0]:10,.0f} {mine['set'][1] * 1e6:8.1f}µs"
            f" {mine['get'][0]:10,.0f} {mine['get'][1] * 1e6:8.1f}µs"
            f" {overheads[0]:+12.0%} {overheads[1]:+12.0%}"
        )
    facade = medians["facade over memory"]
    raw = medians["raw aiocache SimpleMemoryCache"]
    both = sum(raw[op][0] / facade[op][0] - 1 for op in ("get", "set")) / 2
    verdict = "ok" if both < TARGET_FACADE_OVERHEAD else "FAIL"
    print(
        f"  facade over memory vs raw aiocache: {both:+.0%} time per operation (mean of get and "
        f"set)  {verdict} (target < {TARGET_FACADE_OVERHEAD:.0%})"
    )
    lean = medians["  the same, timeout=None"]
    both_lean = sum(lean[op][0] / facade[op][0] - 1 for op in ("get", "set")) / 2
    print(f"  facade over memory vs raw aiocache with timeout=None: {both_lean:+.0%}")
    facade_r = medians["facade over redis"]
    raw_r = medians["raw redis-py"]
    both_r = sum(raw_r[op][0] / facade_r[op][0] - 1 for op in ("get", "set")) / 2
    print(f"  facade over redis vs raw redis-py: {both_r:+.0%} time per operation")


# -- (b) switch-over -------------------------------------------------------------------------


@dataclass
class Call:
    began: float
    took: float
    failed: bool


async def switch_over(
    server: RedisProcess, *, fallback: bool, workers: int, seconds: float
) -> dict[str, Any]:
    """Steady load through the runtime's cache facade; kill Redis at 1/3 of ``seconds``,
    restart it at 2/3."""
    from hubbub.runtime import Runtime

    text = f'[redis]\nurl = "{server.url}"\ntimeout = 1\n[cache]\nbackend = "redis"\n'
    if fallback:
        text += 'fallback = "memory"\n'
    calls: list[Call] = []
    served_by_fallback = 0
    statuses: list[tuple[float, str, str]] = []
    with runtime_config(text) as config:
        runtime = Runtime.from_config(config)
        await runtime.start()
        try:
            cache = runtime.cache_for("switch")
            stop = asyncio.Event()

            async def load(n: int) -> None:
                i = 0
                while not stop.is_set():
                    key = f"k{(n * 7919 + i) % 500}"
                    began = time.perf_counter()
                    try:
                        if i % 2:
                            await cache.get(key, int)
                        else:
                            await cache.set(key, i, ttl=60)
                        failed = False
                    except Exception:
                        failed = True
                    calls.append(Call(began, time.perf_counter() - began, failed))
                    i += 1
                    await asyncio.sleep(0.002)  # steady, not flat out

            async def watch() -> None:
                while not stop.is_set():
                    health = (await runtime.health()).components["cache"]
                    statuses.append((time.perf_counter(), health.status, health.backend))
                    await asyncio.sleep(0.05)

            tasks = [asyncio.create_task(load(n)) for n in range(workers)]
            tasks.append(asyncio.create_task(watch()))
            start = time.perf_counter()
            await asyncio.sleep(seconds / 3)
            killed = time.perf_counter()
            server.kill()
            await asyncio.sleep(seconds / 3)
            restarted = time.perf_counter()
            await asyncio.to_thread(server.start)
            await asyncio.sleep(seconds / 3)
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            served_by_fallback = getattr(runtime.cache, "served_by_fallback", 0)
            await runtime.stop()
    steady = [c.took for c in calls if start + 0.2 <= c.began < killed]
    window = [c.took for c in calls if killed <= c.began < killed + 1.0]
    degraded_at = next((t for t, s, _ in statuses if t >= killed and s != "ok"), None)
    ok_at = next((t for t, s, _ in statuses if t >= restarted and s == "ok"), None)
    return {
        "calls": len(calls),
        "failed": sum(c.failed for c in calls),
        "failed_window": sum(c.failed for c in calls if killed <= c.began),
        "steady_p99": percentile(steady, 0.99),
        "window_p99": percentile(window, 0.99),
        "window_max": max(window, default=math.nan),
        "window_calls": len(window),
        "degraded_after": None if degraded_at is None else degraded_at - killed,
        "ok_after": None if ok_at is None else ok_at - restarted,
        "served_by_fallback": served_by_fallback,
    }


async def figure_b_async(args: argparse.Namespace) -> None:
    with redis_server() as server:
        with_fallback = await switch_over(
            server, fallback=True, workers=args.workers, seconds=args.switch_seconds
        )
        if server.process is None:
            server.start()
        without = await switch_over(
            server, fallback=False, workers=args.workers, seconds=args.switch_seconds
        )
    print(
        f"(b) switch-over: {args.workers} tasks calling the facade steadily (get/set, 2 ms "
        f"apart); redis-server SIGKILLed at {args.switch_seconds / 3:.1f} s, started again "
        f"(empty) at {2 * args.switch_seconds / 3:.1f} s [{SHARED}]"
    )
    w = with_fallback
    verdict_f = "ok" if w["failed"] == 0 else "FAIL"
    p99_ms = w["window_p99"] * 1000
    verdict_p = "ok" if p99_ms < TARGET_SWITCH_P99_MS else "FAIL"
    print(f"  with fallback = \"memory\": {w['calls']:,} calls, {w['failed']} failed  "
          f"{verdict_f} (target 0)")  # fmt: skip
    print(
        f"    p99 in the second after the kill: {p99_ms:.2f} ms over {w['window_calls']:,} calls "
        f"(max {w['window_max'] * 1000:.1f} ms)  {verdict_p} (target < {TARGET_SWITCH_P99_MS:.0f}"
        f" ms); steady p99 before the kill {w['steady_p99'] * 1000:.2f} ms"
    )
    print(
        f"    health degraded {fmt_after(w['degraded_after'])} after the kill; ok again "
        f"{fmt_after(w['ok_after'])} after the restart; {w['served_by_fallback']:,} calls "
        "served by memory"
    )
    b = without
    print(
        f"  baseline, no fallback: {b['calls']:,} calls, {b['failed']} failed "
        f"({b['failed_window']} after the kill); p99 in the second after the kill "
        f"{b['window_p99'] * 1000:.1f} ms"
    )


def fmt_after(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", default="a,b", help="which figures, e.g. a")
    parser.add_argument("--workers", type=int, default=16, help="concurrent tasks")
    parser.add_argument("--keys", type=int, default=1000, help="(a) key space")
    parser.add_argument("--value-bytes", type=int, default=256, help="(a) value size")
    parser.add_argument("--seconds", type=float, default=0.5, help="(a) seconds per sample")
    parser.add_argument("--rounds", type=int, default=3, help="(a) alternating rounds")
    parser.add_argument("--switch-seconds", type=float, default=6.0, help="(b) run length")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)  # the breaker's warnings
    import uvloop

    figures = {"a": figure_a_async, "b": figure_b_async}
    for name in args.figures.split(","):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(figures[name.strip()](args))


if __name__ == "__main__":
    main()
