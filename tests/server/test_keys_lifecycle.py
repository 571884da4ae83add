"""Keys over a server's life, with real ``hubbub serve`` processes: an account store that lost
every credential after keys were made stops the server (or, while it runs, refuses requests)
instead of re-opening local mode; the documented reset starts over on purpose; keys of the old
key database (``api_keys.sqlite3``) keep working after the upgrade; and conversations made in
local mode are reached afterwards with a key for the user ``local``."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import sqlite3
import time
from pathlib import Path

import pytest
from live_support import TRACE_MARKERS, LiveServer, assert_problem

from hubbub.auth import MARKER_NAME

TOML = "[server]\ngrace_period = 2\n"

OLD_SCHEMA = """
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL,
    roles TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""
"""The table of the key database before keys moved into the account store."""


def remove_store(home: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (home / f"accounts.sqlite3{suffix}").unlink(missing_ok=True)


def empty_store(home: Path) -> None:
    with contextlib.closing(sqlite3.connect(home / "accounts.sqlite3", timeout=10)) as db, db:
        db.execute("DELETE FROM records")


def old_key(db: sqlite3.Connection, user: str, *, roles: str = "", revoked: bool = False) -> str:
    """Store a key in an old key database as the old ``hubbub keys create`` did; the key."""
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    db.execute(
        "INSERT INTO api_keys (id, principal, name, digest, roles, created_at, revoked_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            key_id,
            user,
            f"{user}'s old key",
            hashlib.sha256(secret.encode()).hexdigest(),
            roles,
            time.time() - 86400,
            time.time() - 3600 if revoked else None,
        ),
    )
    return f"hbk_{key_id}_{secret}"


def serve_once(server: LiveServer) -> tuple[int, str]:
    """Run ``hubbub serve`` expecting it to refuse to start: its exit code and output."""
    done = server.hubbub(
        "serve", "--config", str(server.config), "--port", str(server.port), timeout=60
    )
    return done.returncode, done.stdout + done.stderr


def assert_one_line_error(output: str, *needles: str) -> str:
    for marker in TRACE_MARKERS:
        assert marker not in output, output
    lines = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, output
    for needle in needles:
        assert needle in lines[0], output
    return lines[0]


@pytest.fixture
def server(tmp_path: Path) -> LiveServer:
    """A server's directories with a key for alice (the server is not started)."""
    live = LiveServer(tmp_path, TOML)
    live.keys = {"alice": live.create_key("alice")}
    return live


def test_a_deleted_account_store_stops_the_server_instead_of_opening_it(
    server: LiveServer,
) -> None:
    remove_store(server.home)
    code, output = serve_once(server)
    assert code == 1, output
    line = assert_one_line_error(
        output, "the account store holds no API key and no user", str(server.home / MARKER_NAME)
    )
    assert "delete" in line
    assert "no credentials are set up" not in output  # never local mode
    assert "Uvicorn running" not in output
    # Nor does the key command quietly start afresh in its place.
    listed = server.hubbub("keys", "list")
    assert listed.returncode == 1
    assert_one_line_error(listed.stderr, "holds no API key")
    made = server.hubbub("keys", "create", "--user", "mallory")
    assert made.returncode == 1
    assert not made.stdout.strip()


def test_an_unreadable_old_key_database_stops_the_server(server: LiveServer) -> None:
    (server.home / "api_keys.sqlite3").write_bytes(b"garbage " * 512)
    code, output = serve_once(server)
    assert code == 1, output
    assert_one_line_error(
        output, "cannot import the API keys of the old key database", "file is not a database"
    )
    assert (server.home / "api_keys.sqlite3").exists()  # left as it was, nothing lost


def test_an_account_store_emptied_while_serving_refuses_every_request(
    server: LiveServer,
) -> None:
    """As when the shared store (a Redis flushed by mistake) loses everything under running
    servers: 503, never 401 for the key that worked, never local mode."""
    key = server.keys["alice"][1]
    server.start()
    try:
        with server.client(key) as alice, server.client() as anon:
            assert alice.get("/v1/models").status_code == 200
            assert_problem(anon.get("/v1/models"), 401)
            empty_store(server.home)
            # The key is trusted for a second after its last check, then read again.
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                response = alice.get("/v1/models")
                if response.status_code != 200:
                    break
                time.sleep(0.1)
            body = assert_problem(response, 503)
            assert body["code"] == "credentials_lost"
            assert str(server.home) not in body["detail"]  # the details are in the log
            # Callers without a key never become the local user: 401 while the server still
            # remembers that keys existed (a couple of seconds), then 503.
            statuses = []
            while time.monotonic() < deadline:
                status = anon.get("/v1/models").status_code
                statuses.append(status)
                if status == 503:
                    break
                time.sleep(0.2)
            assert statuses[-1] == 503, statuses
            assert set(statuses) <= {401, 503}, statuses
            assert_problem(anon.post("/api/conversations", json={}), 503)
            assert anon.get("/health/ready").status_code == 503
            for _ in range(20):
                assert_problem(alice.get("/v1/models"), 503)
        assert str(server.home / MARKER_NAME) in server.log()
        # Logged where it is found, throttled: not once more for every refused request.
        assert server.log().count("credentials_lost") < 5, server.log()
    finally:
        server.stop()


def test_deleting_the_marker_too_starts_over_without_keys_on_purpose(server: LiveServer) -> None:
    remove_store(server.home)
    (server.home / MARKER_NAME).unlink()
    server.start()
    try:
        with server.client() as anon:
            created = anon.post("/api/conversations", json={"title": "fresh start"})
            assert created.status_code == 201, created.text
            assert created.json()["owner"] == "local"
        assert "no credentials are set up" in server.log()
    finally:
        server.stop()


def test_keys_of_the_old_key_database_keep_working_after_the_upgrade(tmp_path: Path) -> None:
    server = LiveServer(tmp_path, TOML)
    home = server.home
    home.mkdir(parents=True)
    old = home / "api_keys.sqlite3"
    with contextlib.closing(sqlite3.connect(old)) as db, db:
        db.executescript(OLD_SCHEMA)
        alice = old_key(db, "alice")
        root = old_key(db, "root", roles="admin")
        revoked = old_key(db, "bob", revoked=True)
    (home / MARKER_NAME).write_text(f"api_key\t{old}\t2025-01-01T00:00:00Z\n")  # as it was
    for start in range(2):  # the second start imports nothing again, and still works
        server.start()
        try:
            with server.client(alice) as client:
                assert client.get("/v1/models").status_code == 200, start
                made = client.post("/api/conversations", json={"title": "after the upgrade"})
                assert made.json()["owner"] == "alice"
                mine = client.get("/api/keys").json()["keys"]
                assert [k["id"] for k in mine] == [alice.split("_")[1]]
                assert mine[0]["name"] == "alice's old key"
                assert mine[0]["roles"] == ["user"]
            with server.client(root) as client:
                assert client.get("/api/keys").json()["keys"][0]["roles"] == ["admin", "user"]
            with server.client(revoked) as client:
                assert_problem(client.get("/v1/models"), 401)  # revoked stays revoked
        finally:
            server.stop()
        assert not old.exists()
        assert (home / "api_keys.sqlite3.imported").exists()
        assert not (home / "api_keys.sqlite3.imported.2").exists()
    log = server.log()
    assert log.count("imported 3 API keys from the old key database") == 1, log
    listed = server.hubbub("keys", "list")
    assert listed.returncode == 0, listed.stderr
    states = sorted(line.split("  ")[1:3] for line in listed.stdout.splitlines())
    assert states == [["alice", "active"], ["bob", "revoked"], ["root", "active"]]


def test_local_mode_conversations_are_reached_with_a_key_for_user_local(tmp_path: Path) -> None:
    server = LiveServer(tmp_path, TOML)
    server.start()
    try:
        with server.client() as anon:
            made = anon.post("/api/conversations", json={"title": "made in local mode"})
            assert made.status_code == 201, made.text
            conversation = made.json()
            assert conversation["owner"] == "local"
    finally:
        server.stop()
    _, alice_key = server.create_key("alice")
    _, local_key = server.create_key("local")  # as docs/operations.md says
    server.start()
    try:
        path = f"/api/conversations/{conversation['id']}"
        with server.client() as anon:
            assert_problem(anon.get(path), 401)  # local mode is over
        with server.client(alice_key) as alice:
            assert_problem(alice.get(path), 404)  # someone else's
        with server.client(local_key) as local:
            assert local.get(path).json()["title"] == "made in local mode"
            listed = local.get("/api/conversations").json()["items"]
            assert [item["id"] for item in listed] == [conversation["id"]]
    finally:
        server.stop()
