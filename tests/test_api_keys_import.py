"""Upgrading: the keys of the old key database (``api_keys.sqlite3``, or ``[plugins.api_keys]
path``) are imported into the account store once, with their ids, digests, owners, names, roles
and times, so old keys keep working; then the file is renamed. Real runtimes over real SQLite
files, the old database written as the old ``hubbub keys create`` wrote it."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from hubbub.contracts import Credentials
from hubbub.errors import AuthenticationError
from hubbub.testing import config_for, runtime_for

OLD_SCHEMA = """
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    principal TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL,
    roles TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""


def old_database(path: Path, rows: list[tuple[str, str, str, str, float | None]]) -> list[str]:
    """An old key database at ``path`` with keys ``(user, name, roles, secret, revoked_at)``;
    the keys, as they were handed out."""
    keys = []
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(OLD_SCHEMA)
        for user, name, roles, secret, revoked_at in rows:
            key_id = secrets.token_hex(8)
            db.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    user,
                    name,
                    hashlib.sha256(secret.encode()).hexdigest(),
                    roles,
                    1_700_000_000.0,
                    revoked_at,
                ),
            )
            keys.append(f"hbk_{key_id}_{secret}")
    return keys


def secret() -> str:
    return secrets.token_urlsafe(32)


async def test_old_keys_keep_working_and_the_old_file_is_renamed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "api_keys.sqlite3"
    alice, root, revoked = old_database(
        old,
        [
            ("alice", "laptop", "", secret(), None),
            ("root", "", "admin", secret(), None),
            ("bob", "old", "", secret(), time.time() - 60),
        ],
    )
    with caplog.at_level(logging.INFO):
        async with runtime_for(config_for(tmp_path)) as runtime:
            principal = await runtime.auth.authenticate(Credentials(bearer=alice))
            assert (principal.id, principal.roles) == ("alice", frozenset({"user"}))
            assert principal.credential_id == alice.split("_")[1]
            admin = await runtime.auth.authenticate(Credentials(bearer=root))
            assert admin.roles == frozenset({"admin", "user"})
            with pytest.raises(AuthenticationError):
                await runtime.auth.authenticate(Credentials(bearer=revoked))
            listed = {info.owner: info for info in await runtime.api_keys.list()}
            assert (listed["alice"].name, listed["alice"].created_at) == (
                "laptop",
                1_700_000_000.0,
            )
            assert listed["bob"].revoked_at is not None
    assert "imported 3 API keys from the old key database" in caplog.text
    assert not old.exists()
    assert (tmp_path / "api_keys.sqlite3.imported").exists()


async def test_importing_again_adds_nothing_and_keeps_both_files(tmp_path: Path) -> None:
    old = tmp_path / "api_keys.sqlite3"
    (key,) = old_database(old, [("alice", "", "", secret(), None)])
    async with runtime_for(config_for(tmp_path)) as runtime:
        (info,) = await runtime.api_keys.list()
        assert await runtime.api_keys.revoke(info.id)  # revoked after the upgrade
    shutil.copy(tmp_path / "api_keys.sqlite3.imported", old)  # a backup restored by mistake
    async with runtime_for(config_for(tmp_path)) as runtime:
        (again,) = await runtime.api_keys.list()
        assert again.revoked_at is not None  # the store's state wins: not re-activated
        with pytest.raises(AuthenticationError):
            await runtime.auth.authenticate(Credentials(bearer=key))
    assert (tmp_path / "api_keys.sqlite3.imported").exists()
    assert (tmp_path / "api_keys.sqlite3.imported.2").exists()
    assert not old.exists()


async def test_the_configured_path_is_imported_and_malformed_rows_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    elsewhere = tmp_path / "keys" / "mine.sqlite3"
    elsewhere.parent.mkdir()
    (good,) = old_database(elsewhere, [("carol", "", "", secret(), None)])
    with contextlib.closing(sqlite3.connect(elsewhere)) as db, db:
        db.execute(
            "INSERT INTO api_keys VALUES ('nothex', 'x y', '', 'zz', '', 1.0, NULL)"
        )  # not a key the old code could have made
    # An older configuration file, with the obsolete setting: it still loads.
    toml = f'[plugins.api_keys]\npath = "{elsewhere}"\nrevocation_poll_interval = 0.5\n'
    with caplog.at_level(logging.INFO):
        async with runtime_for(config_for(tmp_path / "home", toml)) as runtime:
            assert (await runtime.auth.authenticate(Credentials(bearer=good))).id == "carol"
            assert len(await runtime.api_keys.list()) == 1
    assert "skipped a malformed key" in caplog.text
    assert "1 malformed" in caplog.text
    assert "revocation_poll_interval is obsolete and ignored" in caplog.text
    assert (tmp_path / "keys" / "mine.sqlite3.imported").exists()


async def test_an_empty_old_file_holds_no_keys(tmp_path: Path) -> None:
    (tmp_path / "api_keys.sqlite3").write_bytes(b"")
    async with runtime_for(config_for(tmp_path)) as runtime:
        assert await runtime.api_keys.list() == []
    assert (tmp_path / "api_keys.sqlite3.imported").exists()
