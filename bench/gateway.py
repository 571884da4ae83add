"""Issue 19's gateway benchmark: hubbub in front of an OpenAI-compatible upstream, against the
upstream itself and a bare forwarder, in one run with one wrk client.

Rows, all started by this script on free loopback ports:

* ``upstream``: bench/_upstream.py, a canned OpenAI-compatible server (uvloop, an asyncio
  Protocol and httptools; pre-built responses), asked directly;
* ``bare``: bench/_forwarder.py, a bare Litestar handler forwarding to the upstream with aiohttp
  under uvicorn (uvloop, httptools, one worker, no access log): the ceiling for a Python
  gateway here, the baseline of the targets;
* ``hubbub``: ``hubbub serve`` with the native ``openai_provider`` (``[[plugins.openai_provider.
  models]] name = "up-gpt"``) pointing at the upstream; requests carry an API key (``hubbub keys
  create``), checked on every request, as a deployment runs; otherwise the defaults (usage
  counted by the ``budgets`` plugin in process), with event sinks off and the log at WARNING,
  as bench/overhead.py runs it;
* ``hubbub-litellm``: ``hubbub serve`` with the ``litellm_provider`` (``model =
  "openai/gpt-4o-mini"``, ``api_base`` the upstream), same API key handling.

Each is loaded by wrk (Debian package ``wrk``), one thread, at 1 and 32 connections, with a
JSON request (``chat.completion``) and a streamed one (SSE, ``stream_options.include_usage``:
the upstream sends 19 delta events, a usage event and ``[DONE]``); every reply is checked once
by hand before measuring. Rounds alternate every row (the order rotates each round); each figure
is the median of the rounds. Client, upstream and servers share this machine (2 cores here):
figures are only comparable within one run; read the ratios.

Targets (issue 19): ``hubbub`` reaches >= 60% of ``bare``'s req/s at 32 connections and adds
<= 0.3 ms to ``bare``'s p50 at 1 connection. Misses are printed as FAIL; ``--check`` makes them
the exit status. A provider that is not installed yet is reported as "not available yet" and
skipped. Errors a server logged while loaded are counted and the first one is shown (wrk leaves
streams midway at the end of every sample: that must not log errors).

    .venv/bin/python bench/gateway.py [--duration S] [--rounds N] [--quick] [--json FILE]
        [--rows upstream,bare,hubbub,hubbub-litellm] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from overhead import BIN, ROOT, create_key, environment, free_port

HERE = Path(__file__).resolve().parent
PATH = "/v1/chat/completions"
CONCURRENCIES = (1, 32)
MODES = ("json", "sse")
TARGET_RPS_SHARE = 0.60  # of bare's req/s at 32 connections
TARGET_P50_ADDED_MS = 0.3  # over bare's p50 at 1 connection
SHARED = f"{os.cpu_count()}-core machine: client, upstream and servers share it"
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "hello, how are you?"},
]
UPSTREAM_KEY = "sk-bench-upstream"
STREAMED = "".join(f"tok{i} " for i in range(1, 18))
"""The text of the upstream's stream (its 20 events: role, 17 deltas, stop, usage)."""
MARK = "HUBBUB-GATEWAY-JSON "
DONE = f"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{MARK}{{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,'
    .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class Sample:
    """One wrk run: requests a second, latency percentiles in ms, errors wrk counted."""

    rps: float
    p50: float
    p99: float
    errors: int = 0


@dataclass
class Row:
    """A server under load and how to ask it."""

    name: str
    port: int
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    scripts: dict[str, Path] = field(default_factory=dict)


def body(model: str, mode: str) -> str:
    """The request wrk sends: the same conversation for every row, only the model differs."""
    request: dict[str, object] = {"model": model, "messages": MESSAGES}
    if mode == "sse":
        request |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(request)


def lua_script(directory: Path, row: Row, mode: str) -> Path:
    """A wrk script: POST the row's body with its headers, print a JSON summary when done."""
    lines = ['wrk.method = "POST"', f"wrk.body = [==[{body(row.model, mode)}]==]"]
    for key, value in {"Content-Type": "application/json", **row.headers}.items():
        lines.append(f'wrk.headers["{key}"] = [==[{value}]==]')
    path = directory / f"{re.sub(r'[^A-Za-z0-9]+', '_', row.name)}_{mode}.lua"
    path.write_text("\n".join(lines) + "\n" + DONE)
    return path


def require_wrk() -> str:
    """wrk's path; without it, say how to install it and exit with status 2."""
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.stderr.write(
            "bench/gateway.py needs wrk, the HTTP load client (Debian package 'wrk'):\n"
            "    apt-get install wrk    (as root; run 'apt-get update' first on a new machine)\n"
        )
        sys.exit(2)
    return wrk


def wrk_run(wrk: str, row: Row, mode: str, concurrency: int, seconds: int) -> Sample:
    """Load ``row`` for ``seconds``; a non-2xx reply is a broken setup and raises."""
    command = [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, seconds)}s", "--timeout", "10s"]
    command += ["-s", str(row.scripts[mode]), f"http://127.0.0.1:{row.port}{PATH}"]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed for {row.name}: {done.stdout}{done.stderr}")
    summary = json.loads(lines[-1][len(MARK) :])
    if summary["status"] or not summary["requests"]:
        raise RuntimeError(f"{row.name} {mode} at -c {concurrency}: {summary}")
    errors = sum(summary[k] for k in ("connect", "read", "write", "timeout"))
    return Sample(
        rps=summary["requests"] / (summary["duration_us"] / 1e6),
        p50=summary["p50_us"] / 1000,
        p99=summary["p99_us"] / 1000,
        errors=errors,
    )


def check_reply(row: Row, mode: str) -> None:
    """One request by hand before measuring (wrk only counts statuses): the upstream's answer
    came back, whole."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{row.port}{PATH}",
        data=body(row.model, mode).encode(),
        headers={"Content-Type": "application/json", **row.headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            raw = reply.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{row.name} {mode}: HTTP {exc.code} {exc.read()[:500]!r}") from None
    if mode == "json":
        answer = json.loads(raw)
        content = answer["choices"][0]["message"]["content"] if "choices" in answer else ""
        ok = answer.get("object") == "chat.completion" and content.startswith("Hello!")
    else:  # hubbub may merge deltas into fewer events: compare the text they carry
        events = [e[6:] for e in raw.replace(b"\r\n", b"\n").split(b"\n\n") if e[:6] == b"data: "]
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        ok = events[-1:] == [b"[DONE]"] and text == STREAMED and bool(chunks[-1].get("usage"))
    if not ok:
        raise RuntimeError(f"{row.name} {mode}: unexpected reply {raw[:800]!r}")


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> float:
    """Seconds until ``url`` answers 200; the process's log when it exits or never does."""
    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                if reply.status == 200:
                    return time.perf_counter() - began
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s:\n{tail(log)}")


def log_errors(log: Path) -> tuple[int, str]:
    """Error records and tracebacks a server logged (at WARNING and above, as it runs here),
    and the first of them with the lines that follow it (its traceback)."""
    if not log.exists():
        return 0, ""
    lines = log.read_text(errors="replace").splitlines()
    found = [
        number
        for number, line in enumerate(lines)
        if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")
    ]
    first = "\n    ".join(lines[found[0] : found[0] + 12]) if found else ""
    return len(found), first


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def process(
    command: list[str], env: dict[str, str], ready_url: str, log: Path, timeout: float = 60
) -> Iterator[float]:
    """Run ``command`` until the block ends; yields its start-up time (to 200 on
    ``ready_url``)."""
    with log.open("wb") as output:
        started = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield wait_http(ready_url, started, log, timeout)
    finally:
        started.terminate()
        try:
            started.wait(timeout=30)
        except subprocess.TimeoutExpired:
            started.kill()
            started.wait()


def uvicorn_command(app: str, port: int) -> list[str]:
    """uvicorn as every benchmark runs it: one worker, uvloop, httptools, no access log."""
    return [
        str(BIN / "uvicorn"),
        app,
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


PROVIDERS = {
    "hubbub": (
        "up-gpt",
        '[[plugins.openai_provider.models]]\nname = "up-gpt"\nmodel = "gpt-4o-mini"\n'
        'api_base = "{api_base}"\napi_key = {{ env = "UPSTREAM_KEY" }}\n',
    ),
    "hubbub-litellm": (
        "up-litellm",
        '[[plugins.litellm_provider.models]]\nname = "up-litellm"\n'
        'model = "openai/gpt-4o-mini"\napi_base = "{api_base}"\n'
        'api_key = {{ env = "UPSTREAM_KEY" }}\n',
    ),
}


def hubbub_env(home: Path, config: Path) -> dict[str, str]:
    """A ``hubbub serve`` of this tree in its own data directory with ``config``."""
    env = environment(str(home), ROOT)
    env |= {"HUBBUB_CONFIG": str(config), "UPSTREAM_KEY": UPSTREAM_KEY}
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return env


def unavailable(env: dict[str, str]) -> str | None:
    """Why this configuration cannot run here (a provider not installed yet), or ``None``."""
    done = subprocess.run(
        [str(BIN / "hubbub"), "config", "check"], env=env, capture_output=True, text=True
    )
    if done.returncode == 0:
        return None
    return (done.stderr or done.stdout).strip().splitlines()[-1]


def start_rows(
    stack: ExitStack, wanted: list[str], work: Path
) -> tuple[list[Row], dict[str, float]]:
    """Start the upstream and every wanted server; their rows and start-up seconds."""
    rows: list[Row] = []
    started: dict[str, float] = {}
    up_port = free_port()
    api_base = f"http://127.0.0.1:{up_port}/v1"
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    command = [sys.executable, str(HERE / "_upstream.py"), str(up_port)]
    started["upstream"] = stack.enter_context(
        process(command, env, f"{api_base}/models", work / "upstream.log")
    )
    if "upstream" in wanted:
        rows.append(Row("upstream", up_port, "gpt-4o-mini"))
    if "bare" in wanted:
        port = free_port()
        forwarder = {**env, "UPSTREAM_URL": api_base}
        started["bare"] = stack.enter_context(
            process(
                uvicorn_command("_forwarder:app", port),
                forwarder,
                f"http://127.0.0.1:{port}/health/ready",
                work / "bare.log",
            )
        )
        rows.append(Row("bare", port, "gpt-4o-mini"))
    for name, (model, toml) in PROVIDERS.items():
        if name not in wanted:
            continue
        home = work / name
        home.mkdir()
        config = home / "hubbub.toml"
        config.write_text(toml.format(api_base=api_base))
        hub = hubbub_env(home, config)
        reason = unavailable(hub)
        if reason is not None:
            print(f"{name}: not available yet ({reason}); skipped")
            continue
        headers = {"Authorization": f"Bearer {create_key(hub)}"}
        port = free_port()
        command = [str(BIN / "hubbub"), "serve", "--port", str(port), "--log-level", "warning"]
        ready = f"http://127.0.0.1:{port}/health/ready"
        started[name] = stack.enter_context(process(command, hub, ready, work / f"{name}.log"))
        rows.append(Row(name, port, model, headers))
    return rows, started


def measure(
    wrk: str, rows: list[Row], rounds: int, seconds: int
) -> dict[tuple[str, str, int], list[Sample]]:
    """Every row, mode and concurrency ``rounds`` times, rows alternating (A B C A B C)."""
    samples: dict[tuple[str, str, int], list[Sample]] = {}
    for round_ in range(rounds):
        order = rows[round_ % len(rows) :] + rows[: round_ % len(rows)]
        for mode in MODES:
            for concurrency in CONCURRENCIES:
                for row in order:
                    sample = wrk_run(wrk, row, mode, concurrency, seconds)
                    samples.setdefault((row.name, mode, concurrency), []).append(sample)
    return samples


def medians(
    samples: dict[tuple[str, str, int], list[Sample]],
) -> dict[tuple[str, str, int], Sample]:
    """The median of each figure over the rounds (errors: summed)."""
    return {
        key: Sample(
            rps=statistics.median(s.rps for s in runs),
            p50=statistics.median(s.p50 for s in runs),
            p99=statistics.median(s.p99 for s in runs),
            errors=sum(s.errors for s in runs),
        )
        for key, runs in samples.items()
    }


def report(
    rows: list[Row], results: dict[tuple[str, str, int], Sample], rounds: int, seconds: int
) -> bool:
    """Print the tables and the targets; whether every target was met."""
    names = [row.name for row in rows]
    width = max(14, *(len(n) for n in names))
    met = True
    for mode in MODES:
        print(
            f"\n{mode.upper()} POST {PATH}: median of {rounds} round(s), wrk -t1 -d{seconds}s "
            f"({SHARED})"
        )
        print(
            f"  {'row':<{width}} {'c1 req/s':>9} {'c1 p50 ms':>9} {'c1 p99 ms':>9} "
            f"{'c32 req/s':>9} {'c32 p50 ms':>10} {'c32 p99 ms':>10} "
            f"{'c32 / bare':>10} {'c1 p50 - bare':>13}"
        )
        for name in names:
            one, many = results[name, mode, 1], results[name, mode, 32]
            share_text = added_text = "-"
            if ("bare", mode, 32) in results and name != "upstream":
                share_text = f"{many.rps / results['bare', mode, 32].rps:.0%}"
                added_text = f"{one.p50 - results['bare', mode, 1].p50:+.3f} ms"
            errors = one.errors + many.errors
            note = f"  ({errors} socket errors/timeouts)" if errors else ""
            print(
                f"  {name:<{width}} {one.rps:>9,.0f} {one.p50:>9.3f} {one.p99:>9.3f} "
                f"{many.rps:>9,.0f} {many.p50:>10.3f} {many.p99:>10.3f} "
                f"{share_text:>10} {added_text:>13}{note}"
            )
    if "bare" not in names:
        return met
    print(f"\ntargets, issue 19 ({SHARED}):")
    for name in ("hubbub", "hubbub-litellm"):
        if name not in names:
            print(f"  {name}: not measured")
            continue
        for mode in MODES:
            share = results[name, mode, 32].rps / results["bare", mode, 32].rps
            added = results[name, mode, 1].p50 - results["bare", mode, 1].p50
            for ok, text in (
                (share >= TARGET_RPS_SHARE, f"req/s at -c 32 >= 60% of bare: {share:.0%}"),
                (added <= TARGET_P50_ADDED_MS, f"p50 added at -c 1 <= 0.3 ms: {added:.3f} ms"),
            ):
                if name == "hubbub":
                    met &= ok
                verdict = ("PASS" if ok else "FAIL") if name == "hubbub" else "(info)"
                print(f"  {verdict:6} {name} {mode}: {text}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per sample (5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds alternating the rows (3)")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of wrk per row first (1)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 1 round of 1 s, no warm-up"
    )
    parser.add_argument(
        "--rows",
        default="upstream,bare,hubbub,hubbub-litellm",
        help="rows to run, comma-separated (default: all)",
    )
    parser.add_argument("--json", type=Path, help="also write the medians to this file")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a target is missed (default: report)"
    )
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds, args.warmup = 1, 1, 0
    wanted = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = set(wanted) - {"upstream", "bare", *PROVIDERS}
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    wrk = require_wrk()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hubbub-gateway-")))
        rows, started = start_rows(stack, wanted, work)
        for row in rows:
            for mode in MODES:
                row.scripts[mode] = lua_script(work, row, mode)
                check_reply(row, mode)
                if args.warmup:
                    wrk_run(wrk, row, mode, 8, args.warmup)
        results = medians(measure(wrk, rows, args.rounds, args.duration))
        logged = {row.name: log_errors(work / f"{row.name}.log") for row in rows}
    met = report(rows, results, args.rounds, args.duration)
    for name, (count, first) in logged.items():
        if count:  # wrk leaves streams mid-way at the end of every sample: that must be clean
            print(f"{name}: {count} errors in its log while loaded; the first:\n    {first}")
    starts = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in started.items())
    print(f"start-up to ready (one start each; {SHARED}): {starts}")
    if args.json:
        figures = {
            f"{name} {mode} c{concurrency}": asdict(sample)
            for (name, mode, concurrency), sample in results.items()
        }
        args.json.write_text(json.dumps({"machine": SHARED, "medians": figures}, indent=1))
    if args.check and not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
