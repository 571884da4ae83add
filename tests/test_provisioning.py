"""Failing closed: once a key was created for a data directory, losing the key database (deleted,
replaced, emptied) or every enabled auth method is an error, never local mode. Real SQLite files
and a real runtime; the server over HTTP is in tests/server/test_keys_lifecycle.py."""

from __future__ import annotations

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
from hubbub.config import Config
from hubbub.contracts import Credentials
from hubbub.errors import ComponentError
from hubbub.plugins import load_plugins
from hubbub.runtime import Runtime
from hubbub_plugins.api_keys import ApiKeys

KEYS = {"HUBBUB_AUTH__METHODS": '["api_key"]'}  # the tests' base config enables none


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def created(home: Path, user: str = "alice") -> tuple[Path, str]:
    path = home / "api_keys.sqlite3"
    keys = ApiKeys(str(path), marker=ProvisioningMarker(home))
    await keys.start()
    try:
        return path, (await keys.create(user))[1]
    finally:
        await keys.aclose()


async def test_creating_a_key_records_it_in_the_data_directory(tmp_path: Path) -> None:
    marker = ProvisioningMarker(tmp_path)
    assert not marker.exists()
    path, _ = await created(tmp_path)
    assert marker.exists()
    assert marker.path == tmp_path / MARKER_NAME
    assert marker.methods() == {"api_key": str(path)}
    assert "delete this file" in marker.path.read_text()


async def test_a_missing_key_database_fails_to_start_naming_the_way_out(tmp_path: Path) -> None:
    path, _ = await created(tmp_path)
    remove_database(path)
    keys = ApiKeys(str(path), marker=ProvisioningMarker(tmp_path))
    with pytest.raises(CredentialsLostError) as caught:
        await keys.start()
    message = str(caught.value)
    assert f"{path} is missing" in message
    assert str(tmp_path / MARKER_NAME) in message
    assert "restore" in message.lower()
    assert caught.value.status == 503
    assert not path.exists()  # nothing was created in its place


async def test_an_emptied_key_database_fails_closed(tmp_path: Path) -> None:
    path, _ = await created(tmp_path)
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM api_keys")
    with pytest.raises(CredentialsLostError, match="holds no key"):
        await ApiKeys(str(path)).start()


async def test_a_database_deleted_while_open_fails_closed(tmp_path: Path) -> None:
    path, key = await created(tmp_path)
    keys = ApiKeys(str(path))
    await keys.start()
    try:
        assert await keys.authenticate(Credentials(bearer=key)) is not None
        assert await keys.is_provisioned()
        remove_database(path)
        with pytest.raises(CredentialsLostError, match="was deleted"):
            await keys.is_provisioned()
        with pytest.raises(CredentialsLostError, match="was deleted"):
            await keys.authenticate(Credentials(bearer=key))
    finally:
        await keys.aclose()


async def test_a_database_replaced_while_open_fails_closed(tmp_path: Path) -> None:
    path, key = await created(tmp_path)
    other, _ = await created(tmp_path / "other", "mallory")
    keys = ApiKeys(str(path))
    await keys.start()
    try:
        other.rename(path)  # another database where the one in use was
        with pytest.raises(CredentialsLostError, match="was replaced"):
            await keys.authenticate(Credentials(bearer=key))
    finally:
        await keys.aclose()


async def test_an_unreadable_marker_counts_as_keys_made(tmp_path: Path) -> None:
    (tmp_path / MARKER_NAME).mkdir()  # exists, cannot be read as a file
    with pytest.raises(CredentialsLostError, match="is missing"):
        await ApiKeys(str(tmp_path / "api_keys.sqlite3")).start()


async def test_a_garbled_key_database_is_a_one_line_component_error(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.sqlite3"
    path.write_bytes(b"not a database at all " * 100)
    with pytest.raises(ComponentError, match=r"cannot open the API key database .*: file is not"):
        await ApiKeys(str(path)).start()


async def test_no_key_is_created_when_the_marker_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # the marker's directory cannot be made
    marker = ProvisioningMarker(tmp_path / "file")
    keys = ApiKeys(str(tmp_path / "api_keys.sqlite3"), marker=marker)
    await keys.start()
    try:
        with pytest.raises(ComponentError, match="cannot record"):
            await keys.create("alice")
        assert await keys.list() == []
        assert not marker.exists()
    finally:
        await keys.aclose()


async def test_deleting_the_marker_and_the_database_starts_over(tmp_path: Path) -> None:
    path, _ = await created(tmp_path)
    remove_database(path)
    ProvisioningMarker(tmp_path).path.unlink()
    keys = ApiKeys(str(path))
    await keys.start()
    try:
        assert not await keys.is_provisioned()
    finally:
        await keys.aclose()


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
    path, _ = await created(tmp_path)
    marker = ProvisioningMarker(tmp_path)
    marker.path.unlink()  # keys made before markers existed
    keys = ApiKeys(str(path), marker=ProvisioningMarker(tmp_path / "elsewhere"))
    await keys.start()
    try:
        authenticator = Authenticator({"api_key": keys}, allow_local=True, marker=marker)
        assert await authenticator.is_provisioned()
        assert marker.exists()
        assert "api_key" in marker.methods()
    finally:
        await keys.aclose()


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


async def test_a_runtime_with_a_lost_key_database_does_not_start(
    make_config: Callable[..., Config],
) -> None:
    config = make_config(env=KEYS)
    path, _ = await created(config.data_dir)
    remove_database(path)
    runtime = Runtime.from_config(config, plugins=load_plugins(env={}))
    with pytest.raises(ComponentError, match=r"API key database .* is missing"):
        await runtime.start()
