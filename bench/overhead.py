"""Hubbub's overhead on ``POST /v1/chat/completions`` against a bare Litestar app, driven by wrk.

Every server runs the same way in the same run: uvicorn, one worker, uvloop and httptools,
access log off. The load client is wrk (Debian package ``wrk``), one thread, ``-c 1`` and
``-c 32``, a fixed duration per sample; a Lua script sets the POST body and headers and its
``done()`` prints requests, duration and latency percentiles as JSON. Rows:

* ``bare``: bench/bare_app.py, a canned completion (the baseline);
* ``hubbub``: the reference server of this tree, ``offline/echo``, local mode (no credentials);
* ``hubbub+key``: the same with an API key checked on every request;
* ``hubbub+jwt``: the same with the access token of a login session (``POST /api/auth/login``
  with a local account made by ``hubbub users add``): the JWT verified and its session checked
  on every request;
* with ``--baseline-ref REF``: ``hubbub@REF`` and ``hubbub+key@REF``, the same server at another
  git commit, from a worktree at /tmp/hubbub-baseline-REF (reused when present; removed at the
  end when this run created it, unless ``--keep-worktree``), run with this venv and that tree's
  ``framework``, ``plugins`` and ``reference_server`` first on PYTHONPATH.

Rounds alternate every row at both concurrencies (the row order rotates each round); each figure
is the median of the rounds. Client and server share the machine (2 cores here), so figures are
only comparable within one run: read the ratios, not the absolute numbers.

Targets: hubbub reaches >= 60% of bare's requests/s at concurrency 32 and adds < 0.1 ms at p50 at
concurrency 1; cold start (``hubbub serve`` to 200 on /health/ready) < 1.5 s; against a baseline
ref, the hot path does not get slower (req/s after/before, p50 difference). Misses are printed
as FAIL; ``--check`` also makes them the exit status (the default only reports: the machine is
noisy).

wrk is not installed by this script (``make bench`` must work offline): without it, it says
``apt-get install wrk`` and exits with status 2.

    .venv/bin/python bench/overhead.py [--duration S] [--rounds N] [--baseline-ref REF] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BODY = json.dumps(
    {"model": "offline/echo", "messages": [{"role": "user", "content": "hello, how are you?"}]}
)
PATH = "/v1/chat/completions"
CONCURRENCIES = (1, 32)
TARGET_RPS_SHARE = 0.60  # of bare's req/s at concurrency 32
TARGET_P50_ADDED_MS = 0.1  # at concurrency 1
TARGET_COLD_START_S = 1.5
SOURCE_DIRS = ("framework", "plugins", "reference_server")
PACKAGES = {"hubbub": "framework", "hubbub_plugins": "plugins", "hubbub_server": "reference_server"}
SHARED = f"client (wrk) and servers share this {os.cpu_count()}-core machine"
MACHINE = f"{SHARED}: figures are noisy, compare ratios within one run"
MARK = "HUBBUB-WRK-JSON "
DONE = f"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{MARK}{{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"mean_us":%f,'
    .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class Sample:
    rps: float
    p50: float  # ms
    p99: float  # ms


@dataclass
class Row:
    name: str
    port: int
    headers: dict[str, str]
    script: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.stderr.write(
            "bench/overhead.py needs wrk, the HTTP load client (Debian package 'wrk'):\n"
            "    apt-get install wrk    (as root; run 'apt-get update' first on a new machine)\n"
        )
        sys.exit(2)
    return wrk


def lua_script(directory: Path, name: str, headers: dict[str, str]) -> Path:
    """A wrk script: POST the body with these headers, print a JSON summary when done."""
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{BODY}]==]"]
    for key, value in {"Content-Type": "application/json", **headers}.items():
        lines.append(f'wrk.headers["{key}"] = [==[{value}]==]')
    path = directory / f"{re.sub(r'[^A-Za-z0-9]+', '_', name)}.lua"
    path.write_text("\n".join(lines) + "\n" + DONE)
    return path


def wrk_run(wrk: str, row: Row, concurrency: int, seconds: int) -> Sample:
    command = [
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, seconds)}s",
        "-s",
        str(row.script),
        f"http://127.0.0.1:{row.port}{PATH}",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed for {row.name}: {done.stdout}{done.stderr}")
    summary = json.loads(lines[-1][len(MARK) :])
    errors = {k: summary[k] for k in ("connect", "read", "write", "status", "timeout")}
    if any(errors.values()) or not summary["requests"]:
        raise RuntimeError(f"{row.name} at -c {concurrency}: {summary}")
    return Sample(
        rps=summary["requests"] / (summary["duration_us"] / 1e6),
        p50=summary["p50_us"] / 1000,
        p99=summary["p99_us"] / 1000,
    )


def check_reply(row: Row) -> None:
    """One request by hand before measuring: wrk only counts statuses, this checks the reply."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{row.port}{PATH}",
        data=BODY.encode(),
        headers={"Content-Type": "application/json", **row.headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        body = json.loads(reply.read())
    if reply.status != 200 or body.get("object") != "chat.completion":
        raise RuntimeError(f"{row.name}: unexpected reply {reply.status} {body}")


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


def environment(home: str, tree: Path) -> dict[str, str]:
    """Settings for a server of ``tree``: its sources first on PYTHONPATH, then bench/."""
    path = [str(tree / d) for d in SOURCE_DIRS] + [str(ROOT / "bench")]
    env = {
        **os.environ,
        "HUBBUB_HOME": home,
        "HUBBUB_LOGGING__LEVEL": "WARNING",
        "HUBBUB_EVENTS__SINKS": "[]",
        "PYTHONPATH": os.pathsep.join(path),
    }
    if tree != ROOT:  # the installed entry points are this tree's: load only the tree's own
        declared = tomllib.loads((tree / "pyproject.toml").read_text())["project"]
        env["HUBBUB_LOAD_PLUGINS"] = ",".join(declared["entry-points"]["hubbub"])
    return env


def check_imports(env: dict[str, str], tree: Path) -> None:
    """The venv has hubbub installed in editable mode: make sure ``tree``'s code is imported."""
    code = "import json, " + ", ".join(PACKAGES) + "; print(json.dumps({"
    code += ", ".join(f"{p!r}: {p}.__file__" for p in PACKAGES) + "}))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    for package, where in json.loads(done.stdout).items():
        if not Path(where).resolve().is_relative_to((tree / PACKAGES[package]).resolve()):
            raise RuntimeError(f"{package} imports from {where}, not from {tree}")


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


def create_key(env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(BIN / "hubbub"), "keys", "create", "--user", "bench"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().splitlines()[-1]


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@contextmanager
def baseline_tree(ref: str, keep: bool) -> Iterator[Path]:
    """A worktree at ``ref`` under /tmp: reused when present, removed after if created here."""
    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    path = Path(tempfile.gettempdir()) / f"hubbub-baseline-{re.sub(r'[^A-Za-z0-9._-]', '_', ref)}"
    created = not path.exists()
    if created:
        git("worktree", "add", "--detach", str(path), commit)
    elif git("rev-parse", "HEAD", cwd=path) != commit:
        git("checkout", "--quiet", "--detach", commit, cwd=path)
    try:
        yield path
    finally:
        if created and not keep:
            git("worktree", "remove", "--force", str(path))


def pyproject_differs(ref: str) -> bool:
    """Entry points come from the venv's install of this tree: warn when REF declares others."""
    done = subprocess.run(["git", "diff", "--quiet", ref, "--", "pyproject.toml"], cwd=ROOT)
    return done.returncode != 0


BENCH_PASSWORD = "bench password, long enough"


def add_user(env: dict[str, str]) -> None:
    subprocess.run(
        [str(BIN / "hubbub"), "users", "add", "bench", "--password-stdin"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        input=BENCH_PASSWORD + "\n",
    )


def log_in(port: int) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/auth/login",
        data=json.dumps({"username": "bench", "password": BENCH_PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        token: str = json.load(response)["access_token"]
    return token


def start_hubbub(stack: ExitStack, name: str, tree: Path, credential: str) -> tuple[Row, float]:
    """A server of ``tree`` in its own data directory, and the headers that authenticate to it
    with ``credential``: ``none`` (local mode), ``key`` (an API key) or ``jwt`` (a login's
    access token)."""
    env = environment(stack.enter_context(tempfile.TemporaryDirectory()), tree)
    check_imports(env, tree)
    headers = {"Authorization": f"Bearer {create_key(env)}"} if credential == "key" else {}
    if credential == "jwt":
        add_user(env)
    port = free_port()
    cold = stack.enter_context(server(hubbub_command(port), port, env))
    if credential == "jwt":
        headers = {"Authorization": f"Bearer {log_in(port)}"}
    return Row(name, port, headers, Path()), cold


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=int, default=5, help="seconds of wrk per sample (default 5)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternate the servers this many times; report each one's median (default 3)",
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of wrk per server first (default 1)"
    )
    parser.add_argument(
        "--baseline-ref",
        metavar="REF",
        help="also measure the hubbub server at this git commit, alternating with this tree",
    )
    parser.add_argument(
        "--keep-worktree", action="store_true", help="keep the baseline worktree this run made"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed (default: report)"
    )
    args = parser.parse_args()
    wrk = require_wrk()
    ref = args.baseline_ref

    rows: list[Row] = []
    cold: dict[str, float] = {}
    with ExitStack() as stack:
        scripts = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        trees = [("", ROOT)]
        if ref:
            trees.append((f"@{ref}", stack.enter_context(baseline_tree(ref, args.keep_worktree))))
            if pyproject_differs(ref):
                print(
                    f"note: pyproject.toml differs at {ref}; its server loads only the "
                    "plugins it declares (HUBBUB_LOAD_PLUGINS)"
                )
        port = free_port()
        env = environment(stack.enter_context(tempfile.TemporaryDirectory()), ROOT)
        cold["bare"] = stack.enter_context(server(bare_command(port), port, env))
        rows.append(Row("bare", port, {}, Path()))
        for suffix, tree in trees:
            credentials = ("none", "key", "jwt") if not suffix else ("none", "key")
            for credential in credentials:
                name = ("hubbub" if credential == "none" else f"hubbub+{credential}") + suffix
                row, seconds = start_hubbub(stack, name, tree, credential)
                rows.append(row)
                if credential == "none":
                    cold[name] = seconds
        for row in rows:
            row.script = lua_script(scripts, row.name, row.headers)
            check_reply(row)
            wrk_run(wrk, row, 8, args.warmup)

        samples: dict[tuple[str, int], list[Sample]] = {}
        for round_ in range(args.rounds):
            order = rows[round_ % len(rows) :] + rows[: round_ % len(rows)]
            for concurrency in CONCURRENCIES:
                for row in order:
                    sample = wrk_run(wrk, row, concurrency, args.duration)
                    samples.setdefault((row.name, concurrency), []).append(sample)

    results = {
        key: Sample(
            median([s.rps for s in values]),
            median([s.p50 for s in values]),
            median([s.p99 for s in values]),
        )
        for key, values in samples.items()
    }
    duration = max(1, args.duration)
    print(
        f"POST {PATH}: wrk -t1 -d{duration}s at -c 1 and -c 32, median of {args.rounds} "
        "alternating rounds; uvicorn + uvloop + httptools, 1 worker"
    )
    print(MACHINE)
    print(
        f"{'server':<{width(rows)}} {'conc':>4} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'req/s vs bare':>14} {'p50 added ms':>13}"
    )
    for concurrency in CONCURRENCIES:
        base = results["bare", concurrency]
        for row in rows:
            r = results[row.name, concurrency]
            print(
                f"{row.name:<{width(rows)}} {concurrency:>4} {r.rps:>9.0f} {r.p50:>8.3f} "
                f"{r.p99:>8.3f} {r.rps / base.rps:>14.0%} {r.p50 - base.p50:>13.3f}"
            )

    failed = False
    if ref:
        print(f"this tree against {ref} (same run, same client; {SHARED}):")
        for name in ("hubbub", "hubbub+key"):
            for concurrency in CONCURRENCIES:
                now, before = results[name, concurrency], results[f"{name}@{ref}", concurrency]
                print(
                    f"  {name:<10} -c {concurrency:>2}: req/s after/before "
                    f"{now.rps / before.rps:.3f}, p50 after - before "
                    f"{now.p50 - before.p50:+.3f} ms"
                )

    print(f"an access token (JWT and session check) against an API key ({SHARED}):")
    for concurrency in CONCURRENCIES:
        jwt, key = results["hubbub+jwt", concurrency], results["hubbub+key", concurrency]
        print(
            f"  -c {concurrency:>2}: req/s jwt/key {jwt.rps / key.rps:.3f}, "
            f"p50 jwt - key {jwt.p50 - key.p50:+.3f} ms"
        )

    share = results["hubbub", 32].rps / results["bare", 32].rps
    added = results["hubbub", 1].p50 - results["bare", 1].p50
    print(f"targets ({SHARED}):")
    for ok, text in (
        (share >= TARGET_RPS_SHARE, f"hubbub req/s at -c 32 >= 60% of bare: {share:.0%}"),
        (added < TARGET_P50_ADDED_MS, f"hubbub p50 added at -c 1 < 0.1 ms: {added:.3f} ms"),
        (
            cold["hubbub"] < TARGET_COLD_START_S,
            f"hubbub serve cold start < {TARGET_COLD_START_S} s: {cold['hubbub']:.2f} s",
        ),
    ):
        failed |= not ok
        print(f"  {verdict(ok)}  {text}")
    starts = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in cold.items())
    print(f"cold start to 200 on /health/ready (one start each; {SHARED}): {starts}")
    if args.check and failed:
        sys.exit(1)


def width(rows: list[Row]) -> int:
    return max(12, *(len(row.name) for row in rows))


if __name__ == "__main__":
    main()
