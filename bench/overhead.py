"""Hubbub's overhead on ``POST /v1/chat/completions`` against a bare Litestar app.

Both run the same way in the same run: uvicorn, one worker, uvloop and httptools, access log
off. The same load generator sends a fixed number of requests at concurrency 1 and 32. Rows:

* ``bare``: bench/bare_app.py, a canned completion (the baseline);
* ``hubbub``: the reference server, ``offline/echo``, local mode (no credentials);
* ``hubbub+key``: the same with an API key checked on every request.

Targets: hubbub reaches >= 60% of bare's requests/s at concurrency 32 and adds < 1 ms at p50 at
concurrency 1; cold start (``hubbub serve`` to 200 on /health/ready) < 1.5 s.

    .venv/bin/python bench/overhead.py [--requests N]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import Result, build_request, run

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BODY = json.dumps(
    {"model": "offline/echo", "messages": [{"role": "user", "content": "hello, how are you?"}]}
).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> float:
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - began
        except OSError:
            time.sleep(0.01)
    raise RuntimeError("server did not become ready")


@contextmanager
def server(command: list[str], port: int, env: dict[str, str]) -> Iterator[float]:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield wait_ready(port, process)
    finally:
        process.terminate()
        process.wait(timeout=30)


def environment(home: str) -> dict[str, str]:
    return {
        **os.environ,
        "HUBBUB_HOME": home,
        "HUBBUB_LOGGING__LEVEL": "WARNING",
        "HUBBUB_EVENTS__SINKS": "[]",
        "PYTHONPATH": str(ROOT / "bench"),
    }


def bare_command(port: int) -> list[str]:
    return [
        str(BIN / "uvicorn"),
        "bare_app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--loop",
        "uvloop",
        "--http",
        "httptools",
    ]


def hubbub_command(port: int) -> list[str]:
    return [str(BIN / "hubbub"), "serve", "--port", str(port), "--log-level", "WARNING"]


def measure(port: int, headers: dict[str, str], requests: int, concurrency: int) -> Result:
    request = build_request(port, "/v1/chat/completions", BODY, headers)
    result = run(port, request, requests, concurrency)
    if result.errors:
        raise RuntimeError(f"port {port} ({headers}): {result.errors} requests failed")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6400)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternate the servers this many times; report each one's median",
    )
    args = parser.parse_args()
    samples: dict[str, dict[int, list[Result]]] = {}
    cold: dict[str, float] = {}
    with ExitStack() as stack:
        env = environment(stack.enter_context(tempfile.TemporaryDirectory()))
        keyed_env = environment(stack.enter_context(tempfile.TemporaryDirectory()))
        ports = {name: free_port() for name in ("bare", "hubbub", "hubbub+key")}
        cold["bare"] = stack.enter_context(server(bare_command(ports["bare"]), ports["bare"], env))
        cold["hubbub"] = stack.enter_context(
            server(hubbub_command(ports["hubbub"]), ports["hubbub"], env)
        )
        key = (
            subprocess.run(
                [str(BIN / "hubbub"), "keys", "create", "--user", "bench"],
                env=keyed_env,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        # Its own data directory, with a key: this server enforces keys, the other stays local.
        stack.enter_context(
            server(hubbub_command(ports["hubbub+key"]), ports["hubbub+key"], keyed_env)
        )
        headers = {"bare": {}, "hubbub": {}, "hubbub+key": {"Authorization": f"Bearer {key}"}}
        for name, port in ports.items():
            measure(port, headers[name], 500, 8)  # warm up
        for _ in range(args.rounds):
            for concurrency in (1, 32):
                for name, port in ports.items():
                    result = measure(port, headers[name], args.requests, concurrency)
                    samples.setdefault(name, {}).setdefault(concurrency, []).append(result)
    results = {
        name: {c: sorted(rs, key=lambda r: r.rps)[len(rs) // 2] for c, rs in rows.items()}
        for name, rows in samples.items()
    }
    bare = results["bare"]
    print(
        f"POST /v1/chat/completions: {args.requests} requests per sample, median of "
        f"{args.rounds} alternating rounds; uvicorn + uvloop + httptools, 1 worker"
    )
    print(
        f"{'server':<12} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'req/s vs bare':>14} {'p50 added ms':>13}"
    )
    for name, rows in results.items():
        for concurrency, result in rows.items():
            base = bare[concurrency]
            print(
                f"{name:<12} {concurrency:>4} {result.rps:>9.0f} {result.p50:>8.3f} "
                f"{result.percentile(0.99):>8.3f} {result.rps / base.rps:>13.0%} "
                f"{result.p50 - base.p50:>13.3f}"
            )
    print("targets: hubbub req/s at conc 32 >= 60% of bare; p50 added at conc 1 < 1 ms")
    print(
        f"cold start to 200 on /health/ready: bare {cold['bare']:.2f} s, "
        f"hubbub serve {cold['hubbub']:.2f} s (target < 1.5 s), "
        f"ratio {cold['hubbub'] / cold['bare']:.2f}x"
    )


if __name__ == "__main__":
    main()
