"""A small HTTP/1.1 keep-alive load generator (asyncio streams, uvloop when installed).

Sends a fixed number of identical requests over ``concurrency`` connections and records each
request's latency. Used for both sides of a comparison, so its own cost cancels out of the ratio.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import dataclass


@dataclass
class Result:
    requests: int
    seconds: float
    latencies: list[float]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000


def build_request(port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _worker(
    port: int, request: bytes, count: int, latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(count):
            began = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - began)
            if not head.startswith(b"HTTP/1.1 200"):
                errors[0] += 1
                if errors[0] == 1:
                    sys.stderr.write(f"first failure: {head.splitlines()[0].decode()}\n")
    finally:
        writer.close()


async def _run(port: int, request: bytes, total: int, concurrency: int) -> Result:
    latencies: list[float] = []
    errors = [0]
    per_worker = total // concurrency
    began = time.perf_counter()
    await asyncio.gather(
        *(_worker(port, request, per_worker, latencies, errors) for _ in range(concurrency))
    )
    return Result(per_worker * concurrency, time.perf_counter() - began, latencies, errors[0])


def run(port: int, request: bytes, total: int, concurrency: int) -> Result:
    """Send ``total`` requests over ``concurrency`` keep-alive connections."""
    try:
        import uvloop

        return uvloop.run(_run(port, request, total, concurrency))
    except ImportError:
        return asyncio.run(_run(port, request, total, concurrency))
