"""Failing closed: once a key was created for a data directory, an account store that lost every
credential (deleted, replaced by an empty one, emptied while running) or disabling every enabled
auth method is an error, never local mode. Real SQLite account stores and real runtimes; the
server over HTTP is in tests/server/test_keys_lifecycle.py."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from hubbub.auth import (
    MARKER_NAME,
    Authenticator,
    CredentialsLostError,
    ProvisioningMarker,
)
from hubbub.auth.apikeys import ApiKeys
from hubbub.config import Config
from hubbub.contracts import Credentials
from hubbub.errors import ComponentError
from hubbub.events import EventBus
from hubbub.plugins import load_plugins
from hubbub.runtime import Runtime
from hubbub.testing import config_for, runtime_for
from hubbub_plugins.sqlite_accounts import SQLiteAccountStore

KEYS = {"HUBBUB_AUTH__METHODS": '["api_key"]'}  # the tests' base config enables none


def remove_store(home: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (home / f"accounts.sqlite3{suffix}").unlink(missing_ok=True)


def empty_store(home: Path) -> None:
    with contextlib.closing(sqlite3.connect(home / "accounts.sqlite3")) as db, db:
        db.execute("DELETE FROM records")


async def created(home: Path, user: str = "alice") -> str:
    """A key for ``user``, made in a runtime over ``home`` (stopped again)."""
    async with runtime_for(config_for(home)) as runtime:
        return (await runtime.api_keys.create(user))[1]


async def start_fails(home: Path) -> ComponentError:
    """The error of a runtime over ``home`` that must not start (lost credentials)."""
    runtime = Runtime.from_config(config_for(home))
    with pytest.raises(ComponentError, match="CredentialsLostError") as caught:
        await runtime.start()
    return caught.value


async def test_creating_a_key_records_it_in_the_data_directory(tmp_path: Path) -> None:
    marker = ProvisioningMarker(tmp_path)
    assert not marker.exists()
    await created(tmp_path)
    assert marker.exists()
    assert marker.path == tmp_path / MARKER_NAME
    assert marker.methods() == {"api_key": "account store"}
    assert "delete this file" in marker.path.read_text()


async def test_a_missing_account_store_fails_to_start_naming_the_way_out(tmp_path: Path) -> None:
    await created(tmp_path)
    remove_store(tmp_path)
    error = await start_fails(tmp_path)
    message = str(error)
    assert "the account store holds no API key and no user" in message
    assert str(tmp_path / MARKER_NAME) in message
    assert "restore" in message.lower()
    assert error.status == 503


async def test_an_emptied_account_store_fails_closed(tmp_path: Path) -> None:
    await created(tmp_path)
    empty_store(tmp_path)
    assert "holds no API key" in str(await start_fails(tmp_path))


async def test_a_store_with_accounts_but_no_key_is_not_lost(tmp_path: Path) -> None:
    async with runtime_for(config_for(tmp_path)) as runtime:
        await runtime.users.add("alice", None)
        await runtime.api_keys.create("alice")
    with contextlib.closing(sqlite3.connect(tmp_path / "accounts.sqlite3")) as db, db:
        db.execute("DELETE FROM records WHERE kind = 'api_key'")
    async with runtime_for(config_for(tmp_path)) as runtime:
        assert await runtime.api_keys.list() == []
        assert await runtime.auth.is_provisioned()  # the account is


async def test_a_store_emptied_while_running_fails_closed(tmp_path: Path) -> None:
    """As when a shared store (Redis) is flushed under running servers: the key that worked
    gets 503 (lost credentials), never 401 nor local mode."""
    key = await created(tmp_path)
    async with runtime_for(config_for(tmp_path)) as runtime:
        runtime.api_keys.check_interval = 0  # read the store on every check
        method = runtime.auth_methods["api_key"]
        assert (await runtime.auth.authenticate(Credentials(bearer=key))).id == "alice"
        assert await method.is_provisioned()
        empty_store(tmp_path)
        with pytest.raises(CredentialsLostError, match="holds no API key"):
            await method.is_provisioned()
        with pytest.raises(CredentialsLostError):
            await runtime.auth.authenticate(Credentials(bearer=key))


async def test_an_unreadable_marker_counts_as_keys_made(tmp_path: Path) -> None:
    (tmp_path / MARKER_NAME).mkdir()  # exists, cannot be read as a file
    assert "holds no API key" in str(await start_fails(tmp_path))


async def test_no_key_is_created_when_the_marker_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # the marker's directory cannot be made
    marker = ProvisioningMarker(tmp_path / "file")
    store = SQLiteAccountStore(str(tmp_path / "accounts.sqlite3"))
    await store.start()
    keys = ApiKeys(store, EventBus(), marker=marker)
    try:
        with pytest.raises(ComponentError, match="cannot record"):
            await keys.create("alice")
        assert await keys.list() == []
        assert not marker.exists()
    finally:
        await store.aclose()


async def test_deleting_the_marker_and_the_store_starts_over(tmp_path: Path) -> None:
    await created(tmp_path)
    remove_store(tmp_path)
    ProvisioningMarker(tmp_path).path.unlink()
    async with runtime_for(config_for(tmp_path)) as runtime:
        assert not await runtime.auth_methods["api_key"].is_provisioned()
        assert not await runtime.auth.is_provisioned()


# -- the authenticator ------------------------------------------------------------------------


async def test_no_provisioned_method_with_a_marker_is_lost_credentials(tmp_path: Path) -> None:
    await created(tmp_path)
    authenticator = Authenticator({}, allow_local=True, marker=ProvisioningMarker(tmp_path))
    with pytest.raises(CredentialsLostError, match="no enabled auth method has any credentials"):
        await authenticator.is_provisioned()
    with pytest.raises(CredentialsLostError) as caught:
        await authenticator.authenticate(Credentials())  # never the local user
    # What a caller is told names no file: the details are in the log.
    assert str(tmp_path) not in str(caught.value)
    assert "operator" in str(caught.value)


async def test_the_authenticator_records_credentials_it_finds(tmp_path: Path) -> None:
    await created(tmp_path)
    marker = ProvisioningMarker(tmp_path)
    marker.path.unlink()  # keys made before markers existed
    async with runtime_for(config_for(tmp_path)) as runtime:
        runtime.auth.allow_local = True
        assert await runtime.auth.is_provisioned()
        assert marker.exists()
        assert "api_key" in marker.methods()


async def test_a_runtime_whose_keys_were_switched_off_refuses_local_mode(
    make_config: Callable[..., Config],
) -> None:
    config = make_config(env=KEYS)
    await created(config.data_dir)
    without = make_config()  # [auth] methods = []: nothing is provisioned any more
    async with Runtime.from_config(without, plugins=load_plugins(env={})) as runtime:
        runtime.auth.allow_local = True
        with pytest.raises(CredentialsLostError, match=MARKER_NAME):
            await runtime.auth.is_provisioned()
        with pytest.raises(CredentialsLostError):
            await runtime.auth.authenticate(Credentials())


async def test_a_runtime_with_a_lost_account_store_does_not_start(
    make_config: Callable[..., Config],
) -> None:
    config = make_config(env=KEYS)
    await created(config.data_dir)
    remove_store(config.data_dir)
    runtime = Runtime.from_config(config, plugins=load_plugins(env={}))
    with pytest.raises(ComponentError, match=r"auth.*account store holds no API key"):
        await runtime.start()
