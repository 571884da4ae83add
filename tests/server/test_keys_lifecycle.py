"""The key database over a server's life, with real ``hubbub serve`` processes: losing it after
keys were made stops the server (or, while it runs, refuses requests) instead of re-opening local
mode; the documented reset starts over on purpose; and conversations made in local mode are
reached afterwards with a key for the user ``local``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from live_support import TRACE_MARKERS, LiveServer, assert_problem

from hubbub.auth import MARKER_NAME

TOML = "[server]\ngrace_period = 2\n"


def remove_database(home: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (home / f"api_keys.sqlite3{suffix}").unlink(missing_ok=True)


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


def test_a_deleted_key_database_stops_the_server_instead_of_opening_it(
    server: LiveServer,
) -> None:
    remove_database(server.home)
    code, output = serve_once(server)
    assert code == 1, output
    line = assert_one_line_error(
        output, "api_keys.sqlite3 is missing", str(server.home / MARKER_NAME)
    )
    assert "delete" in line
    assert "no credentials are set up" not in output  # never local mode
    assert "Uvicorn running" not in output
    # Nor does the key command quietly make an empty database in its place.
    listed = server.hubbub("keys", "list")
    assert listed.returncode == 1
    assert_one_line_error(listed.stderr, "is missing")
    assert not (server.home / "api_keys.sqlite3").exists()


def test_a_garbled_key_database_stops_the_server(server: LiveServer) -> None:
    remove_database(server.home)
    (server.home / "api_keys.sqlite3").write_bytes(b"garbage " * 512)
    code, output = serve_once(server)
    assert code == 1, output
    assert_one_line_error(output, "cannot open the API key database", "file is not a database")


def test_losing_the_key_database_while_serving_refuses_every_request(server: LiveServer) -> None:
    key = server.keys["alice"][1]
    server.start()
    try:
        with server.client(key) as alice, server.client() as anon:
            assert alice.get("/v1/models").status_code == 200
            assert_problem(anon.get("/v1/models"), 401)
            remove_database(server.home)
            body = assert_problem(alice.get("/v1/models"), 503)
            assert body["code"] == "credentials_lost"
            assert str(server.home) not in body["detail"]  # the details are in the log
            # Callers without a key never become the local user: 401 while the server still
            # remembers that keys existed (a couple of seconds), then 503.
            deadline = time.monotonic() + 15
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
    remove_database(server.home)
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
