"""The ``postgres`` account store against real PostgreSQL servers (Debian's ``postgresql``): the
account store contract, its migration (from a database of the memory store's first schema, and
by several processes at once), byte order of ids whatever the database's collation, two
processes sharing one database, and clear errors while PostgreSQL is away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from postgres_support import PostgresServer
from support import keyring_toml

from hubbub.config import Secret
from hubbub.errors import ComponentError, ConflictError, InvalidRequestError
from hubbub.models import Conversation, Record, new_id
from hubbub.testing import AccountStoreContract, config_for, runtime_for
from hubbub_plugins.postgres_accounts import PostgresAccountStore
from hubbub_plugins.postgres_schema import MIGRATIONS, migrate
from hubbub_plugins.postgres_store import PostgresStore, PostgresStoreSettings

MARGIN = 20.0
"""Seconds an operation against a stopped PostgreSQL may take at most (its bound is
``acquire_timeout`` plus a connect attempt; a loaded machine is slow): "no hang", not a
latency."""


@pytest.fixture(scope="module")
def contract_url(postgres_session: PostgresServer) -> str:
    """One database for the module (every test uses kinds of its own)."""
    return postgres_session.create_database()


@pytest.fixture
def fresh_url(postgres_session: PostgresServer) -> str:
    """An empty database of the test's own."""
    return postgres_session.create_database()


@pytest.fixture
async def started() -> AsyncIterator[list[PostgresAccountStore | PostgresStore]]:
    """Stores the test starts, all closed after it (also when it fails)."""
    stores: list[PostgresAccountStore | PostgresStore] = []
    yield stores
    for store in stores:
        await store.aclose()


async def start(
    stores: list[PostgresAccountStore | PostgresStore], url: str, **fields: Any
) -> PostgresAccountStore:
    store = PostgresAccountStore(url, PostgresStoreSettings(url=Secret(url), **fields))
    stores.append(store)
    await store.start()
    return store


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(query).fetchall()


def kind() -> str:
    return new_id("kind_")


class TestPostgresAccounts(AccountStoreContract):
    @pytest.fixture
    async def store(self, contract_url: str) -> AsyncIterator[PostgresAccountStore]:
        store = PostgresAccountStore(contract_url)
        await store.start()
        yield store
        await store.aclose()


# -- schema -------------------------------------------------------------------------------------


async def test_a_database_of_the_first_schema_is_migrated_and_keeps_its_data(
    fresh_url: str, started: list[PostgresAccountStore | PostgresStore]
) -> None:
    async with await psycopg.AsyncConnection.connect(fresh_url, autocommit=True) as connection:
        assert await migrate(connection, "hubbub", where="here", migrations=MIGRATIONS[:1]) == [1]
    memory = PostgresStore(fresh_url)
    started.append(memory)
    await memory.start()  # the memory store migrates too: both stores share the schema
    kept = await memory.create_conversation(Conversation(owner="ada"))
    accounts = await start(started, fresh_url)
    versions = rows(fresh_url, "SELECT version FROM hubbub.hubbub_schema ORDER BY version")
    assert versions == [(m.version,) for m in MIGRATIONS]
    assert await memory.get_conversation(kept.id) == kept
    record = await accounts.create(Record(kind="user", id="u", lookup="ada", data=b"x"))
    assert await accounts.find("user", "ada") == record


async def test_stores_starting_together_migrate_once(
    fresh_url: str, started: list[PostgresAccountStore | PostgresStore]
) -> None:
    stores: list[PostgresAccountStore | PostgresStore] = [
        *(PostgresAccountStore(fresh_url) for _ in range(3)),
        *(PostgresStore(fresh_url) for _ in range(2)),
    ]
    started.extend(stores)
    await asyncio.gather(*(store.start() for store in stores))
    versions = rows(fresh_url, "SELECT version FROM hubbub.hubbub_schema ORDER BY version")
    assert versions == [(m.version,) for m in MIGRATIONS]
    first, third = stores[0], stores[2]
    assert isinstance(first, PostgresAccountStore)
    assert isinstance(third, PostgresAccountStore)
    created = await first.create(Record(kind="user", id="u", data=b"x"))
    assert await third.get("user", "u") == created


async def test_ids_list_in_byte_order_whatever_the_database_collation(
    postgres_session: PostgresServer, started: list[PostgresAccountStore | PostgresStore]
) -> None:
    name = f"db_icu_{new_id('')[:12].lower()}"
    with psycopg.connect(postgres_session.url, autocommit=True) as connection:
        connection.execute(
            f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
        )
    url = postgres_session.url_for(name)
    assert rows(url, "SELECT 'a' < 'B' COLLATE \"default\"") == [(True,)]  # not byte order
    store = await start(started, url)
    of = kind()
    ids = ["b", "B", "a", "é", "Z", "a-1", "a_1", "aa"]
    for record_id in ids:
        await store.create(Record(kind=of, id=record_id, owner="o", data=b""))
    expected = sorted(ids, key=str.encode)
    assert [r.id for r in await store.list_records(of)] == expected
    assert [r.id for r in await store.list_records(of, owner="o")] == expected
    assert [r.id for r in await store.list_records(of, after="Z")] == expected[2:]


async def test_nul_is_not_found_when_read_and_refused_when_written(contract_url: str) -> None:
    store = PostgresAccountStore(contract_url)
    await store.start()
    try:
        of = kind()
        assert await store.get(of, "a\x00") is None
        assert await store.find(of, "a\x00") is None
        assert await store.list_records(of, owner="a\x00") == []
        assert await store.delete(of, "a\x00") is False
        with pytest.raises(InvalidRequestError, match="NUL"):
            await store.create(Record(kind=of, id="ok", owner="a\x00b", data=b""))
        assert await store.list_records(of) == []
    finally:
        await store.aclose()


async def test_a_taken_lookup_is_a_conflict_that_does_not_show_it(contract_url: str) -> None:
    store = PostgresAccountStore(contract_url)
    await store.start()
    try:
        of = kind()
        digest = "digest-of-a-secret-7f3a"
        await store.create(Record(kind=of, id="k1", lookup=digest, data=b""))
        other = await store.create(Record(kind=of, id="k2", data=b""))
        with pytest.raises(ConflictError) as on_create:
            await store.create(Record(kind=of, id="k3", lookup=digest, data=b""))
        with pytest.raises(ConflictError) as on_replace:
            await store.replace(msgspec.structs.replace(other, lookup=digest))
        assert digest not in str(on_create.value) + str(on_replace.value)
    finally:
        await store.aclose()


# -- two processes ------------------------------------------------------------------------------


async def test_two_processes_agree(
    contract_url: str, started: list[PostgresAccountStore | PostgresStore]
) -> None:
    one = await start(started, contract_url)
    two = await start(started, contract_url)
    of = kind()
    session = await one.create(
        Record(kind=of, id="sess-1", owner="ada", lookup="digest", data=b"\x00s\xff")
    )
    assert await two.get(of, "sess-1") == session
    assert await two.find(of, "digest") == session
    assert await two.list_records(of, owner="ada") == [session]
    assert await two.delete(of, "sess-1")
    assert await one.get(of, "sess-1") is None
    assert await one.find(of, "digest") is None

    current = await one.create(Record(kind=of, id="race", data=b"0"))
    for round_ in range(10):  # concurrent rotations from the same version, across both

        async def rotate(store: PostgresAccountStore, value: bytes, at: Record) -> bool:
            try:
                await store.replace(msgspec.structs.replace(at, data=value))
            except ConflictError:
                return False
            return True

        results = await asyncio.gather(
            *(rotate(one if n % 2 else two, f"{round_}-{n}".encode(), current) for n in range(6))
        )
        assert results.count(True) == 1
        stored = await two.get(of, "race")
        assert stored is not None
        assert stored.version == current.version + 1
        assert stored.data == f"{round_}-{results.index(True)}".encode()
        current = stored


async def test_two_processes_purging_at_once_delete_each_record_once(
    contract_url: str, started: list[PostgresAccountStore | PostgresStore]
) -> None:
    one = await start(started, contract_url)
    two = await start(started, contract_url)
    of = kind()
    for n in range(40):
        await one.create(Record(kind=of, id=f"s{n:02d}", data=b"", expires_at=-1e9 + n))
    await one.create(Record(kind=of, id="kept", data=b"", expires_at=1e12))

    async def sweep(store: PostgresAccountStore) -> int:
        total = 0
        while (batch := await store.purge(now=0.0, limit=3)) > 0:
            assert batch <= 3
            total += batch
        return total

    counts = await asyncio.gather(sweep(one), sweep(two), sweep(one), sweep(two))
    while (late := await one.purge(now=0.0, limit=100)) > 0:  # rows a sweep skipped, locked
        counts.append(late)
    assert sum(counts) == 40
    assert [r.id for r in await two.list_records(of)] == ["kept"]


# -- PostgreSQL going away ----------------------------------------------------------------------


async def test_postgres_stopped_mid_use_is_a_clear_error_and_coming_back_heals(
    postgres_server: PostgresServer, started: list[PostgresAccountStore | PostgresStore]
) -> None:
    store = await start(started, postgres_server.url, acquire_timeout=1.0, health_timeout=1.0)
    of = kind()
    record = await store.create(Record(kind=of, id="k", owner="o", lookup="l", data=b"x"))
    await asyncio.to_thread(postgres_server.stop)
    calls = [
        lambda: store.get(of, "k"),
        lambda: store.find(of, "l"),
        lambda: store.list_records(of),
        lambda: store.list_records(of, owner="o"),
        lambda: store.create(Record(kind=of, id="k2", data=b"y")),
        lambda: store.replace(record),
        lambda: store.delete(of, "k"),
        lambda: store.purge(now=1e10, limit=10),
    ]
    for call in calls:
        began = time.monotonic()
        with pytest.raises(ComponentError) as caught:
            await asyncio.wait_for(call(), 60)
        assert time.monotonic() - began < MARGIN
        assert caught.value.status == 503
        message = str(caught.value)
        assert message.startswith(f"the PostgreSQL store at 127.0.0.1:{postgres_server.port}/")
        assert "Traceback" not in message
    health = await store.health()
    assert health.status == "down"
    assert f"127.0.0.1:{postgres_server.port}/postgres" in health.detail
    await asyncio.to_thread(postgres_server.start)
    for _ in range(100):  # the pool reconnects with back-off: give it time
        try:
            got = await store.get(of, "k")
            break
        except ComponentError:
            await asyncio.sleep(0.1)
    assert got == record  # nothing written while it was away, nothing lost
    assert (await store.health()).status == "ok"
    assert (await store.replace(record)).version == 2


# -- through the runtime ------------------------------------------------------------------------


async def test_the_runtime_keeps_accounts_in_postgres(tmp_path: Path, contract_url: str) -> None:
    config = config_for(
        tmp_path,
        f'[memory]\nbackend = "postgres"\n[plugins.postgres_store]\nurl = "{contract_url}"\n'
        + keyring_toml(tmp_path),
    )
    of = kind()
    async with runtime_for(config) as runtime:
        accounts = runtime.accounts
        assert isinstance(accounts, PostgresAccountStore)
        await accounts.create(Record(kind=of, id="r", data=b"kept"))
        health = await runtime.health()
        assert health.components["accounts"].status == "ok"
        assert health.components["accounts"].backend == "postgres"
    assert rows(contract_url, f"SELECT data FROM hubbub.records WHERE kind = '{of}'") == [
        (b"kept",)
    ]
