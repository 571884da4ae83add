"""What one idle SSE connection holds in the server: a probe for issue 16, figure (a).

Runs ``hubbub serve``'s single-process server in this process (uvloop, httptools, the
connection protocol of :mod:`hubbub_server.connections`), opens N idle ``GET /api/events``
streams from a helper process (``bench/events.py --hold``) and prints, per connection: the
traced Python memory (:mod:`tracemalloc`) grouped by the file that allocated it and the top
allocation sites, the gc-tracked objects by type, the asyncio tasks and RSS; then what is left
once the clients have gone. With ``--no-trace`` it measures RSS alone (as ``bench/events.py``
does) and, with ``--window S``, the garbage collector's pauses while the streams sit idle
(``--heartbeat`` sets the interval).

    .venv/bin/python bench/_sse_footprint.py [--streams 2000] [--frames 8] [--top 25]
        [--heartbeat 15] [--no-trace] [--window 0]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
MARKERS = ("site-packages/", "hubbub_server/", "hubbub/", "lib/python3")


@dataclass
class Taken:
    """One measurement of the server process."""

    snapshot: tracemalloc.Snapshot | None
    types: collections.Counter[str]
    rss: int
    tasks: int


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def object_types() -> collections.Counter[str]:
    gc.collect()
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


def owner(filename: str) -> str:
    """A short name for the file (package and module) that allocated something."""
    for marker in MARKERS:
        if marker in filename:
            parts = filename.split(marker, 1)[1].split("/")
            kept = parts[:2] if marker == "site-packages/" else parts
            return marker.rstrip("/") + ":" + "/".join(kept)
    return filename


def report(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, top: int) -> None:
    by_file: collections.Counter[str] = collections.Counter()
    stats = after.compare_to(before, "traceback")
    for stat in stats:
        by_file[owner(stat.traceback[-1].filename)] += stat.size_diff
    print(f"traced Python memory: {sum(by_file.values()) / n:.0f} B per connection")
    for name, size in by_file.most_common(top):
        print(f"  {size / n:8.0f} B  {name}")
    print("top allocation sites (innermost frame first):")
    for stat in stats[:top]:
        if stat.size_diff / n < 64:
            break
        frames = list(stat.traceback)[::-1][:4]
        where = " <- ".join(f"{owner(f.filename)}:{f.lineno}" for f in frames)
        print(f"  {stat.size_diff / n:8.0f} B  {stat.count_diff / n:5.1f} objs  {where}")


def holder(port: int, key: str, count: int) -> subprocess.Popen[str]:
    """A helper process holding ``count`` idle streams until its stdin closes."""
    process = subprocess.Popen(
        [sys.executable, str(HERE / "events.py"), "--hold", f"{port},{key},{count},0,1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    print(f"client: {process.stdout.readline().strip()}", flush=True)
    return process


async def probe(args: argparse.Namespace, key: str) -> None:
    from hubbub.config import load_config
    from hubbub_server import serve

    config = load_config()
    port = config.server.port
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    taken: list[Taken] = []
    pauses: list[tuple[int, float]] = []
    began = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses.append((info["generation"], time.perf_counter() - began[0]))

    async def measure() -> None:
        # Walking every object would add to RSS: not done when RSS is what is measured.
        types = collections.Counter[str]() if args.no_trace else object_types()
        snapshot = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
        taken.append(Taken(snapshot, types, rss_kib(), len(asyncio.all_tasks())))

    def take() -> None:
        asyncio.run_coroutine_threadsafe(measure(), loop).result()

    def run_client() -> None:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        warm = holder(port, key, 1)  # what every stream needs is loaded before measuring
        time.sleep(1)
        take()
        held = holder(port, key, args.streams)
        time.sleep(args.settle)
        take()
        if args.window:
            pauses.clear()
            time.sleep(args.window)
            by_generation: dict[int, list[float]] = collections.defaultdict(list)
            for generation, seconds in pauses:
                by_generation[generation].append(seconds)
            print(f"garbage collections in {args.window:g} s idle: {len(pauses)}")
            for generation, times in sorted(by_generation.items()):
                print(
                    f"  generation {generation}: {len(times)}, longest "
                    f"{max(times) * 1000:.1f} ms, in all {sum(times) * 1000:.1f} ms"
                )
        for process in (held, warm):
            assert process.stdin is not None
            process.stdin.close()
            process.wait(60)
        time.sleep(args.settle)
        take()
        loop.call_soon_threadsafe(done.set)

    async def stop_when_done() -> None:
        await done.wait()
        os.kill(os.getpid(), signal.SIGINT)  # the server's own graceful stop

    gc.callbacks.append(on_gc)
    threading.Thread(target=run_client, daemon=True).start()
    stopper = asyncio.ensure_future(stop_when_done())
    try:
        await serve._serve_one(config, "WARNING")
    finally:
        stopper.cancel()
    first, opened, closed = taken
    n = args.streams
    print(
        f"\n{n} idle streams: RSS {first.rss / 1024:.1f} -> {opened.rss / 1024:.1f} MiB, "
        f"{(opened.rss - first.rss) / n:.1f} KiB per connection"
        + ("" if args.no_trace else " (tracemalloc's own overhead included)")
    )
    print(f"asyncio tasks {first.tasks} -> {opened.tasks}: {(opened.tasks - first.tasks) / n:.2f}")
    if first.snapshot is not None and opened.snapshot is not None:
        report(first.snapshot, opened.snapshot, n, args.top)
    if not args.no_trace:
        grown = opened.types - first.types
        print(f"gc-tracked objects per connection: {sum(grown.values()) / n:.1f}")
        for name, number in grown.most_common(args.top):
            print(f"  {number / n:6.2f}  {name}")
        left = closed.types - first.types
        print(
            f"after the clients left: {closed.tasks} tasks (before {first.tasks}); "
            f"{sum(left.values())} objects more than before: {left.most_common(8)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=8, help="traceback depth traced")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--heartbeat", type=float, default=15.0)
    parser.add_argument("--no-trace", action="store_true", help="RSS (and GC pauses) only")
    parser.add_argument("--window", type=float, default=0.0, help="seconds to watch the GC")
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(
        {
            "HUBBUB_HOME": tempfile.mkdtemp(prefix="hubbub-footprint-"),
            "HUBBUB_LOGGING__LEVEL": "WARNING",
            "HUBBUB_EVENTS__SINKS": "[]",
            "HUBBUB_SERVER__HEADER_TIMEOUT": "60",
            "HUBBUB_SERVER__PORT": str(port),
            "HUBBUB_SERVER__HEARTBEAT_INTERVAL": str(args.heartbeat),
            "HUBBUB_SERVER__MAX_CONNECTIONS": str(args.streams + 512),
            "HUBBUB_EVENTS__MAX_STREAMS_PER_CALLER": str(args.streams + 10),
            "HUBBUB_EVENTS__MAX_STREAMS": str(args.streams + 100),
        }
    )
    created = subprocess.run(
        [str(BIN / "hubbub"), "keys", "create", "--user", "bob"],
        check=True,
        capture_output=True,
        text=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    if not args.no_trace:
        tracemalloc.start(args.frames)
    from hubbub_server.serve import _run

    _run(probe(args, key))


if __name__ == "__main__":
    main()
