"""Issue 16's event benchmarks: idle SSE connections, fan-out cost, token streaming throughput.

Figures (each against its target, or against a baseline measured in the same run):

* (a) one server process holding N idle SSE connections (``--idle``, default 20,000): the
  server's RSS (``VmRSS`` of ``/proc/<pid>/status``) before and after, KiB per connection and
  the total against the target of 400 MB at 20,000; and heartbeats on time: with
  ``[server] heartbeat_interval`` short (``--heartbeat``, default 1 s), the gaps between
  heartbeats on a sample of the connections (p99 gap against the interval). The connections are
  held by helper processes of this script (raw non-blocking sockets and a selector loop, at most
  10,000 per process, each raising its open-files limit); only the sampled ones are read.
* (b) the same reply's duration with 0 and with N idle streams of another user (``--streams``,
  default 5,000): target a ratio under 1.2 (it was about 30 at 4,000 before subscriptions were
  indexed). The reply is ``offline/echo`` answering a long message word by word over the native
  API (``POST /api/conversations/{id}/messages`` with ``"wait": true``), so it publishes one
  event per merged delta.
* (d) token streaming throughput of one long ``offline/echo`` reply (``--reply-words``): tokens
  (the offline models' tokens are words) and deltas per second received by an SSE client of
  ``GET /api/conversations/{id}/events`` (raw socket, chunked and SSE framing parsed by hand),
  against the same reply's deltas read from the runtime's bus in-process without HTTP (the
  baseline, also on uvloop); the figure is the ratio.

* (c) an event published on process B and received on process A through the Redis event log
  (a real ``redis-server``), at ``--rate`` events per second (default 1,000): p50/p99/max
  latency against the same traffic as raw redis-py ``XADD``/``XREAD`` (the baseline); target
  p99 under 10 ms. See ``bench/_redis_latency.py``.

Client and server share this 2-core machine: compare the ratios, not the seconds.

    .venv/bin/python bench/events.py [--figures a,b,c,d] [--idle 20000] [--heartbeat 1]
        [--window 10] [--sample 200] [--streams 5000] [--replies 5] [--reply-words 100000]
        [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
SHARED = "client and server share this 2-core machine"
WORDS = 20_000
IDLE_TARGET = 20_000  # connections
RSS_TARGET_MB = 400  # at IDLE_TARGET connections (MB = 10**6 bytes)
ON_TIME = 1.5  # a heartbeat is on time when the p99 gap is at most this many intervals
PER_HOLDER = 10_000  # connections held by one helper process
CONNECTING = 256  # connections being set up at once by one helper


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


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` and its descendants, KiB (``VmRSS``)."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pids += [int(child) for child in children]
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


@dataclass
class Server:
    """A ``hubbub serve`` process of this tree on a fresh data directory."""

    port: int
    pid: int
    keys: dict[str, str]


@contextlib.contextmanager
def serving(
    settings: dict[str, str], users: tuple[str, ...] = ("alice", "bob")
) -> Iterator[Server]:
    """Start ``hubbub serve`` with ``settings`` (``HUBBUB_*`` variables) and one API key per
    user; stop it on exit."""
    home = tempfile.mkdtemp(prefix="hubbub-bench-events-")
    port = free_port()
    env = {
        **os.environ,
        "HUBBUB_HOME": home,
        "HUBBUB_LOGGING__LEVEL": "WARNING",
        "HUBBUB_EVENTS__SINKS": "[]",
        "HUBBUB_SERVER__HEADER_TIMEOUT": "60",
        **settings,
    }
    keys = {user: create_key(env, user) for user in users}
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
        yield Server(port, server.pid, keys)
    finally:
        server.terminate()
        server.wait(60)


def stream_head(port: int, key: str, path: str = "/api/events") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()


# -- figure (a): idle connections --------------------------------------------------------------


def hold(port: int, key: str, count: int, sample: int, window: float) -> None:
    """Helper process: open ``count`` idle ``/api/events`` streams; print ``ready`` (JSON: how
    many opened, failures by reason); on a line from stdin, drain ``sample`` of them and record
    heartbeat gaps for ``window`` seconds, print them (JSON); exit at the end of stdin."""
    raise_nofile()
    head = stream_head(port, key)
    selector = selectors.DefaultSelector()
    held: list[socket.socket] = []
    failures: dict[str, int] = {}
    started = setting_up = 0

    def fail(sock: socket.socket, reason: str) -> None:
        failures[reason] = failures.get(reason, 0) + 1
        selector.unregister(sock)
        sock.close()

    while len(held) + sum(failures.values()) < count:
        while setting_up < CONNECTING and started < count:
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            selector.register(sock, selectors.EVENT_WRITE, bytearray())
            started += 1
            setting_up += 1
        ready = selector.select(timeout=60)
        if not ready:
            failures["no answer within 60 s"] = count - len(held) - sum(failures.values())
            break
        for selected, _ in ready:
            sock, buffer = selected.fileobj, selected.data
            assert isinstance(sock, socket.socket)
            if not buffer and selected.events == selectors.EVENT_WRITE:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    fail(sock, os.strerror(error))
                    setting_up -= 1
                    continue
                sock.send(head)
                selector.modify(sock, selectors.EVENT_READ, buffer)
                continue
            try:
                data = sock.recv(4096)
            except OSError as exc:
                fail(sock, exc.strerror or type(exc).__name__)
                setting_up -= 1
                continue
            if not data:
                fail(sock, "closed before an answer")
                setting_up -= 1
                continue
            buffer += data
            if b"\r\n\r\n" in buffer:
                setting_up -= 1
                status = bytes(buffer).split(b" ", 2)[1].decode()
                if status != "200":
                    fail(sock, f"HTTP {status}")
                else:
                    selector.unregister(sock)
                    held.append(sock)
    print(json.dumps({"opened": len(held), "failures": failures}), flush=True)
    sys.stdin.readline()
    step = max(1, len(held) // max(1, sample))
    sampled = held[::step][:sample]
    arrivals: dict[int, list[float]] = {}
    closed = 0
    for sock in sampled:  # what arrived before now is not timed
        with contextlib.suppress(BlockingIOError):
            while sock.recv(65536):
                pass
        selector.register(sock, selectors.EVENT_READ, bytearray())
        arrivals[sock.fileno()] = []
    end = time.monotonic() + window
    while (left := end - time.monotonic()) > 0:
        for selected, _ in selector.select(timeout=left):
            sock, tail = selected.fileobj, selected.data
            assert isinstance(sock, socket.socket)
            data = sock.recv(65536)
            if not data:
                closed += 1
                selector.unregister(sock)
                continue
            now = time.monotonic()
            # An SSE comment (the heartbeat) is a line starting with ":".
            arrivals[sock.fileno()] += [now] * (bytes(tail) + data).count(b"\n:")
            tail[:] = data[-1:]
    gaps = [b - a for times in arrivals.values() for a, b in itertools.pairwise(times)]
    beats = sum(len(times) for times in arrivals.values())
    print(json.dumps({"gaps": gaps, "beats": beats, "closed": closed}), flush=True)
    sys.stdin.read()


def figure_a(args: argparse.Namespace) -> None:
    from hubbub_server.fdlimit import fd_reserve

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    fits = hard - fd_reserve(hard) - 128  # the server keeps a reserve, and files of its own
    wanted = args.idle
    count = min(wanted, fits)
    settings = {
        "HUBBUB_SERVER__HEARTBEAT_INTERVAL": str(args.heartbeat),
        "HUBBUB_SERVER__MAX_CONNECTIONS": str(wanted + 512),
        "HUBBUB_EVENTS__MAX_STREAMS_PER_CALLER": str(min(100_000, wanted + 10)),
        "HUBBUB_EVENTS__MAX_STREAMS": str(wanted + 100),
    }
    with serving(settings) as server:
        key = server.keys["bob"]
        with socket.create_connection(("127.0.0.1", server.port)) as warm:  # load what a
            warm.sendall(stream_head(server.port, key))  # stream needs before measuring
            warm.recv(4096)
        time.sleep(1)
        before = rss_kib(server.pid)
        shares = [PER_HOLDER] * (count // PER_HOLDER) + [count % PER_HOLDER] * bool(
            count % PER_HOLDER
        )
        holders = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--hold",
                    f"{server.port},{key},{share},{round(args.sample * share / count)},"
                    f"{args.window}",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for share in shares
        ]
        began = time.perf_counter()
        try:
            opened, failures = 0, {}
            for holder in holders:
                assert holder.stdout is not None
                report = json.loads(holder.stdout.readline() or "{}")
                opened += report.get("opened", 0)
                for reason, number in report.get("failures", {"helper failed": 1}).items():
                    failures[reason] = failures.get(reason, 0) + number
            setup = time.perf_counter() - began
            time.sleep(2)
            after = rss_kib(server.pid)
            gaps: list[float] = []
            beats = closed = 0
            cpu_before, window_began = cpu_seconds(server.pid), time.perf_counter()
            for holder in holders:
                assert holder.stdin is not None
                holder.stdin.write("go\n")
                holder.stdin.flush()
            for holder in holders:
                assert holder.stdout is not None
                report = json.loads(holder.stdout.readline() or "{}")
                gaps += report.get("gaps", [])
                beats += report.get("beats", 0)
                closed += report.get("closed", 0)
            busy = (cpu_seconds(server.pid) - cpu_before) / (time.perf_counter() - window_began)
            after = max(after, rss_kib(server.pid))
        finally:
            for holder in holders:
                with contextlib.suppress(OSError):
                    assert holder.stdin is not None
                    holder.stdin.close()
            for holder in holders:
                holder.wait(60)
    print(
        f"(a) one server process holding idle SSE streams (GET /api/events, one user); "
        f"open-files hard limit {hard}; {SHARED}"
    )
    if count < wanted:
        print(
            f"  this machine's hard open-files limit ({hard}) lets one process hold about {fits} "
            f"connections: measured {count}, not {wanted}; the total is projected from the "
            "per-connection cost"
        )
    if failures:
        print(f"  not opened: {sum(failures.values())} ({failures})")
    per = (after - before) / max(1, opened)
    print(
        f"  opened {opened} in {setup:.1f} s; server RSS {before / 1024:.1f} MiB before, "
        f"{after / 1024:.1f} MiB after: {per:.1f} KiB per connection"
    )
    measured = opened >= IDLE_TARGET
    projected = (after if measured else before + per * IDLE_TARGET) * 1024 / 1e6  # MB
    verdict = "PASS" if projected < RSS_TARGET_MB and opened else "FAIL"
    at = "measured" if measured else "projected"
    print(
        f"  RSS at {IDLE_TARGET} connections ({at}): {projected:.0f} MB "
        f"({projected * 1e6 / 2**20:.0f} MiB)  {verdict} (target < {RSS_TARGET_MB} MB; "
        "about 32.5 KiB per connection before)"
    )
    if gaps:
        p50, p99 = percentile(gaps, 0.5), percentile(gaps, 0.99)
        verdict = "PASS" if p99 <= ON_TIME * args.heartbeat and not closed else "FAIL"
        print(
            f"  heartbeats every {args.heartbeat:g} s, {len(gaps)} gaps on {args.sample} sampled "
            f"streams over {args.window:g} s: p50 {p50:.2f} s, p99 {p99:.2f} s "
            f"({p99 / args.heartbeat:.2f}x the interval), max {max(gaps):.2f} s; "
            f"{closed} closed; server CPU meanwhile {busy:.0%} of a core  {verdict} "
            f"(target p99 <= {ON_TIME}x the interval)  [{SHARED}]"
        )
    else:
        print(f"  heartbeats: none measured ({beats} received, {closed} streams closed)  FAIL")


# -- figure (b): fan-out cost ------------------------------------------------------------------


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
    head = stream_head(port, key)
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


def figure_b(args: argparse.Namespace) -> None:
    limit = raise_nofile()
    settings = {
        "HUBBUB_SERVER__MAX_CONNECTIONS": str(args.streams + 512),
        "HUBBUB_EVENTS__MAX_STREAMS_PER_CALLER": str(args.streams + 10),
        "HUBBUB_EVENTS__MAX_STREAMS": str(args.streams + 100),
    }
    with serving(settings) as server:
        port, alice, bob = server.port, server.keys["alice"], server.keys["bob"]
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
    print(
        f"(b) reply of {WORDS} words (offline/echo, native API, wait=true), median of "
        f"{args.replies}; open-files limit {limit}; {SHARED}"
    )
    print(f"  with 0 idle streams of another user:     {alone * 1000:8.1f} ms  [{SHARED}]")
    print(
        f"  with {args.streams} idle streams of another user: {crowded * 1000:8.1f} ms  [{SHARED}]"
    )
    ratio = crowded / alone
    verdict = "PASS" if ratio < 1.2 else "FAIL"
    print(f"  ratio {ratio:.2f}  {verdict} (target < 1.2; about 30 at 4,000 before indexing)")


# -- figure (d): token streaming throughput ----------------------------------------------------


@dataclass
class Received:
    """One reply as a reader received it."""

    seconds: float  # from sending the message to the reply's message.completed
    first: float  # from sending the message to its first delta
    deltas: int
    text: str


def read_sse_reply(
    sock: socket.socket, started: threading.Event, began: list[float], done: list[Received]
) -> None:
    """Read an SSE response (HTTP/1.1, chunked) from ``sock`` until ``message.completed``;
    append what was received to ``done``. Sets ``started`` once the response's head is in;
    ``began[0]`` is when the message was sent."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    started.set()
    assert head.split(b" ", 2)[1] == b"200", head
    chunked = b"transfer-encoding: chunked" in head.lower()
    events = b""
    pieces: list[str] = []
    first = 0.0
    while True:
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the stream ended before message.completed")
        buffer += data
        if chunked:
            while (line_end := buffer.find(b"\r\n")) >= 0:
                size = int(buffer[:line_end].split(b";")[0], 16)
                if len(buffer) < line_end + 2 + size + 2:
                    break
                events += buffer[line_end + 2 : line_end + 2 + size]
                buffer = buffer[line_end + 2 + size + 2 :]
        else:
            events, buffer = events + buffer, b""
        frames = events.replace(b"\r\n", b"\n").split(b"\n\n")
        events = frames.pop()
        for frame in frames:
            kind = data_line = b""
            for line in frame.split(b"\n"):
                if line.startswith(b"event: "):
                    kind = line[7:]
                elif line.startswith(b"data: "):
                    data_line = line[6:]
            if kind == b"message.delta":
                first = first or time.perf_counter()
                pieces.append(json.loads(data_line)["delta"])
            elif kind == b"message.completed":
                now = time.perf_counter()
                done.append(
                    Received(now - began[0], first - began[0], len(pieces), "".join(pieces))
                )
                return


def http_reply(port: int, key: str, text: str) -> Received:
    """Follow a conversation's SSE stream, send ``text`` (no wait) and read its reply."""
    conversation = call(port, "POST", "/api/conversations", key, {})
    assert isinstance(conversation, dict)
    path = f"/api/conversations/{conversation['id']}/events"
    began: list[float] = [0.0]
    done: list[Received] = []
    started = threading.Event()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(stream_head(port, key, path))
        reader = threading.Thread(target=read_sse_reply, args=(sock, started, began, done))
        reader.start()
        started.wait(60)
        time.sleep(0.1)  # the stream subscribes as its response starts: let it
        began[0] = time.perf_counter()
        call(
            port,
            "POST",
            f"/api/conversations/{conversation['id']}/messages",
            key,
            {"content": text},
        )
        reader.join(300)
    assert done, "no reply received"
    return done[0]


class InProcess:
    """The baseline of figure (d): replies read from a runtime's bus in this process, no HTTP."""

    def __init__(self, text: str) -> None:
        from hubbub.config import load_config
        from hubbub.models import Principal
        from hubbub.runtime import Runtime

        home = tempfile.mkdtemp(prefix="hubbub-bench-events-")
        env = {
            "HUBBUB_HOME": home,
            "HUBBUB_LOGGING__LEVEL": "WARNING",
            "HUBBUB_EVENTS__SINKS": "[]",
        }
        self.runtime = Runtime.from_config(load_config(env=env))
        self.owner = Principal(id="alice", name="alice", auth_method="bench")
        self.text = text

    async def reply(self) -> Received:
        """Send the message in a new conversation; read its reply from the bus."""
        from hubbub.events import MessageCompleted, MessageDelta

        conversations = self.runtime.conversations
        conversation = await conversations.create(self.owner)
        pieces: list[str] = []
        first = 0.0
        with self.runtime.events.subscribe(
            owner=self.owner.id, conversation_id=conversation.id
        ) as subscription:
            began = time.perf_counter()
            await conversations.post_message(self.owner, conversation.id, self.text)
            async for event in subscription:
                if isinstance(event, MessageDelta):
                    first = first or time.perf_counter()
                    pieces.append(event.delta)
                elif isinstance(event, MessageCompleted):
                    now = time.perf_counter()
                    return Received(now - began, first - began, len(pieces), "".join(pieces))
        raise ConnectionError("the subscription ended before message.completed")


def figure_d(args: argparse.Namespace) -> None:
    import uvloop

    from hubbub_plugins.offline_provider import count_tokens

    text = " ".join(f"w{n}" for n in range(args.reply_words))
    settings = {"HUBBUB_SERVER__MAX_BODY_BYTES": str(max(1 << 20, 2 * len(text)))}
    direct: list[Received] = []
    over_http: list[Received] = []
    # Rounds alternate (in-process, then over HTTP), so drift on the shared machine hits both.
    with serving(settings) as server, asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        baseline = InProcess(text)
        runner.run(baseline.runtime.start())
        try:
            for round_ in range(args.replies + 1):  # the first warms up
                got = (
                    runner.run(baseline.reply()),
                    http_reply(server.port, server.keys["alice"], text),
                )
                if round_:
                    direct.append(got[0])
                    over_http.append(got[1])
        finally:
            runner.run(baseline.runtime.stop())

    def summary(replies: list[Received]) -> tuple[float, float, float, float, int]:
        seconds = statistics.median(r.seconds for r in replies)
        tokens = count_tokens(replies[0].text)
        deltas = statistics.median(r.deltas for r in replies)
        first = statistics.median(r.first for r in replies)
        return tokens / seconds, deltas / seconds, seconds, first, tokens

    base, sse = summary(direct), summary(over_http)
    print(
        f"(d) one offline/echo reply of {base[4]} tokens (words), median of {args.replies} "
        f"alternating rounds; timed from sending the message to its message.completed event; "
        f"{SHARED}"
    )
    for label, figures in (("in-process, from the bus (baseline)", base), ("SSE client", sse)):
        tokens_per_s, deltas_per_s, seconds, first, _ = figures
        print(
            f"  {label:36s} {tokens_per_s:10.0f} tokens/s  {deltas_per_s:7.0f} deltas/s  "
            f"{seconds * 1000:7.1f} ms (first delta {first * 1000:.1f} ms)  [{SHARED}]"
        )
    if sse[4] != base[4]:
        print(f"  FAIL: the SSE client received {sse[4]} tokens, the bus {base[4]}")
    pairs = sorted(b.seconds / h.seconds for b, h in zip(direct, over_http, strict=True))
    print(
        f"  SSE / in-process throughput: {sse[0] / base[0]:.2f} (rounds {pairs[0]:.2f} to "
        f"{pairs[-1]:.2f}; no target: the cost of HTTP)"
    )


def figure_c(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _redis_latency import figure_c as measure

    measure(args.rate, args.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", default="a,b,c,d", help="which figures, e.g. a,d")
    parser.add_argument("--idle", type=int, default=IDLE_TARGET, help="(a) idle streams")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="(a) heartbeat interval, s")
    parser.add_argument("--window", type=float, default=10.0, help="(a) seconds of heartbeats")
    parser.add_argument("--sample", type=int, default=200, help="(a) streams whose gaps count")
    parser.add_argument("--streams", type=int, default=5000, help="(b) idle streams")
    parser.add_argument("--replies", type=int, default=5, help="(b, d) replies per median")
    parser.add_argument("--reply-words", type=int, default=100_000, help="(d) words in the reply")
    parser.add_argument("--rate", type=int, default=1000, help="(c) events per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="(c) seconds of publishing")
    parser.add_argument("--hold", help=argparse.SUPPRESS)  # helper process of figure (a)
    args = parser.parse_args()
    if args.hold:
        port, key, count, sample, window = args.hold.split(",")
        hold(int(port), key, int(count), int(sample), float(window))
        return
    figures = {"a": figure_a, "b": figure_b, "c": figure_c, "d": figure_d}
    for name in args.figures.split(","):
        figures[name.strip()](args)


if __name__ == "__main__":
    main()
