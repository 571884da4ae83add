"""``/health/ready`` over real HTTP tells the truth without telling secrets.

The truth: a database file with damaged pages, or one that can no longer grow (the server
process's file-size limit lowered below the write-ahead log, which is how a full disk looks to
SQLite: the next write fails), makes the store ``down`` and readiness 503. It used to say ok.

No secrets: callers on another machine get the overall status only; the components (paths,
key counts, local mode) go to admins and to callers on this machine.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_support import HUBBUB, READY_TIMEOUT, LiveServer

# A short probe interval, so a change shows at the next poll rather than seconds later.
FAST = """\
[plugins.sqlite_store]
health_interval = 0.1
"""


def poll_ready(server: LiveServer, until: int, timeout: float = 20.0) -> httpx.Response:
    """Poll ``/health/ready`` (from loopback) until it answers ``until`` (bounded)."""
    deadline = time.monotonic() + timeout
    with server.client() as client:
        while True:
            with contextlib.suppress(httpx.TransportError):
                response = client.get("/health/ready")
                if response.status_code == until or time.monotonic() > deadline:
                    return response
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer from {server.url}:\n{server.log()}")
            time.sleep(0.1)


def start_live(server: LiveServer) -> None:
    """Start ``server`` and wait for ``/health/live`` only: readiness may well say 503."""
    server._log = server.log_path.open("ab")
    command = [HUBBUB, "serve", "--config", str(server.config), "--host", server.host]
    server.process = subprocess.Popen(
        [*command, "--port", str(server.port)],
        env=server.env,
        stdout=server._log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + READY_TIMEOUT
    with httpx.Client(base_url=server.url, trust_env=False, timeout=2) as client:
        while time.monotonic() < deadline:
            assert server.process.poll() is None, server.log()
            with contextlib.suppress(httpx.TransportError):
                if client.get("/health/live").status_code == 200:
                    return
            time.sleep(0.05)
    raise AssertionError(f"not live in {READY_TIMEOUT} s:\n{server.log()}")


# -- the truth ---------------------------------------------------------------------------------


def test_the_full_report_reaches_a_caller_on_this_machine(anon: httpx.Client) -> None:
    body = anon.get("/health/ready").json()
    memory = body["components"]["memory"]
    assert memory["status"] == "ok"
    assert memory["backend"] == "sqlite"
    assert memory["detail"].endswith("hubbub.sqlite3")
    assert memory["latency_ms"] is not None


def test_damaged_database_pages_make_readiness_503(tmp_path: Path) -> None:
    server = LiveServer(tmp_path, FAST)
    try:
        server.start()
        with server.client() as client:
            for number in range(300):  # enough rows for the tables to span many pages
                title = f"conversation {number} " + "x" * 100
                assert client.post("/api/conversations", json={"title": title}).status_code == 201
        assert server.stop() == 0  # a clean stop moves everything into the main file
        database = server.home / "hubbub.sqlite3"
        size = database.stat().st_size
        assert size > 20 * 4096
        with database.open("r+b") as file:  # every page but the header's and the schema's
            for page in range(2, size // 4096):
                file.seek(page * 4096 + 8)
                file.write(b"\xa5" * 512)
        start_live(server)
        response = poll_ready(server, 503)
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["status"] == "down"
        memory = body["components"]["memory"]
        assert memory["status"] == "down"
        assert "damaged" in memory["detail"] or "malformed" in memory["detail"], memory
    finally:
        server.stop()


def test_a_store_that_cannot_grow_makes_readiness_503(tmp_path: Path) -> None:
    server = LiveServer(tmp_path, FAST)
    try:
        server.start()
        assert server.process is not None
        wal = server.home / "hubbub.sqlite3-wal"
        assert wal.exists()
        # The next write past the log's current end fails, as on a full disk (EFBIG instead
        # of ENOSPC: SQLite reports both as a failed write).
        limit = wal.stat().st_size
        _, hard = resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (limit, hard))
        response = poll_ready(server, 503)
        assert response.status_code == 503, response.text
        memory = response.json()["components"]["memory"]
        assert memory["status"] == "down"
        assert memory["detail"].startswith("cannot write to the database"), memory
        # lifted again: readiness comes back on its own
        resource.prlimit(server.process.pid, resource.RLIMIT_FSIZE, (hard, hard))
        assert poll_ready(server, 200).status_code == 200
    finally:
        server.stop()


# -- no secrets ------------------------------------------------------------------------------


def outward_address() -> str | None:
    """An address of this machine that is not loopback, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only routing is consulted
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server bound to this machine's outward address (so its callers are not on loopback),
    with a key for an admin and one for a user."""
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    root = tmp_path_factory.mktemp("outward")
    toml = f'[server]\nhost = "{address}"\nallowed_hosts = ["{address}"]\n'
    server = LiveServer(root, toml, host=address)
    server.url = f"http://{address}:{server.port}"
    created = server.hubbub("keys", "create", "--user", "root", "--admin")
    assert created.returncode == 0, created.stderr
    admin_key = created.stdout.strip().splitlines()[-1]
    user_key = server.create_key("ursula")[1]
    try:
        server.start()
        yield {"server": server, "admin": admin_key, "user": user_key}
    finally:
        server.stop()


def test_a_remote_caller_sees_the_status_only(remote: dict[str, Any]) -> None:
    server: LiveServer = remote["server"]
    for key in (None, remote["user"], "hbk_0123456789abcdef_not-a-real-key-at-all-0000000000"):
        with server.client(key) as client:
            response = client.get("/health/ready")
        assert response.status_code == 200, response.text  # a bad key is no reason to fail
        assert response.json() == {"status": "ok", "components": {}}
        for secret in (str(server.home), "keys", "local mode", "sqlite"):
            assert secret not in response.text


def test_a_remote_admin_sees_everything(remote: dict[str, Any]) -> None:
    server: LiveServer = remote["server"]
    with server.client(remote["admin"]) as client:
        body = client.get("/health/ready").json()
    assert body["status"] == "ok"
    assert body["components"]["memory"]["detail"] == str(server.home / "hubbub.sqlite3")
    assert "active keys" in body["components"]["auth.api_key"]["detail"]
