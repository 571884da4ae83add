"""Fixtures for the tests over real HTTP: one ``hubbub serve`` process for the session (alice and
bob have API keys), clients for it, and a factory for throwaway keys."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from live_support import LiveServer, running

# Small limits so that the tests can reach them: a 4 KiB body limit, a 0.2 s heartbeat.
MAIN_TOML = """\
[server]
max_body_bytes = 4096
heartbeat_interval = 0.2
grace_period = 5
"""


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The shared server. Its data directory holds keys for ``alice`` and ``bob``."""
    root: Path = tmp_path_factory.mktemp("live")
    with running(root, MAIN_TOML, keys=("alice", "bob")) as server:
        yield server


@pytest.fixture(scope="session")
def alice_key(live_server: LiveServer) -> str:
    return live_server.keys["alice"][1]


@pytest.fixture(scope="session")
def bob_key(live_server: LiveServer) -> str:
    return live_server.keys["bob"][1]


@pytest.fixture
def make_key(live_server: LiveServer) -> Callable[[str], tuple[str, str]]:
    """``make_key(user)``: a new key ``(id, key)`` for ``user``, made while the server runs."""
    return live_server.create_key


@pytest.fixture
def anon(live_server: LiveServer) -> Iterator[httpx.Client]:
    with live_server.client() as client:
        yield client


@pytest.fixture
def alice(live_server: LiveServer, alice_key: str) -> Iterator[httpx.Client]:
    with live_server.client(alice_key) as client:
        yield client


@pytest.fixture
def bob(live_server: LiveServer, bob_key: str) -> Iterator[httpx.Client]:
    with live_server.client(bob_key) as client:
        yield client
