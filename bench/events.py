"""Event fan-out cost: one user's reply with 0 and with N idle SSE streams of another user open.

Issue 16's figure (b): the same reply's duration with 0 and with 5,000 idle streams of another
user; target a ratio under 1.2 (it was about 30 at 4,000 before subscriptions were indexed).
The reply is ``offline/echo`` answering a long message word by word over the native API
(``POST /api/conversations/{id}/messages`` with ``"wait": true``), so it publishes one event per
merged delta. Client and server share this 2-core machine: compare the ratio, not the seconds.

    .venv/bin/python bench/events.py [--streams 5000] [--replies 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
SHARED = "client and server share this 2-core machine"
WORDS = 20_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_nofile() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def call(port: int, method: str, path: str, key: str, body: object = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def create_key(env: dict[str, str], user: str) -> str:
    done = subprocess.run(
        [str(BIN / "hubbub"), "keys", "create", "--user", user],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().splitlines()[-1]


def reply_seconds(port: int, key: str, replies: int) -> float:
    """Median duration of ``replies`` replies to a WORDS-word message."""
    text = " ".join(f"w{n}" for n in range(WORDS))
    durations = []
    for _ in range(replies):
        conversation = call(port, "POST", "/api/conversations", key, {})
        assert isinstance(conversation, dict)
        began = time.perf_counter()
        call(
            port,
            "POST",
            f"/api/conversations/{conversation['id']}/messages",
            key,
            {"content": text, "wait": True},
        )
        durations.append(time.perf_counter() - began)
    return statistics.median(durations)


async def hold_streams(port: int, key: str, count: int, ready: asyncio.Event) -> None:
    """Open ``count`` idle ``/api/events`` streams and keep them until cancelled."""
    writers = []
    head = (
        f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    try:
        for start in range(0, count, 200):
            batch = [
                asyncio.open_connection("127.0.0.1", port)
                for _ in range(start, min(count, start + 200))
            ]
            for reader, writer in await asyncio.gather(*batch):
                writer.write(head)
                writers.append((reader, writer))
            await asyncio.gather(*(reader.readuntil(b"\r\n\r\n") for reader, _ in writers[start:]))
        ready.set()
        await asyncio.Event().wait()
    finally:
        for _, writer in writers:
            writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--replies", type=int, default=5)
    args = parser.parse_args()
    limit = raise_nofile()
    home = tempfile.mkdtemp(prefix="hubbub-bench-events-")
    port = free_port()
    env = {
        **os.environ,
        "HUBBUB_HOME": home,
        "HUBBUB_LOGGING__LEVEL": "WARNING",
        "HUBBUB_EVENTS__SINKS": "[]",
        "HUBBUB_SERVER__MAX_CONNECTIONS": str(args.streams + 512),
        "HUBBUB_EVENTS__MAX_STREAMS_PER_CALLER": str(args.streams + 10),
        "HUBBUB_EVENTS__MAX_STREAMS": str(args.streams + 100),
        "HUBBUB_SERVER__HEADER_TIMEOUT": "60",
    }
    alice, bob = create_key(env, "alice"), create_key(env, "bob")
    server = subprocess.Popen(
        [str(BIN / "hubbub"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        reply_seconds(port, alice, 1)  # warm up
        alone = reply_seconds(port, alice, args.replies)

        async def with_streams() -> float:
            ready = asyncio.Event()
            holder = asyncio.create_task(hold_streams(port, bob, args.streams, ready))
            await ready.wait()
            try:
                return await asyncio.to_thread(reply_seconds, port, alice, args.replies)
            finally:
                holder.cancel()
                await asyncio.gather(holder, return_exceptions=True)

        crowded = asyncio.run(with_streams())
    finally:
        server.terminate()
        server.wait(30)
    print(
        f"reply of {WORDS} words (offline/echo, native API, wait=true), median of "
        f"{args.replies}; open-files limit {limit}; {SHARED}"
    )
    print(f"  with 0 idle streams of another user:     {alone * 1000:8.1f} ms  [{SHARED}]")
    print(
        f"  with {args.streams} idle streams of another user: {crowded * 1000:8.1f} ms  [{SHARED}]"
    )
    ratio = crowded / alone
    verdict = "PASS" if ratio < 1.2 else "FAIL"
    print(f"  ratio {ratio:.2f}  {verdict} (target < 1.2; about 30 at 4,000 before indexing)")


if __name__ == "__main__":
    main()
