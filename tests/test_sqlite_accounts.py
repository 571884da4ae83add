"""The ``sqlite`` account store passes the account store contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hubbub.testing import AccountStoreContract
from hubbub_plugins.sqlite_accounts import SQLiteAccountStore


class TestSQLiteAccounts(AccountStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLiteAccountStore]:
        store = SQLiteAccountStore(str(tmp_path / "accounts.sqlite3"))
        await store.start()
        yield store
        await store.aclose()


async def test_two_stores_on_one_file_agree(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite3")
    first, second = SQLiteAccountStore(path), SQLiteAccountStore(path)
    await first.start()
    await second.start()
    try:
        from hubbub.models import Record

        created = await first.create(Record(kind="session", id="s1", data=b"x"))
        got = await second.get("session", "s1")
        assert got == created
        assert await second.delete("session", "s1")
        assert await first.get("session", "s1") is None
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_file_deleted_or_replaced_under_the_store_is_an_error(tmp_path: Path) -> None:
    from hubbub.errors import ComponentError
    from hubbub.models import Record

    path = tmp_path / "accounts.sqlite3"
    store = SQLiteAccountStore(str(path))
    await store.start()
    try:
        await store.create(Record(kind="user", id="dora", data=b"x"))
        for name in ("accounts.sqlite3", "accounts.sqlite3-wal", "accounts.sqlite3-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        with pytest.raises(ComponentError, match="deleted or replaced"):
            await store.get("user", "dora")  # never served from the file still open
        assert (await store.health()).status == "down"
        replacement = SQLiteAccountStore(str(path))  # another file at the same path
        await replacement.start()
        await replacement.aclose()
        with pytest.raises(ComponentError, match="deleted or replaced"):
            await store.get("user", "dora")
    finally:
        await store.aclose()


async def test_a_read_only_file_is_a_clear_503(tmp_path: Path) -> None:
    from hubbub.errors import ComponentError
    from hubbub.models import Record

    store = SQLiteAccountStore(str(tmp_path / "ro.sqlite3"))
    await store.start()
    try:
        # what a file made read-only underneath answers (root may write any file, so the
        # connection is told instead)
        await store.db.run(lambda db: db.execute("PRAGMA query_only = ON"))
        with pytest.raises(ComponentError, match="failed: attempt to write") as caught:
            await store.create(Record(kind="user", id="x", data=b"x"))
        assert caught.value.status == 503
    finally:
        await store.aclose()
