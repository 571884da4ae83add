"""Helpers for the tests over real HTTP: a ``hubbub serve`` subprocess on a free loopback port,
the ``hubbub`` command in the same environment, and assertions on problem+json and metrics."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

HUBBUB = str(Path(sys.executable).parent / "hubbub")
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
PROBLEM = "application/problem+json"
TRACE_MARKERS = ("Traceback", 'File "', "site-packages", '.py", line')


def free_port() -> int:
    """A TCP port nobody listens on right now (on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(home: Path, config: Path) -> dict[str, str]:
    """This process's environment without any ``HUBBUB_*``/``OPENAI_*`` variable, plus the
    data directory and the configuration file of one test server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBBUB_", "OPENAI_"))}
    env.update({"HUBBUB_HOME": str(home), "HUBBUB_CONFIG": str(config)})
    return env


NO_CREATION_RATE = "\n[quotas]\nconversations_per_minute = 0\n"
"""Added to a test server's configuration that sets no ``[quotas]``: tests create
conversations faster than the default rate quota allows a person to (the quota tests set
their own)."""


class LiveServer:
    """One ``hubbub serve`` process and its data directory."""

    def __init__(self, root: Path, toml: str, *, host: str = "127.0.0.1") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.home = root / "home"
        self.config = root / "hubbub.toml"
        toml = textwrap.dedent(toml)
        if "[quotas]" not in toml:
            toml += NO_CREATION_RATE
        self.config.write_text(toml)
        self.log_path = root / "serve.log"
        self.env = clean_env(self.home, self.config)
        self.host = host
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.keys: dict[str, tuple[str, str]] = {}
        """Keys made by :func:`running`: user -> (key id, key)."""
        self._log: Any = None

    # -- the hubbub command ---------------------------------------------------------------

    def hubbub(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``hubbub ARGS`` with this server's data directory and configuration."""
        return subprocess.run(
            [HUBBUB, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def create_key(self, user: str) -> tuple[str, str]:
        """``hubbub keys create --user USER``: return ``(key id, key)``."""
        done = self.hubbub("keys", "create", "--user", user)
        assert done.returncode == 0, done.stderr
        key = done.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"hbk_[0-9a-f]{16}_[A-Za-z0-9_\-]{32,64}", key), done.stdout
        match = re.search(r"created API key (\S+)", done.stderr)
        assert match, done.stderr
        key_id = match.group(1)
        assert key.split("_")[1] == key_id
        return key_id, key

    # -- the server process ---------------------------------------------------------------

    def start(self, *extra: str) -> None:
        self._log = self.log_path.open("ab")
        command = [HUBBUB, "serve", "--config", str(self.config), "--host", self.host]
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port), *extra],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def wait_ready(self) -> None:
        """Poll ``/health/ready`` until it answers 200 (bounded)."""
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT
        with httpx.Client(trust_env=False, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"hubbub serve exited with {self.process.returncode}:\n{self.log()}"
                    )
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{self.url}/health/ready").status_code == 200:
                        return
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"hubbub serve not ready in {READY_TIMEOUT} s:\n{self.log()}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if the process is still there after a while; always reaps."""
        process = self.process
        if process is None:
            return None
        try:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(STOP_TIMEOUT)
            return process.returncode
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log(self) -> str:
        if self._log is not None:
            self._log.flush()
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client for this server (with ``Authorization: Bearer KEY`` if given)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.Client(
            base_url=self.url,
            headers=headers,
            trust_env=False,
            timeout=kwargs.pop("timeout", 10),
            **kwargs,
        )


@contextlib.contextmanager
def running(root: Path, toml: str, *, keys: tuple[str, ...] = ()) -> Iterator[LiveServer]:
    """A started server (keys for ``keys`` created first); stopped on exit whatever happens."""
    server = LiveServer(root, toml)
    server.keys = {user: server.create_key(user) for user in keys}
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def running_pair(
    root: Path, toml: str, *, keys: tuple[str, ...] = ("alice",)
) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Servers A and B with one configuration and one data directory (keys for ``keys`` made
    first, in ``a.keys``), as two processes of one deployment; stopped on exit."""
    a = LiveServer(root / "a", toml)
    b = LiveServer(root / "b", toml)
    b.home = a.home
    b.env = clean_env(a.home, b.config)
    a.keys = {user: a.create_key(user) for user in keys}
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


class Listener:
    """Reads one SSE stream in a thread, keeping its event frames (not the heartbeats)."""

    def __init__(self, server: LiveServer, key: str, path: str) -> None:
        self.frames: list[dict[str, Any]] = []
        self.opened = threading.Event()
        self.ended = threading.Event()
        self.stopping = threading.Event()
        self._client = server.client(key, timeout=httpx.Timeout(30, read=60))
        self._path = path
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self._path) as response:
                assert response.status_code == 200, response.read()
                self.opened.set()
                for frame in sse_frames(response.iter_lines()):
                    if frame["event"] is not None:
                        self.frames.append(frame)
                    if self.stopping.is_set():  # checked at least at every heartbeat
                        return
        except httpx.HTTPError:
            pass  # closed by __exit__
        finally:
            self.opened.set()
            self.ended.set()

    def __enter__(self) -> Listener:
        self._thread.start()
        assert self.opened.wait(30)
        time.sleep(0.2)  # the response started: its subscription is in place
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._client.close()
        self._thread.join(10)

    def wait_for(
        self, event: str, timeout: float = 30, *, count: int = 1, **fields: Any
    ) -> dict[str, Any]:
        """The data of the ``count``-th ``event`` frame (with ``fields``), waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = []
            for frame in list(self.frames):
                if frame["event"] == event:
                    data = dict(json.loads(frame["data"]))
                    if all(data.get(k) == v for k, v in fields.items()):
                        found.append(data)
            if len(found) >= count:
                return found[count - 1]
            time.sleep(0.02)
        raise AssertionError(f"no {count} {event} {fields} frames in {timeout} s: {self.frames}")

    def types(self) -> list[str]:
        """The event types received so far."""
        return [frame["event"] for frame in self.frames]


# -- assertions ----------------------------------------------------------------------------


def assert_problem(response: httpx.Response, status: int, *, field: str | None = None) -> dict:
    """``response`` is an RFC 9457 problem with ``status`` (and an error naming ``field``), and
    shows nothing of the server's insides."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert isinstance(body.get("code"), str)
    assert body["code"]
    for marker in TRACE_MARKERS:
        assert marker not in response.text, response.text
    if field is not None:
        fields = [error["field"] for error in body.get("errors", [])]
        assert field in fields, body
    return body


def metric(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` in Prometheus text (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def data_frames(lines: list[str]) -> list[Any]:
    """The JSON (or ``"[DONE]"``) of each ``data:`` line of an OpenAI-style stream."""
    frames: list[Any] = []
    for line in lines:
        if line.startswith("data:"):
            payload = line[len("data:") :].strip()
            frames.append(payload if payload == "[DONE]" else json.loads(payload))
    return frames


def read_events(
    response: httpx.Response, until: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> list[dict[str, Any]]:
    """The events of the SSE ``response`` (``{"event": type, **data}``, heartbeats left out) up
    to and including the first for which ``until`` holds, within ``timeout`` seconds."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    for frame in sse_frames(response.iter_lines()):
        if frame["event"] is not None:
            events.append({"event": frame["event"], **json.loads(frame["data"])})
            if until(events[-1]):
                return events
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"the expected event did not arrive: {events}")


def sse_frames(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse server-sent events as a browser would: one dict per frame (ended by a blank line)
    with its ``comments``, ``id``, ``event`` and ``data`` (``None`` when the frame had no
    ``data:`` line, so it dispatches nothing)."""
    frame: dict[str, Any] = {"comments": [], "id": None, "event": None, "data": None}
    for line in lines:
        if line == "":
            if frame["comments"] or frame["data"] is not None or frame["event"] or frame["id"]:
                yield frame
            frame = {"comments": [], "id": None, "event": None, "data": None}
            continue
        if line.startswith(":"):
            frame["comments"].append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            frame["data"] = value if frame["data"] is None else frame["data"] + "\n" + value
        elif name in ("id", "event"):
            frame[name] = value
