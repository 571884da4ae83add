"""Fixtures: a configuration and Runtime per test, rooted in ``tmp_path``."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from openai_upstream import OpenAIUpstream
from postgres_support import PostgresServer
from redis_support import RedisServer
from support import (
    ACME_MODULE,
    BROKEN_MODULE,
    RecordingPlugin,
    install_distribution,
    recording_toml,
    toml,
)

from hubbub.config import Config, load_config
from hubbub.models import Principal
from hubbub.plugins import load_plugins
from hubbub.runtime import Runtime


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def make_config(home: Path) -> Callable[..., Config]:
    """``make_config(text, env=...)``: the configuration for ``text`` (dedented, after
    :data:`BASE_TOML`), with ``home`` in ``tmp_path`` and nothing read from ``os.environ``."""

    def make(text: str = "", env: dict[str, str] | None = None) -> Config:
        return load_config(text=toml(text), env={"HUBBUB_HOME": str(home), **(env or {})})

    return make


@pytest.fixture
def make_runtime(make_config: Callable[..., Config]) -> Callable[..., Runtime]:
    """``make_runtime(text, *plugins, entry_points=True)``: an unstarted Runtime over the real
    entry points (unless ``entry_points=False``) plus ``plugins`` defined in the test."""

    def make(text: str = "", *extra: object, entry_points: bool = True) -> Runtime:
        config = make_config(text)
        plugins = load_plugins(
            disabled=config.plugins.disabled, extra=extra, entry_points=entry_points, env={}
        )
        return Runtime.from_config(config, plugins=plugins)

    return make


@pytest.fixture
def principal() -> Principal:
    return Principal(id="user-1", name="Ada")


@pytest.fixture
def recording_runtime(home: Path) -> Callable[..., Runtime]:
    """``recording_runtime(log, *plugins, runtime_toml="", env=None, **behaviour)``: a Runtime
    whose every component comes from a :class:`RecordingPlugin` writing to ``log`` (misbehaving
    per kind as ``behaviour`` says), plus ``plugins``; no entry points."""

    def make(
        log: list[str],
        *extra: object,
        runtime_toml: str = "",
        env: dict[str, str] | None = None,
        **behaviour: Any,
    ) -> Runtime:
        text = recording_toml() + textwrap.dedent(runtime_toml)
        config = load_config(text=text, env={"HUBBUB_HOME": str(home), **(env or {})})
        plugins = load_plugins(
            extra=[RecordingPlugin(log, **behaviour), *extra], entry_points=False, env={}
        )
        return Runtime.from_config(config, plugins=plugins)

    return make


@pytest.fixture(scope="session")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed distribution ``acme-hubbub`` 1.2.3, whose entry point
    ``acme`` registers cache backend ``acme``."""
    root = tmp_path_factory.mktemp("acme")
    return install_distribution(
        root,
        "acme-hubbub",
        "1.2.3",
        {"acme_hubbub_plugin": ACME_MODULE},
        {"acme": "acme_hubbub_plugin"},
    )


@pytest.fixture(scope="session")
def broken_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed distribution ``broken-hubbub`` 0.0.1, whose entry point
    ``broken`` fails to import."""
    root = tmp_path_factory.mktemp("broken")
    return install_distribution(
        root,
        "broken-hubbub",
        "0.0.1",
        {"acme_broken": BROKEN_MODULE},
        {"broken": "acme_broken"},
    )


@pytest.fixture(scope="session")
def impostor_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed distribution ``impostor-hubbub`` 6.6.6, whose entry
    point has the same name as the built-in ``log_sink``."""
    root = tmp_path_factory.mktemp("impostor")
    return install_distribution(
        root,
        "impostor-hubbub",
        "6.6.6",
        {"impostor_mod": "IMPOSTOR = True\n"},
        {"log_sink": "impostor_mod"},
    )


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` on a free loopback port, stopped after the test."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain redis-py client of :func:`redis_server`, to look at what hubbub stored."""
    client = redis.asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh PostgreSQL server (a cluster of its own) on a free loopback port, stopped after
    the test: for tests that stop, kill or restart it."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_session() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session (started on first use): tests create a
    database of their own on it (:meth:`PostgresServer.create_database`), or use owners of
    their own, and never stop it."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def openai_upstream() -> Iterator[OpenAIUpstream]:
    """A real HTTP server speaking the OpenAI API (``tests/openai_upstream.py``), serving from
    a thread of the test process on a free port; its base URL is ``openai_upstream.url``."""
    with OpenAIUpstream() as upstream:
        yield upstream


@pytest.fixture
def debug_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` that accepts ``DEBUG`` from loopback (``DEBUG SLEEP``)."""
    server = RedisServer(tmp_path / "debug-redis")
    server.extra = ["--enable-debug-command", "local"]
    server.start()
    try:
        yield server
    finally:
        server.stop()
