"""``hubbub serve --workers N``: several processes share one data directory, and the same
exposure rule applies to all of them (checked once, before any worker starts)."""

from __future__ import annotations

import pytest
from live_support import LiveServer


def test_two_workers_serve_from_one_fresh_data_directory(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = LiveServer(tmp_path_factory.mktemp("workers"), "")
    try:
        server.start("--workers", "2")
        with server.client() as client:
            created = {client.post("/api/conversations", json={}).json()["id"] for _ in range(6)}
            assert len(created) == 6
            listed = {c["id"] for c in client.get("/api/conversations").json()["items"]}
            assert created <= listed  # every worker wrote to the same store
            reply = client.post(
                "/v1/chat/completions",
                json={"model": "offline/echo", "messages": [{"role": "user", "content": "w"}]},
            )
            assert reply.status_code == 200
    finally:
        server.stop()
    assert "database is locked" not in server.log()


def test_workers_refuse_a_public_address_without_keys(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = LiveServer(tmp_path_factory.mktemp("public-workers"), "", host="0.0.0.0")
    done = server.hubbub(
        "serve",
        "--config",
        str(server.config),
        "--host",
        "0.0.0.0",
        "--port",
        str(server.port),
        "--workers",
        "2",
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert [line for line in done.stderr.splitlines() if "refusing to serve" in line], output
    assert "Started parent process" not in output
