"""The ``postgres`` memory store against real PostgreSQL servers (Debian's ``postgresql``).

The contract suite runs on one database of the session's server; the migration tests each get
a fresh database; the tests that stop, kill or restart PostgreSQL get a server of their own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgres_support import PostgresServer
from support import keyring_toml

from hubbub.config import Secret
from hubbub.errors import (
    ComponentError,
    ConfigError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
)
from hubbub.models import Conversation, MemoryItem, Message, StoreUsage, new_id, stored_size
from hubbub.runtime.selection import check_config
from hubbub.testing import MemoryStoreContract, config_for, plugins_for, runtime_for
from hubbub_plugins.postgres_schema import MIGRATIONS, Migration, migrate
from hubbub_plugins.postgres_store import PostgresStore, PostgresStoreSettings

LATEST = MIGRATIONS[-1].version
EVERY_VERSION = [(migration.version,) for migration in MIGRATIONS]
VERSIONS = "SELECT version FROM hubbub.hubbub_schema ORDER BY version"


def settings(url: str, **fields: Any) -> PostgresStoreSettings:
    return PostgresStoreSettings(url=Secret(url), **fields)


@pytest.fixture(scope="module")
def contract_url(postgres_session: PostgresServer) -> str:
    """One database for the contract suite (its tests use owners of their own)."""
    return postgres_session.create_database()


@pytest.fixture
def fresh_url(postgres_session: PostgresServer) -> str:
    """An empty database of the test's own."""
    return postgres_session.create_database()


@pytest.fixture
async def started() -> AsyncIterator[list[PostgresStore]]:
    """Stores the test starts, all closed after it (also when it fails)."""
    stores: list[PostgresStore] = []
    yield stores
    for store in stores:
        await store.aclose()


async def start(stores: list[PostgresStore], url: str, **fields: Any) -> PostgresStore:
    store = PostgresStore(url, settings(url, **fields))
    stores.append(store)
    await store.start()
    return store


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(query).fetchall()


class TestPostgresStore(MemoryStoreContract):
    @pytest.fixture
    async def store(self, contract_url: str) -> AsyncIterator[PostgresStore]:
        store = PostgresStore(contract_url)
        await store.start()
        yield store
        await store.aclose()


# -- migrations ---------------------------------------------------------------------------------


async def test_a_fresh_database_gets_the_schema(
    fresh_url: str, started: list[PostgresStore]
) -> None:
    await start(started, fresh_url)
    tables = rows(
        fresh_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'hubbub' "
        "ORDER BY table_name",
    )
    assert [t for (t,) in tables] == [
        "conversations",
        "hubbub_schema",
        "memories",
        "messages",
        "records",
        "summaries",
        "usage",
    ]
    assert rows(fresh_url, VERSIONS) == EVERY_VERSION


async def test_a_second_start_changes_nothing(
    fresh_url: str, started: list[PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "hubbub.plugins.postgres_store")
    first = await start(started, fresh_url)
    kept = await first.create_conversation(Conversation(owner="ada", title="kept"))
    await first.aclose()
    applied_at = rows(fresh_url, "SELECT version, applied_at FROM hubbub.hubbub_schema")
    second = await start(started, fresh_url)
    assert await second.get_conversation(kept.id) == kept
    assert rows(fresh_url, "SELECT version, applied_at FROM hubbub.hubbub_schema") == applied_at
    migrated = [r for r in caplog.records if "migrated" in r.getMessage()]
    assert len(migrated) == 1


async def test_stores_starting_together_migrate_once(
    fresh_url: str, started: list[PostgresStore]
) -> None:
    stores = [PostgresStore(fresh_url) for _ in range(4)]
    started.extend(stores)
    await asyncio.gather(*(store.start() for store in stores))
    assert rows(fresh_url, VERSIONS) == EVERY_VERSION
    conversation = await stores[0].create_conversation(Conversation(owner="ada"))
    assert await stores[3].get_conversation(conversation.id) == conversation


async def test_a_newer_schema_is_refused(fresh_url: str, started: list[PostgresStore]) -> None:
    await start(started, fresh_url)
    with psycopg.connect(fresh_url) as connection:
        connection.execute(
            "INSERT INTO hubbub.hubbub_schema (version, description) VALUES (%s, 'future')",
            (LATEST + 41,),
        )
    with pytest.raises(ComponentError) as caught:
        await start(started, fresh_url)
    message = str(caught.value)
    assert f"schema version {LATEST + 41}" in message
    assert f"version {LATEST}, the newest this hubbub knows" in message
    assert "/db_" in message  # names the database


async def test_a_failing_migration_leaves_nothing_behind(fresh_url: str) -> None:
    broken = (
        *MIGRATIONS,
        Migration(LATEST + 1, "half", "CREATE TABLE half_done (x int); SELECT 1/0;"),
    )
    async with await psycopg.AsyncConnection.connect(fresh_url, autocommit=True) as connection:
        assert await migrate(connection, "hubbub", where="here") == [v for (v,) in EVERY_VERSION]
        with pytest.raises(psycopg.errors.DivisionByZero):
            await migrate(connection, "hubbub", where="here", migrations=broken)
    assert rows(fresh_url, VERSIONS) == EVERY_VERSION
    assert rows(fresh_url, "SELECT to_regclass('hubbub.half_done')") == [(None,)]


async def test_schemas_keep_deployments_apart(fresh_url: str, started: list[PostgresStore]) -> None:
    blue = await start(started, fresh_url, schema="blue")
    green = await start(started, fresh_url, schema="green")
    mine = await blue.create_conversation(Conversation(owner="ada"))
    assert await green.get_conversation(mine.id) is None
    assert (await green.usage("ada")).conversations == 0
    assert (await blue.usage("ada")).conversations == 1


def test_settings_are_checked() -> None:
    config = config_for(
        Path("/nonexistent"),
        '[memory]\nbackend = "postgres"\n[plugins.postgres_store]\nmin_size = 5\nmax_size = 2\n'
        'url = "postgresql://h/db"\n',
    )
    with pytest.raises(ConfigError, match=r"plugins\.postgres_store: max_size \(2\) is below"):
        check_config(config, plugins_for(config, None, ()))


# -- odd input ----------------------------------------------------------------------------------


async def test_a_nul_in_an_id_is_not_found(contract_url: str, started: list[PostgresStore]) -> None:
    store = await start(started, contract_url)
    assert await store.get_conversation("conv_\x00") is None
    assert await store.delete_conversation("conv_\x00") is False
    assert (await store.list_messages("conv_\x00")).items == []
    with pytest.raises(NotFoundError):
        await store.append_message(Message(role="user", content="x", conversation_id="c\x00"))


async def test_a_nul_in_an_owner_is_refused_clearly(
    contract_url: str, started: list[PostgresStore]
) -> None:
    store = await start(started, contract_url)
    with pytest.raises(InvalidRequestError, match="NUL"):
        await store.create_conversation(Conversation(owner="a\x00b"))


async def test_a_cursor_of_another_listing_is_refused(
    contract_url: str, started: list[PostgresStore]
) -> None:
    store = await start(started, contract_url)
    owner = new_id("owner_")
    for _ in range(3):
        await store.add_memory(MemoryItem(owner=owner, content="m"))
    memories = await store.list_memories(owner, limit=1)
    assert memories.next_cursor is not None
    with pytest.raises(InvalidRequestError):
        await store.list_conversations(owner, cursor=memories.next_cursor)


async def test_a_message_stored_twice_is_a_conflict_that_changes_nothing(
    contract_url: str, started: list[PostgresStore]
) -> None:
    store = await start(started, contract_url)
    conversation = await store.create_conversation(Conversation(owner=new_id("owner_")))
    message = await store.append_message(
        Message(role="user", content="once", conversation_id=conversation.id)
    )
    before = await store.usage(conversation.owner)
    with pytest.raises(ConflictError):
        await store.append_message(message)
    assert await store.usage(conversation.owner) == before
    assert (await store.list_messages(conversation.id)).items == [message]


async def test_a_locked_row_fails_a_call_after_the_statement_timeout(
    contract_url: str, started: list[PostgresStore]
) -> None:
    """Another session holding a conversation's row (a stuck transaction) makes an append
    fail with ComponentError once ``statement_timeout`` passes, instead of hanging."""
    store = await start(started, contract_url, statement_timeout=0.3)
    conversation = await store.create_conversation(Conversation(owner=new_id("owner_")))
    with psycopg.connect(contract_url) as blocker:
        blocker.execute(
            "SELECT 1 FROM hubbub.conversations WHERE id = %s FOR UPDATE", (conversation.id,)
        )
        with pytest.raises(ComponentError, match="statement timeout"):
            await asyncio.wait_for(
                store.append_message(
                    Message(role="user", content="stuck", conversation_id=conversation.id)
                ),
                30,
            )
    assert (await store.list_messages(conversation.id)).items == []


# -- copying between stores ---------------------------------------------------------------------


async def test_owners_are_listed_once_in_order(
    fresh_url: str, started: list[PostgresStore]
) -> None:
    store = await start(started, fresh_url)
    for owner in ("carol", "ada", "bob"):
        await store.create_conversation(Conversation(owner=owner))
        await store.create_conversation(Conversation(owner=owner))
    await store.add_memory(MemoryItem(owner="dan", content="only a memory"))
    gone = await store.create_conversation(Conversation(owner="eve"))
    await store.delete_conversation(gone.id)
    seen: list[str] = []
    cursor = None
    while True:
        page = await store.list_owners(limit=2, cursor=cursor)
        seen += page.items
        if (cursor := page.next_cursor) is None:
            break
    assert seen == ["ada", "bob", "carol", "dan"]
    with pytest.raises(InvalidRequestError):
        await store.list_owners(cursor="WzFd")


async def test_a_conversation_is_imported_as_it_was_once(
    contract_url: str, started: list[PostgresStore]
) -> None:
    store = await start(started, contract_url)
    owner = new_id("owner_")
    original = Conversation(owner=owner, title="old", updated_at=1_000.0, expires_at=9e9)
    messages = [Message(role="user", content=str(i), conversation_id=original.id) for i in range(5)]
    assert await store.import_conversation(original, messages[:3]) == 3
    assert await store.import_conversation(original, messages[2:]) == 2  # one already there
    assert await store.import_conversation(original, messages) == 0
    assert await store.get_conversation(original.id) == original  # updated_at not bumped
    assert (await store.list_messages(original.id)).items == messages
    usage = await store.usage(owner)
    assert usage.conversations == 1
    assert usage.bytes == stored_size(original) + sum(stored_size(m) for m in messages)
    with pytest.raises(ConflictError, match="another owner"):
        await store.import_conversation(Conversation(id=original.id, owner=new_id("owner_")), [])
    stray = Message(role="user", content="x", conversation_id="conv_other")
    with pytest.raises(InvalidRequestError):
        await store.import_conversation(original, [stray])
    assert await store.usage(owner) == usage
    later = Conversation(id=original.id, owner=owner, title="renamed " * 20, updated_at=2_000.0)
    assert await store.import_conversation(later, []) == 0
    assert await store.get_conversation(original.id) == later
    assert (await store.usage(owner)).bytes == stored_size(later) + sum(
        stored_size(m) for m in messages
    )
    assert await store.delete_conversation(original.id)
    assert await store.usage(owner) == StoreUsage()


# -- PostgreSQL going away ----------------------------------------------------------------------

PASSWORD = "pw-Zq8vK2-never-shown"


@pytest.fixture
def server_url_with_password(postgres_server: PostgresServer) -> str:
    """The function's own server, with a password in the URL (``trust`` ignores it)."""
    return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{postgres_server.port}/postgres"


async def test_health_names_the_database_and_the_reason(
    postgres_server: PostgresServer, started: list[PostgresStore]
) -> None:
    store = await start(started, postgres_server.url, health_timeout=1.0)
    ok = await store.health()
    assert ok.status == "ok"
    assert f"127.0.0.1:{postgres_server.port}/postgres" in ok.detail
    postgres_server.kill()
    down = await store.health()
    assert down.status == "down"
    assert "refused" in down.detail.lower()
    await asyncio.to_thread(postgres_server.start)
    for _ in range(100):  # the pool reconnects with back-off: give it time
        if (await store.health()).status == "ok":
            break
        await asyncio.sleep(0.1)
    assert (await store.health()).status == "ok"


async def test_the_password_is_never_shown(
    postgres_server: PostgresServer,
    server_url_with_password: str,
    started: list[PostgresStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    store = await start(started, server_url_with_password, acquire_timeout=0.5, health_timeout=0.5)
    conversation = await store.create_conversation(Conversation(owner="ada"))
    seen = [(await store.health()).detail, store.where, repr(store)]
    postgres_server.kill()
    with pytest.raises(ComponentError) as caught:
        await store.append_message(
            Message(role="user", content="lost", conversation_id=conversation.id)
        )
    seen.append(str(caught.value))
    with pytest.raises(ComponentError) as caught:
        await store.get_conversation(conversation.id)
    seen.append(str(caught.value))
    seen.append((await store.health()).detail)
    with pytest.raises(ComponentError) as caught:
        await start(started, server_url_with_password)
    seen.append(str(caught.value))
    logged = [record.getMessage() for record in caplog.records]
    logged += [caplog.text]
    assert any("127.0.0.1" in text for text in seen)
    assert "refused" in " ".join(seen).lower()
    assert not [text for text in seen + logged if PASSWORD in text]


@pytest.mark.parametrize("crash", ["kill", "immediate"])
async def test_restart_under_load_loses_nothing_acknowledged(
    postgres_server: PostgresServer, started: list[PostgresStore], crash: str
) -> None:
    """Several tasks append without pause; PostgreSQL crashes (every process SIGKILLed, or
    ``pg_ctl stop -m immediate``) and is started again. Calls fail only with ComponentError,
    none hangs, calls succeed again once it is back, and every acknowledged message is stored
    exactly once."""
    max_size = 6
    store = await start(started, postgres_server.url, max_size=max_size, acquire_timeout=2.0)
    workers = 4
    conversations = [
        await store.create_conversation(Conversation(owner="load", title=str(n)))
        for n in range(workers)
    ]
    acknowledged: list[set[str]] = [set() for _ in range(workers)]
    failures: list[tuple[float, BaseException]] = []
    phase = {"name": "before"}
    counts = {"before": 0, "after": 0}
    stop = asyncio.Event()
    bound = 60.0  # generous: a call that takes longer than this has hung

    async def work(n: int) -> None:
        i = 0
        while not stop.is_set():
            content = f"{n}-{i}"
            i += 1
            message = Message(role="user", content=content, conversation_id=conversations[n].id)
            began = asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(store.append_message(message), bound)
            except Exception as exc:  # recorded, then checked (a hang is a TimeoutError)
                failures.append((began, exc))
                await asyncio.sleep(0.01)
            else:
                acknowledged[n].add(content)
                if phase["name"] in counts:
                    counts[phase["name"]] += 1

    async def until(condition: Any, what: str) -> None:
        for _ in range(600):
            if condition():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    tasks = [asyncio.create_task(work(n)) for n in range(workers)]
    try:
        await until(lambda: counts["before"] >= 100, "appends before the crash")
        phase["name"] = "down"
        if crash == "kill":
            await asyncio.to_thread(postgres_server.kill)
        else:
            await asyncio.to_thread(postgres_server.stop, "immediate")
        await until(lambda: failures, "a failed call")
        await asyncio.sleep(0.5)  # calls keep coming while PostgreSQL is away
        await asyncio.to_thread(postgres_server.start)
        back = asyncio.get_running_loop().time()
        phase["name"] = "after"
        await until(lambda: counts["after"] >= 100, "appends after the restart")
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    unexpected = [exc for _, exc in failures if not isinstance(exc, ComponentError)]
    assert unexpected == []
    assert all("PostgreSQL" in str(exc) for _, exc in failures)
    # Each stale pooled connection fails at most one call once the server is back.
    assert len([began for began, _ in failures if began > back]) <= max_size
    # Later calls succeed: a burst after the load, from every task at once.
    burst = await asyncio.gather(
        *(
            store.append_message(Message(role="user", content=f"burst-{k}", conversation_id=c.id))
            for k in range(10)
            for c in conversations
        )
    )
    assert len(burst) == 10 * workers
    # Nothing acknowledged is lost, nothing is stored twice.
    stored_bytes = 0
    for n, conversation in enumerate(conversations):
        contents: list[str] = []
        cursor = None
        while True:
            page = await store.list_messages(conversation.id, limit=500, cursor=cursor)
            contents += [m.content for m in page.items]
            stored_bytes += sum(stored_size(m) for m in page.items)
            if (cursor := page.next_cursor) is None:
                break
        assert len(contents) == len(set(contents))
        assert acknowledged[n] <= set(contents)
    # The per-owner counter moved in the same statements: it matches what is stored.
    usage = await store.usage("load")
    assert usage.conversations == workers
    assert usage.bytes == stored_bytes + sum(stored_size(c) for c in conversations)


async def test_calls_while_postgres_is_down_fail_within_the_bound(
    postgres_server: PostgresServer, started: list[PostgresStore]
) -> None:
    store = await start(started, postgres_server.url, acquire_timeout=1.0)
    conversation = await store.create_conversation(Conversation(owner="ada"))
    postgres_server.kill()
    for _ in range(3):  # the stale connection first, then no connection at all
        with pytest.raises(ComponentError, match=r"PostgreSQL store at 127\.0\.0\.1"):
            await asyncio.wait_for(store.get_conversation(conversation.id), 30)
    await asyncio.to_thread(postgres_server.start)
    for _ in range(100):
        try:
            assert await store.get_conversation(conversation.id) == conversation
            break
        except ComponentError:
            await asyncio.sleep(0.1)
    assert await store.get_conversation(conversation.id) == conversation


async def test_a_read_on_a_stale_connection_is_retried(
    postgres_server: PostgresServer, started: list[PostgresStore]
) -> None:
    """After a restart the pool still holds connections to the old server: a read that meets
    one gets its answer on a fresh connection instead of an error."""
    store = await start(started, postgres_server.url, min_size=3, max_size=3)
    conversation = await store.create_conversation(Conversation(owner="ada"))
    await asyncio.to_thread(postgres_server.restart)
    assert await store.get_conversation(conversation.id) == conversation


# -- through the runtime ------------------------------------------------------------------------


async def test_the_runtime_builds_and_starts_it(tmp_path: Path, contract_url: str) -> None:
    config = config_for(
        tmp_path,
        f'[memory]\nbackend = "postgres"\n[plugins.postgres_store]\nurl = "{contract_url}"\n'
        + keyring_toml(tmp_path),
    )
    async with runtime_for(config) as runtime:
        assert isinstance(runtime.memory, PostgresStore)
        conversation = await runtime.memory.create_conversation(Conversation(owner="rt"))
        assert await runtime.memory.get_conversation(conversation.id) == conversation
        health = await runtime.health()
        assert health.components["memory"].status == "ok"
        assert health.components["memory"].backend == "postgres"
        assert "schema hubbub" in health.components["memory"].detail


def test_the_runtime_needs_a_url(tmp_path: Path) -> None:
    config = config_for(tmp_path, '[memory]\nbackend = "postgres"\n')
    with pytest.raises(ConfigError, match=r"plugins\.postgres_store.*url"):
        check_config(config, plugins_for(config, None, ()))


async def test_an_unreachable_database_fails_the_start_clearly(
    started: list[PostgresStore],
) -> None:
    from redis_support import free_port

    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(ComponentError) as caught:
        await start(started, url, connect_timeout=2)
    assert f"127.0.0.1:{url.split(':')[-1].split('/')[0]}/nowhere" in str(caught.value)
    assert PASSWORD not in str(caught.value)
