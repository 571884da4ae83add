"""``/health/live`` while thousands of idle and slow connections are held open (issue 15).

Starts ``hubbub serve`` (a temporary data directory, event sinks off, log level WARNING) and,
from one asyncio client process:

* opens ``--silent`` connections (default 3,000) that never send a byte;
* opens ``--slow`` connections (default 300) that send a request line, then one byte of a header
  every second (a slow-header attack);
* while all of them are held, sends ``--requests`` (default 200) ``GET /health/live`` requests,
  one after another, each on a new connection (as a health probe does), and prints p50/p99/max
  latency (target: p99 under 100 ms);
* then waits for the server to close the held connections and prints how long it took (about
  ``[server] header_timeout`` after each connection opened: 10 s by default).

Both processes raise their soft open-files limit to the hard limit first. The server runs with
its defaults unless ``--header-timeout`` is given. Nothing is asserted: figures are printed,
with PASS/FAIL beside the target. Client and server share the machine, so the figures include
the client's own work.

    .venv/bin/python bench/connections.py [--silent N] [--slow N] [--requests N]
                                          [--header-timeout S] [--max-connections N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
SHARED = f"client and server share this {os.cpu_count()}-core machine"
TARGET_P99_MS = 100.0
DEFAULT_HEADER_TIMEOUT = 10.0  # [server] header_timeout's default


@dataclass
class Held:
    """Connections held open, and when the server closed each (seconds after it opened)."""

    opened: list[float] = field(default_factory=list)
    closed_after: list[float] = field(default_factory=list)
    answered_408: int = 0
    failed: int = 0


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"hubbub serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("hubbub serve did not become ready")


async def watch(reader: asyncio.StreamReader, opened: float, held: Held) -> None:
    """Read until the server closes the connection; note when, and whether it said 408."""
    data = b""
    try:
        while chunk := await reader.read(65536):
            data += chunk
    except OSError:
        pass
    held.closed_after.append(time.monotonic() - opened)
    if data.startswith(b"HTTP/1.1 408"):
        held.answered_408 += 1


async def open_held(
    port: int, count: int, first: bytes, held: Held, tasks: list[asyncio.Task[None]]
) -> list[asyncio.StreamWriter]:
    """Open ``count`` connections (200 at a time), send ``first`` on each, watch them."""
    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            held.failed += 1
            return
        opened = time.monotonic()
        held.opened.append(opened)
        if first:
            writer.write(first)
        writers.append(writer)
        tasks.append(asyncio.create_task(watch(reader, opened, held)))

    for start in range(0, count, 200):
        await asyncio.gather(*(one() for _ in range(min(200, count - start))))
    return writers


async def trickle(writers: list[asyncio.StreamWriter], stop: asyncio.Event) -> None:
    """One more header byte on every slow connection, every second."""
    while not stop.is_set():
        for writer in writers:
            if not writer.is_closing():
                writer.write(b"a")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def probe(port: int) -> tuple[float, int]:
    """One ``GET /health/live`` on a new connection: seconds until the whole answer came, and
    its status (0 when the connection was closed without one)."""
    began = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    )
    try:
        data = await reader.read()  # until the server closes
    except OSError:
        data = b""
    elapsed = time.perf_counter() - began
    writer.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return elapsed, status


def spread(values: list[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    return (
        f"min {ordered[0]:.2f} s, median {statistics.median(ordered):.2f} s, "
        f"max {ordered[-1]:.2f} s"
    )


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def run(port: int, args: argparse.Namespace, header_timeout: float) -> None:
    silent, slow = Held(), Held()
    tasks: list[asyncio.Task[None]] = []
    began = time.monotonic()
    silent_writers = await open_held(port, args.silent, b"", silent, tasks)  # keep them open
    slow_writers = await open_held(
        port, args.slow, b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", slow, tasks
    )
    opening = time.monotonic() - began
    stop = asyncio.Event()
    trickler = asyncio.create_task(trickle(slow_writers, stop))
    await asyncio.sleep(0.5)  # let the server accept the last ones

    open_before = len(silent.opened) + len(slow.opened)
    open_before -= len(silent.closed_after) + len(slow.closed_after)
    answers = [await probe(port) for _ in range(args.requests)]
    latencies = [elapsed for elapsed, _ in answers]
    statuses = sorted({status for _, status in answers})
    open_after = len(silent.opened) + len(slow.opened)
    open_after -= len(silent.closed_after) + len(slow.closed_after)

    ms = [1000 * x for x in latencies]
    p50, p99 = percentile(ms, 0.50), percentile(ms, 0.99)
    print(
        f"held open: {len(silent.opened)} silent + {len(slow.opened)} slow-header connections "
        f"(opened in {opening:.1f} s; {silent.failed + slow.failed} could not connect)"
    )
    print(
        f"/health/live while held ({open_before} open before, {open_after} after; "
        f"{args.requests} requests, a new connection each): p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
        f"max {max(ms):.2f} ms; statuses {statuses}  [{SHARED}]"
    )
    if statuses != [200]:
        print(f"  not all 200: {sum(s != 200 for _, s in answers)} of {len(answers)}")
    verdict = "PASS" if p99 < TARGET_P99_MS else "FAIL"
    print(f"  {verdict}  p99 < {TARGET_P99_MS:.0f} ms: {p99:.2f} ms  [{SHARED}]")

    deadline = began + header_timeout + opening + 15
    while len(silent.closed_after) + len(slow.closed_after) < len(silent.opened) + len(slow.opened):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    stop.set()
    await trickler
    waited = time.monotonic() - began
    for name, held in (("silent", silent), ("slow-header", slow)):
        still = len(held.opened) - len(held.closed_after)
        print(
            f"server closed {len(held.closed_after)}/{len(held.opened)} {name} connections "
            f"after {spread(held.closed_after)} from opening"
            + (f" ({held.answered_408} with 408)" if name == "slow-header" else "")
            + (f"; {still} still open after {waited:.0f} s" if still else "")
            + f"  [header_timeout {header_timeout:g} s; {SHARED}]"
        )
    for writer in silent_writers + slow_writers:
        writer.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--silent", type=int, default=3000, help="silent connections (3000)")
    parser.add_argument("--slow", type=int, default=300, help="slow-header connections (300)")
    parser.add_argument("--requests", type=int, default=200, help="health requests (200)")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="[server] max_connections for the server (default: its own, 4096)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=None,
        help="[server] header_timeout for the server (default: its own, 10 s)",
    )
    args = parser.parse_args()
    limit = raise_nofile()
    needed = args.silent + args.slow + 100
    if limit < needed:
        print(f"warning: the open-files limit is {limit}; this run needs about {needed}")
    header_timeout = args.header_timeout or DEFAULT_HEADER_TIMEOUT
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        env = {
            **os.environ,
            "HUBBUB_HOME": home,
            "HUBBUB_LOGGING__LEVEL": "WARNING",
            "HUBBUB_EVENTS__SINKS": "[]",
        }
        if args.header_timeout is not None:
            env["HUBBUB_SERVER__HEADER_TIMEOUT"] = str(args.header_timeout)
        if args.max_connections is not None:
            env["HUBBUB_SERVER__MAX_CONNECTIONS"] = str(args.max_connections)
        log_path = Path(home) / "serve.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(BIN / "hubbub"), "serve", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=raise_nofile,
            )
            try:
                wait_ready(port, process)
                source = "its default" if args.header_timeout is None else "--header-timeout"
                print(
                    f"hubbub serve on 127.0.0.1:{port}, header_timeout {header_timeout:g} s "
                    f"({source}), open-files limit {limit}; {SHARED}"
                )
                asyncio.run(run(port, args, header_timeout))
            finally:
                process.terminate()
                process.wait(timeout=60)
        lines = log_path.read_text(errors="replace").splitlines()
        tracebacks = sum("Traceback" in line for line in lines)
        print(f"server log: {len(lines)} lines, {tracebacks} tracebacks")


if __name__ == "__main__":
    main()
