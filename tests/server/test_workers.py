"""``hubbub serve --workers N``: refused without a shared event log and cache (workers would
split events and could reply twice to one conversation), checked once, in one line, before any
worker starts; with them, the same exposure rule applies to every worker (checked once too).
``test_workers_redis.py`` runs two workers on Redis."""

from __future__ import annotations

import pytest
from live_support import LiveServer, free_port
from redis_support import RedisServer

SHARED = """\
[redis]
url = "{url}"
[events]
backend = "redis"
[cache]
backend = "redis"
"""


def test_two_workers_without_a_shared_event_log_and_cache_are_refused(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = LiveServer(tmp_path_factory.mktemp("workers"), "")
    done = server.hubbub(
        "serve", "--config", str(server.config), "--port", str(server.port), "--workers", "2"
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        'error: --workers 2 needs a shared event log and cache: set [events] backend = "redis" '
        'and [cache] backend = "redis" with [redis] url'
    ]
    assert "Started parent process" not in done.stdout + done.stderr
    assert not (server.home / "hubbub.sqlite3").exists()  # refused before any runtime started


def test_workers_set_in_the_file_are_refused_naming_the_line(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    server = LiveServer(tmp_path_factory.mktemp("workers-file"), "[server]\nworkers = 4\n")
    done = server.hubbub("serve", "--config", str(server.config), "--port", str(free_port()))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: {server.config}:2: server.workers: 4 workers need a shared")


def test_workers_refuse_a_public_address_without_keys(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> None:
    server = LiveServer(
        tmp_path_factory.mktemp("public-workers"),
        SHARED.format(url=redis_server.url),
        host="0.0.0.0",
    )
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
