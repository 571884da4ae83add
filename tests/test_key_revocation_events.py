"""Revoking an API key is announced on every process's bus (``session.revoked`` naming the key),
whoever revoked it: the runtime itself at once, another runtime or the ``hubbub keys revoke``
command through a shared (Redis) event log. Keys revoked before a process started are never
announced by it, and no revocation is announced twice.

Real runtimes over one account store, a real ``redis-server``, the real CLI in a subprocess;
nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from redis_support import RedisServer
from support import run_cli

from hubbub.contracts import Credentials
from hubbub.events import SessionRevoked
from hubbub.events.bus import Subscription
from hubbub.runtime import Runtime
from hubbub.testing import config_for, runtime_for

DEADLINE = 20.0
"""How long a test waits for an event that must come (generous: a busy shared machine)."""


def shared_toml(redis: RedisServer | None) -> str:
    """Two runtimes (or a runtime and the CLI) over one data directory; with ``redis``, their
    events go through it, as several servers' do."""
    if redis is None:
        return ""
    return f'[redis]\nurl = "{redis.url}"\n[events]\nbackend = "redis"\n'


@contextlib.asynccontextmanager
async def runtime(home: Path, redis: RedisServer | None = None) -> AsyncIterator[Runtime]:
    """A runtime with the built-in plugins over ``home`` (its account store is
    ``home/accounts.sqlite3``)."""
    async with runtime_for(config_for(home, shared_toml(redis))) as started:
        yield started


def revocations(started: Runtime) -> Subscription:
    """Every ``session.revoked`` event published on the runtime's bus from now on."""
    return started.events.subscribe(lambda event: isinstance(event, SessionRevoked))


async def next_revocation(subscription: Subscription) -> SessionRevoked:
    event = await asyncio.wait_for(subscription.get(), DEADLINE)
    assert isinstance(event, SessionRevoked), event
    return event


async def test_revoking_is_announced_once(tmp_path: Path) -> None:
    async with runtime(tmp_path / "home") as started:
        keys = started.api_keys
        info, _ = await keys.create("alice")
        spare, _ = await keys.create("alice")
        with revocations(started) as seen:
            assert await keys.revoke(info.id)
            event = await next_revocation(seen)
            assert (event.session_id, event.principal_id, event.owner) == (
                info.id,
                "alice",
                "alice",
            )
            assert not await keys.revoke(info.id)  # revoked already: nothing to announce
            assert await keys.revoke(spare.id)  # the next event is this one: nothing between
            assert (await next_revocation(seen)).session_id == spare.id
            assert seen.pending == 0


async def test_another_runtime_s_revocation_reaches_this_one(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    home = tmp_path / "home"
    async with runtime(home, redis_server) as first, runtime(home, redis_server) as second:
        info, key = await second.api_keys.create("bob")
        assert (await first.auth.authenticate(Credentials(bearer=key))).id == "bob"
        with revocations(first) as seen_by_first, revocations(second) as seen_by_second:
            assert await second.api_keys.revoke(info.id)
            assert (await next_revocation(seen_by_second)).session_id == info.id
            event = await next_revocation(seen_by_first)  # through the shared event log
            assert (event.session_id, event.principal_id, event.owner) == (info.id, "bob", "bob")


async def test_the_cli_s_revocation_reaches_a_running_runtime(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    (tmp_path / "hubbub.toml").write_text(shared_toml(redis_server))
    async with runtime(tmp_path / "home", redis_server) as started:
        info, _ = await started.api_keys.create("carol")
        with revocations(started) as seen:
            done = await asyncio.to_thread(
                run_cli, ["keys", "revoke", info.id], cwd=tmp_path
            )  # HUBBUB_HOME is tmp_path / "home": the same data directory and account store
            assert done.returncode == 0, done.stderr
            event = await next_revocation(seen)
            assert (event.session_id, event.principal_id) == (info.id, "carol")


async def test_keys_revoked_before_start_are_not_announced(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with runtime(home) as earlier:  # make keys, revoke some, stop
        keys = earlier.api_keys
        old = [(await keys.create("dave"))[0] for _ in range(3)]
        markers = [(await keys.create("dave"))[0] for _ in range(2)]
        for info in old:
            await keys.revoke(info.id)
    for marker in markers:  # twice: a restart announces nothing old either
        async with runtime(home) as started:
            with revocations(started) as seen:
                # A key revoked now is announced: its event comes first, nothing old before.
                assert await started.api_keys.revoke(marker.id)
                assert (await next_revocation(seen)).session_id == marker.id
                assert seen.pending == 0


async def test_the_principal_names_the_key_that_authenticated_it(tmp_path: Path) -> None:
    async with runtime(tmp_path / "home") as started:
        info, key = await started.api_keys.create("erin")
        principal = await started.auth.authenticate(Credentials(bearer=key))
        assert principal is not None
        assert (principal.id, principal.credential_id) == ("erin", info.id)
