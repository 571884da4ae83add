"""API keys in the account store (``runtime.api_keys``, and the ``api_key`` method over it), in real
runtimes over real SQLite account stores: what a key proves, how a key is refused (one message,
a reason in the log), the per-process cache keyed on the whole key, revocation (at once here,
within a second on another process sharing the store), ``last_used_at``, expiry, the rule that
nobody grants more than they hold, and the per-key request limit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from hubbub import hookimpl
from hubbub.auth import apikeys
from hubbub.auth.apikeys import ApiKeys
from hubbub.auth.keyfiles import write_keyring
from hubbub.auth.scopes import check_model
from hubbub.auth.tokens import Keyring
from hubbub.contracts import Credentials
from hubbub.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    PermissionDeniedError,
    TooManyRequestsError,
)
from hubbub.events import SessionRevoked
from hubbub.models import Principal
from hubbub.registry import ComponentContext, Registrar
from hubbub.runtime import Runtime
from hubbub.testing import config_for, runtime_for
from hubbub_plugins.sqlite_accounts import SQLiteAccountStore

SLOW_CHECKS = "[sessions]\ncheck_interval = 60\n"
"""A process trusting a checked key for a minute: what is refused sooner is refused by an
event or by this process's own revocation, not by reading the store again."""


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    async with runtime_for(config_for(tmp_path)) as started:
        yield started


def keys_of(runtime: Runtime) -> ApiKeys:
    return runtime.api_keys


async def who(runtime: Runtime, key: str) -> Principal:
    return await runtime.auth.authenticate(Credentials(bearer=key))


def shared_accounts(path: Path) -> object:
    """A plugin whose account store ``shared`` is one SQLite file: two runtimes with it are
    two processes (two hosts) sharing their keys."""

    class Plugin:
        @hookimpl
        def register_account_stores(self, register: Registrar) -> None:
            def build(context: ComponentContext[None]) -> SQLiteAccountStore:
                return SQLiteAccountStore(str(path))

            register("shared", build)

    return Plugin()


# -- what a key proves ------------------------------------------------------------------------


async def test_a_key_authenticates_its_principal(runtime: Runtime) -> None:
    info, key = await keys_of(runtime).create("alice", roles=("user", "admin"), name="laptop")
    assert key.startswith(f"hbk_{info.id}_")
    principal = await who(runtime, key)
    assert (principal.id, principal.auth_method, principal.roles) == (
        "alice",
        "api_key",
        frozenset({"admin", "user"}),
    )
    assert principal.credential_id == info.id
    assert principal.scopes == frozenset()
    assert principal.expires_at is None


async def test_other_tokens_are_left_to_other_methods(runtime: Runtime) -> None:
    keys = keys_of(runtime)
    for bearer in ("eyJhbGciOi.a.jwt", "hbk_short", "hbk_0123456789abcdef_" + "x" * 10, ""):
        assert await keys.verify(bearer) is None
    method = runtime.auth_methods["api_key"]
    assert await method.authenticate(Credentials()) is None


async def test_unknown_forged_and_mismatched_keys_get_one_message_and_a_logged_reason(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    keys = keys_of(runtime)
    info, key = await keys.create("alice")
    other, other_key = await keys.create("bob")
    assert (await keys.verify(key)) is not None  # accepted, hence remembered
    secret = key.split("_", 2)[2]
    messages = set()
    with caplog.at_level(logging.INFO, logger="hubbub.auth"):
        for forged in (
            f"hbk_{info.id}_{'A' * 43}",  # the remembered id with a made-up secret
            f"hbk_{'f' * 16}_{secret}",  # the right secret under an unknown id
            f"hbk_{other.id}_{secret}",  # ... under another key's id
            key + "x",
        ):
            with pytest.raises(AuthenticationError) as caught:
                await keys.verify(forged)
            messages.add(str(caught.value))
    assert messages == {"the API key is not valid"}
    assert "unknown key" in caplog.text
    assert "id does not match" in caplog.text
    assert secret not in caplog.text
    assert (await keys.verify(other_key)) is not None


async def test_revoked_and_expired_keys_are_refused_with_their_reason_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime_for(config_for(tmp_path, SLOW_CHECKS)) as runtime:
        keys = keys_of(runtime)
        revoked, revoked_key = await keys.create("alice")
        soon = time.time() + 0.5
        expiring, expiring_key = await keys.create("alice", expires_at=soon)
        assert (await who(runtime, revoked_key)).id == "alice"  # remembered for a minute
        principal = await who(runtime, expiring_key)
        assert principal.expires_at == pytest.approx(soon)
        assert await keys.revoke(revoked.id)
        await asyncio.sleep(max(0.0, soon - time.time()) + 0.05)
        with caplog.at_level(logging.INFO, logger="hubbub.auth"):
            for key in (revoked_key, expiring_key):
                with pytest.raises(AuthenticationError, match="the API key is not valid"):
                    await who(runtime, key)
        assert f"API key {revoked.id} refused: revoked" in caplog.text
        assert f"API key {expiring.id} refused: expired" in caplog.text
        listed = {info.id: info for info in await keys.list("alice")}
        assert listed[revoked.id].revoked_at is not None
        assert listed[expiring.id].expires_at == pytest.approx(soon)


async def test_revoking_every_key_keeps_the_method_provisioned(runtime: Runtime) -> None:
    method = runtime.auth_methods["api_key"]
    assert not await method.is_provisioned()
    info, _ = await keys_of(runtime).create("alice")
    assert await method.is_provisioned()
    await keys_of(runtime).revoke(info.id)
    assert await method.is_provisioned()  # a server must not fall back to local mode


async def test_listing_never_shows_secrets_or_digests(runtime: Runtime) -> None:
    keys = keys_of(runtime)
    created, key = await keys.create("alice", name="laptop", scopes=["chat"])
    await asyncio.sleep(0.01)
    newer, _ = await keys.create("alice", name="desk")
    await keys.create("bob")
    listed = await keys.list("alice")
    assert [info.id for info in listed] == [newer.id, created.id]  # newest first
    assert (listed[1].name, listed[1].scopes, listed[1].revoked_at) == ("laptop", ["chat"], None)
    assert len(await keys.list()) == 3
    secret = key.split("_", 2)[2]
    shown = msgspec.json.encode(listed).decode()
    assert secret not in shown
    assert apikeys.digest(secret) not in shown
    assert "digest" not in shown


async def test_what_a_key_is_made_with_is_checked(runtime: Runtime) -> None:
    keys = keys_of(runtime)
    served = [model.id for model in runtime.llm.models()]
    cases = [
        ({"scopes": ["has space"]}, "scopes[0]"),
        ({"scopes": ["model:offline/echo"]}, "scopes[0]"),
        ({"models": [""]}, "models[0]"),
        ({"models": ["offline/nope"], "known_models": served}, "models"),
        ({"expires_at": time.time() - 1}, "expires_at"),
        ({"expires_at": 1e13}, "expires_at"),
        ({"roles": ["bad role"]}, "roles"),
        ({"name": "x" * 101}, "name"),
    ]
    for fields, field in cases:
        with pytest.raises(InvalidRequestError) as caught:
            await keys.create("alice", **fields)  # type: ignore[arg-type]
        assert caught.value.field == field, fields
    with pytest.raises(InvalidRequestError):
        await keys.create("not a name")
    assert await keys.list() == []  # nothing was stored


async def test_an_owner_holds_a_bounded_number_of_active_keys(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apikeys, "MAX_ACTIVE_PER_OWNER", 2)
    keys = keys_of(runtime)
    first, _ = await keys.create("alice")
    await keys.create("alice")
    with pytest.raises(ConflictError, match="revoke one first"):
        await keys.create("alice")
    await keys.create("bob")  # others are not affected
    await keys.revoke(first.id)
    await keys.create("alice")  # a revoked key does not count


# -- the cache and revocation ---------------------------------------------------------------


async def test_a_checked_key_costs_no_store_read_until_it_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with runtime_for(config_for(tmp_path, SLOW_CHECKS)) as runtime:
        keys = keys_of(runtime)
        _, key = await keys.create("alice")
        reads = 0
        find = keys.records.store.find

        async def counting(kind: str, lookup: str) -> object:
            nonlocal reads
            reads += 1
            return await find(kind, lookup)

        monkeypatch.setattr(keys.records.store, "find", counting)
        for _ in range(20):
            assert (await keys.verify(key)) is not None
        assert reads == 1
        keys.check_interval = 0  # stale at once: every check reads the store
        for _ in range(3):
            await keys.verify(key)
        assert reads == 4


async def test_revoking_refuses_the_key_at_once_and_announces_it(tmp_path: Path) -> None:
    async with runtime_for(config_for(tmp_path, SLOW_CHECKS)) as runtime:
        keys = keys_of(runtime)
        info, key = await keys.create("alice")
        assert (await who(runtime, key)).id == "alice"  # remembered for a minute
        with runtime.events.subscribe(lambda e: isinstance(e, SessionRevoked)) as seen:
            assert not await keys.revoke(info.id, owner="bob")  # not bob's: nothing happens
            assert (await who(runtime, key)).id == "alice"
            assert await keys.revoke(info.id, owner="alice")
            event = await asyncio.wait_for(seen.get(), 10)
            assert isinstance(event, SessionRevoked)
            assert (event.session_id, event.principal_id, event.owner) == (
                info.id,
                "alice",
                "alice",
            )
            assert not await keys.revoke(info.id)  # once
            await asyncio.sleep(0.05)
            assert seen.pending == 0
        with pytest.raises(AuthenticationError):
            await who(runtime, key)


async def test_a_revocation_event_from_elsewhere_empties_this_process_s_cache(
    tmp_path: Path,
) -> None:
    """The event is what another process publishes when it revokes a key: this one must stop
    trusting the key at once, although it would have trusted it for another minute."""
    async with runtime_for(config_for(tmp_path, SLOW_CHECKS)) as runtime:
        keys = keys_of(runtime)
        info, key = await keys.create("alice")
        assert (await who(runtime, key)).id == "alice"
        item = await keys.records.get(info.id)
        assert item is not None  # revoke it behind this process's back, as another would
        revoked = msgspec.structs.replace(item.value, revoked_at=time.time())
        await keys.records.replace(revoked, item.version)
        assert (await who(runtime, key)).id == "alice"  # still trusted: nobody said
        runtime.events.publish(SessionRevoked(session_id=info.id, principal_id="alice"))
        for _ in range(200):
            try:
                await who(runtime, key)
            except AuthenticationError:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the revocation event did not reach the cache")


async def test_two_processes_sharing_the_store_agree_within_a_second(tmp_path: Path) -> None:
    shared = shared_accounts(tmp_path / "accounts.sqlite3")
    keyring = tmp_path / "keys.json"  # hosts sharing an account store share a keyring too
    write_keyring(keyring, Keyring.generate())
    toml = f'[accounts]\nbackend = "shared"\n[sessions]\nsigning_keys = "{keyring}"\n'
    async with (
        runtime_for(config_for(tmp_path / "a", toml), [shared]) as first,
        runtime_for(config_for(tmp_path / "b", toml), [shared]) as second,
    ):
        info, key = await first.api_keys.create("alice", models=["offline/echo"])
        principal = await who(second, key)  # made on one host, known on the other
        assert (principal.id, principal.credential_id) == ("alice", info.id)
        assert principal.scopes == frozenset({"model:offline/echo"})
        assert [k.id for k in await second.api_keys.list("alice")] == [info.id]
        assert await first.api_keys.revoke(info.id)
        began = time.monotonic()
        while True:  # the events of these two runtimes are not shared: the store is
            try:
                await who(second, key)
            except AuthenticationError:
                break
            assert time.monotonic() - began < 1.0 + 1.0  # check_interval plus slack
            await asyncio.sleep(0.05)
        assert not await second.api_keys.revoke(info.id)  # revoked already, for both


async def test_last_used_is_written_in_the_background_at_most_once_a_minute(
    runtime: Runtime,
) -> None:
    keys = keys_of(runtime)
    info, key = await keys.create("alice")
    assert (await keys.get(info.id)).last_used_at is None
    before = time.time()
    await who(runtime, key)
    for _ in range(200):
        used = (await keys.get(info.id)).last_used_at
        if used is not None:
            break
        await asyncio.sleep(0.02)
    assert used is not None
    assert used >= before
    item = await keys.records.get(info.id)
    assert item is not None
    version = item.version
    keys.check_interval = 0  # read the store on every check: the write is not repeated
    for _ in range(10):
        await who(runtime, key)
    await asyncio.sleep(0.2)
    item = await keys.records.get(info.id)
    assert item is not None
    assert item.version == version
    assert item.value.last_used_at == used


# -- nobody grants more than they hold --------------------------------------------------------


def caller(**fields: object) -> Principal:
    base: dict[str, object] = {"id": "alice", "auth_method": "local", "roles": frozenset({"user"})}
    return Principal(**{**base, **fields})  # type: ignore[arg-type]


async def test_a_user_cannot_grant_roles_they_do_not_hold(runtime: Runtime) -> None:
    keys = keys_of(runtime)
    with pytest.raises(PermissionDeniedError, match="admin"):
        await keys.grant(caller(), roles=["admin"])
    info, _ = await keys.grant(caller())
    assert info.roles == ["user"]
    admin = caller(roles=frozenset({"user", "admin"}))
    plain, _ = await keys.grant(admin)  # admin is never given unasked
    assert plain.roles == ["user"]
    elevated, _ = await keys.grant(admin, roles=["admin"])
    assert elevated.roles == ["admin", "user"]
    assert [k.owner for k in await keys.list()] == ["alice"] * 3


async def test_a_key_made_with_a_restricted_key_inherits_its_restrictions(
    runtime: Runtime,
) -> None:
    keys = keys_of(runtime)
    expires = time.time() + 3600
    _, key = await keys.grant(
        caller(), scopes=["chat", "memory"], models=["offline/echo"], expires_at=expires
    )
    restricted = await who(runtime, key)
    assert restricted.scopes == frozenset({"chat", "memory", "model:offline/echo"})
    inherited, _ = await keys.grant(restricted)
    assert (inherited.scopes, inherited.models) == (["chat", "memory"], ["offline/echo"])
    assert inherited.expires_at == pytest.approx(expires)
    narrower, _ = await keys.grant(restricted, scopes=["chat"])
    assert narrower.scopes == ["chat"]
    for fields in (
        {"scopes": ["chat", "admin"]},
        {"models": ["offline/tools"]},
        {"expires_at": expires + 60},
        {"roles": ["admin"]},
    ):
        with pytest.raises(PermissionDeniedError):
            await keys.grant(restricted, **fields)  # type: ignore[arg-type]
    # An unrestricted caller may restrict as it likes, and a session's expiry is not a key's.
    free, _ = await keys.grant(caller(expires_at=time.time() + 900), scopes=["x"])
    assert (free.scopes, free.expires_at) == (["x"], None)


async def test_a_key_restricted_to_models_may_use_only_those(runtime: Runtime) -> None:
    _, key = await keys_of(runtime).create("alice", models=["offline/echo"])
    principal = await who(runtime, key)
    check_model(principal, "offline/echo")
    with pytest.raises(PermissionDeniedError, match="offline/tools"):
        check_model(principal, "offline/tools")
    _, free = await keys_of(runtime).create("alice")
    check_model(await who(runtime, free), "offline/tools")


# -- requests per key -----------------------------------------------------------------------


async def test_each_key_gets_its_requests_per_minute(tmp_path: Path) -> None:
    toml = "[auth]\nrequests_per_minute_per_key = 3\n"
    async with runtime_for(config_for(tmp_path, toml)) as runtime:
        keys = keys_of(runtime)
        _, first = await keys.create("alice")
        _, second = await keys.create("alice")
        for _ in range(3):
            await who(runtime, first)
        with pytest.raises(TooManyRequestsError) as caught:
            await who(runtime, first)
        assert caught.value.retry_after is not None
        assert 1 <= caught.value.retry_after <= 60
        assert (await who(runtime, second)).id == "alice"  # counted per key


async def test_without_a_limit_nothing_is_counted(runtime: Runtime) -> None:
    _, key = await keys_of(runtime).create("alice")
    for _ in range(50):
        await who(runtime, key)
    limiter = keys_of(runtime).limiter
    assert limiter is not None
    assert limiter.per_minute == 0
