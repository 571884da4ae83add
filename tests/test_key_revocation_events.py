"""Revoking an API key is announced on every process's bus (``session.revoked`` naming the key),
whoever revoked it: the component itself at once, another runtime or the ``hubbub keys revoke``
command through each process's watcher of the key database. Keys revoked before a process
started are never announced by it, and no revocation is announced twice.

Real runtimes over one data directory, the real CLI in a subprocess; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from support import run_cli

from hubbub.contracts import Credentials
from hubbub.events import SessionRevoked
from hubbub.events.bus import Subscription
from hubbub.runtime import Runtime
from hubbub.testing import config_for, runtime_for
from hubbub_plugins.api_keys import ApiKeys

POLL = 0.05
"""The watchers' interval in these tests (seconds): short, so waiting for them is cheap."""
DEADLINE = 20.0
"""How long a test waits for an event that must come (generous: a busy shared machine)."""


@contextlib.asynccontextmanager
async def runtime(home: Path, poll: float = POLL) -> AsyncIterator[Runtime]:
    """A runtime with the built-in plugins over ``home`` whose key watcher looks every
    ``poll`` seconds."""
    config = config_for(home, f"[plugins.api_keys]\nrevocation_poll_interval = {poll}\n")
    async with runtime_for(config) as started:
        yield started


def keys_of(started: Runtime) -> ApiKeys:
    keys = started.auth_methods["api_key"]
    assert isinstance(keys, ApiKeys)
    return keys


def revocations(started: Runtime) -> Subscription:
    """Every ``session.revoked`` event published on the runtime's bus from now on."""
    return started.events.subscribe(lambda event: isinstance(event, SessionRevoked))


async def next_revocation(subscription: Subscription) -> SessionRevoked:
    event = await asyncio.wait_for(subscription.get(), DEADLINE)
    assert isinstance(event, SessionRevoked), event
    return event


async def revoke_elsewhere(home: Path, key_id: str) -> None:
    """Revoke ``key_id`` as another process's key store would (no bus, no watcher)."""
    other = ApiKeys(str(home / "api_keys.sqlite3"))
    await other.start()
    try:
        await other.revoke(key_id)
    finally:
        await other.aclose()


async def test_revoking_through_the_component_is_announced_once(tmp_path: Path) -> None:
    async with runtime(tmp_path / "home") as started:
        keys = keys_of(started)
        info, _ = await keys.create("alice")
        spare, _ = await keys.create("alice")  # its revocation marks the watcher's later looks
        with revocations(started) as seen:
            await keys.revoke(info.id)
            event = await next_revocation(seen)
            assert (event.session_id, event.principal_id, event.owner) == (
                info.id,
                "alice",
                "alice",
            )
            # The watcher sees the same revocation in the database: it must not announce it
            # again. Revoking another key elsewhere proves the watcher looked since then.
            assert await keys.check_revocations() == 0
            await revoke_elsewhere(tmp_path / "home", spare.id)
            marker = await next_revocation(seen)
            assert marker.session_id == spare.id
            assert seen.pending == 0  # nothing else: the first key was announced once
            assert await keys.check_revocations() == 0


async def test_another_runtime_s_revocation_reaches_this_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with runtime(home) as first, runtime(home) as second:
        info, _ = await keys_of(second).create("bob")
        with revocations(first) as seen_by_first, revocations(second) as seen_by_second:
            await keys_of(second).revoke(info.id)
            assert (await next_revocation(seen_by_second)).session_id == info.id
            event = await next_revocation(seen_by_first)  # through first's watcher
            assert (event.session_id, event.principal_id, event.owner) == (info.id, "bob", "bob")


async def test_the_cli_s_revocation_reaches_a_running_runtime(tmp_path: Path) -> None:
    async with runtime(tmp_path / "home") as started:
        info, _ = await keys_of(started).create("carol")
        with revocations(started) as seen:
            done = await asyncio.to_thread(
                run_cli, ["keys", "revoke", info.id], cwd=tmp_path
            )  # HUBBUB_HOME is tmp_path / "home": the same data directory
            assert done.returncode == 0, done.stderr
            event = await next_revocation(seen)
            assert (event.session_id, event.principal_id) == (info.id, "carol")


async def test_keys_revoked_before_start_are_not_announced(tmp_path: Path) -> None:
    home = tmp_path / "home"
    async with runtime(home) as earlier:  # make keys, revoke some, stop
        keys = keys_of(earlier)
        old = [(await keys.create("dave"))[0] for _ in range(3)]
        markers = [(await keys.create("dave"))[0] for _ in range(2)]
        for info in old:
            await keys.revoke(info.id)
    for marker in markers:  # twice: a restart announces nothing old either
        async with runtime(home) as started:
            with revocations(started) as seen:
                assert await keys_of(started).check_revocations() == 0
                # A key revoked now is announced: once its event is here, the watcher has
                # looked since the start, and announced nothing before it.
                await revoke_elsewhere(home, marker.id)
                assert (await next_revocation(seen)).session_id == marker.id
                assert seen.pending == 0


async def test_the_principal_names_the_key_that_authenticated_it(tmp_path: Path) -> None:
    async with runtime(tmp_path / "home") as started:
        info, key = await keys_of(started).create("erin")
        principal = await started.auth.authenticate(Credentials(bearer=key))
        assert principal is not None
        assert (principal.id, principal.credential_id) == ("erin", info.id)


async def test_a_revocation_committed_late_is_still_announced(tmp_path: Path) -> None:
    """A revocation stamped a little before one already announced (a writer whose commit
    landed later, a clock stepping back) is still found by the watcher."""
    home = tmp_path / "home"
    async with runtime(home) as started:
        keys = keys_of(started)
        first, _ = await keys.create("frank")
        late, _ = await keys.create("frank")
        with revocations(started) as seen:
            await revoke_elsewhere(home, first.id)
            assert (await next_revocation(seen)).session_id == first.id
            (listed,) = [k for k in await keys.list("frank") if k.id == first.id]
            assert listed.revoked_at is not None
            with contextlib.closing(sqlite3.connect(home / "api_keys.sqlite3")) as db, db:
                db.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE id = ?",
                    (listed.revoked_at - 1.0, late.id),
                )
            event = await next_revocation(seen)
            assert (event.session_id, event.principal_id) == (late.id, "frank")
