"""``hubbub store copy``: everything one memory store holds, copied into another (SQLite to
SQLite here, each store chosen by its own configuration file), read back identical; idempotent;
in batches; refusing bad configurations and a store copied onto itself. The command runs as a
real subprocess; the in-process tests use :func:`hubbub.store_copy.copy_store` directly."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from support import keyring_toml, run_cli

from hubbub import hookimpl
from hubbub.config import load_config
from hubbub.contracts import MemoryStore
from hubbub.models import Conversation, MemoryItem, Message, Summary, now
from hubbub.plugins import load_plugins
from hubbub.runtime.selection import check_config
from hubbub.store_copy import SameStoreError, copy_configured, copy_store
from hubbub.testing import runtime_for
from hubbub_plugins.sqlite_store import SQLiteStore

BATCH = 3
"""The batch size the copies use: smaller than what is copied, so that paging is exercised."""


def config_file(root: Path, name: str, extra: str = "") -> Path:
    """A configuration file whose data directory is ``root/name``."""
    path = root / f"{name}.toml"
    path.write_text(f'home = "{root / name}"\n\n[auth]\nmethods = []\n{extra}')
    return path


async def opened(path: Path) -> SQLiteStore:
    store = SQLiteStore(str(path))
    await store.start()
    return store


async def fill(store: MemoryStore) -> dict[str, Any]:
    """Several owners with conversations (one longer than a batch, one empty, one expiring),
    messages, a summary and memories (one of them expired, one owner with memories only)."""
    t = now()
    made: dict[str, Any] = {"conversations": [], "memories": []}
    for owner in ("ada", "bob", "cy"):
        for n in range(4):
            conversation = await store.create_conversation(
                Conversation(
                    owner=owner,
                    title=f"{owner} {n} ✓",
                    model="offline/echo",
                    metadata={"n": n},
                    created_at=t - 1000 + n,
                    updated_at=t - 1000 + n,
                    expires_at=t + 86_400 if n == 2 else None,
                )
            )
            for m in range(7 if n == 0 else (0 if n == 3 else 2)):
                await store.append_message(
                    Message(
                        role="user" if m % 2 == 0 else "assistant",
                        content=f"{owner} {n}/{m}",
                        conversation_id=conversation.id,
                        metadata={"m": m},
                    )
                )
            made["conversations"].append(conversation)
        for k in range(4):
            made["memories"].append(
                await store.add_memory(
                    MemoryItem(
                        owner=owner,
                        content=f"{owner} fact {k}",
                        source_conversation_id=made["conversations"][-1].id,
                        created_at=t - 100 + k,
                    )
                )
            )
    first = made["conversations"][0]
    messages = (await store.list_messages(first.id)).items
    made["summary"] = Summary(
        conversation_id=first.id,
        content="ada greeted",
        through_message_id=messages[3].id,
        covered=4,
        tokens=3,
        model="offline/echo",
    )
    await store.save_summary(made["summary"])
    await store.add_memory(MemoryItem(owner="dee", content="only memories", created_at=t - 5))
    await store.add_memory(MemoryItem(owner="dee", content="forgotten", expires_at=t - 1))
    return made


async def snapshot(store: MemoryStore) -> dict[str, Any]:
    """Everything ``store`` shows, through the contract, in its listing orders."""
    owners: list[str] = []
    cursor = None
    while True:
        page = await store.list_owners(limit=2, cursor=cursor)
        owners += page.items
        if (cursor := page.next_cursor) is None:
            break
    seen: dict[str, Any] = {"owners": owners}
    for owner in owners:
        conversations = (await store.list_conversations(owner, limit=1000)).items
        seen[owner] = {
            "conversations": conversations,
            "messages": {
                c.id: (await store.list_messages(c.id, limit=1000)).items for c in conversations
            },
            "summaries": {c.id: await store.get_summary(c.id) for c in conversations},
            "memories": (await store.list_memories(owner, limit=1000)).items,
        }
    return seen


def messages_in(path: Path) -> int:
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT count(*) FROM messages").fetchone()
    return int(count)


# -- the command -------------------------------------------------------------------------------


async def test_a_copy_reads_back_identical_and_a_second_copies_nothing(tmp_path: Path) -> None:
    source_toml, target_toml = config_file(tmp_path, "a"), config_file(tmp_path, "b")
    source = await opened(tmp_path / "a" / "hubbub.sqlite3")
    try:
        await fill(source)
        before = await snapshot(source)
    finally:
        await source.aclose()
    args = ["store", "copy", "--from", str(source_toml), "--to", str(target_toml)]

    done = run_cli([*args, "--batch-size", str(BATCH)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "owners: 4" in done.stdout
    assert "conversations: 12 copied, 0 updated, 0 already there" in done.stdout
    assert "messages: 33 copied, 0 updated, 0 already there" in done.stdout
    assert "summaries: 1 copied, 0 updated, 0 already there" in done.stdout
    assert "memories: 13 copied, 0 updated, 0 already there" in done.stdout  # not the expired one
    target = await opened(tmp_path / "b" / "hubbub.sqlite3")
    try:
        after = await snapshot(target)
        assert after == before  # ids, timestamps, fields, order
        assert before["owners"] == ["ada", "bob", "cy", "dee"]
        for owner in ("ada", "bob", "cy"):  # the same, but for the digits of updated_at
            copied, original = await target.usage(owner), await usage_of(tmp_path / "a", owner)
            assert copied.conversations == original.conversations
            assert abs(copied.bytes - original.bytes) <= 16 * original.conversations
    finally:
        await target.aclose()

    again = run_cli([*args, "--batch-size", str(BATCH)], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "conversations: 0 copied, 0 updated, 12 already there" in again.stdout
    assert "messages: 0 copied, 0 updated, 33 already there" in again.stdout
    assert "summaries: 0 copied, 0 updated, 1 already there" in again.stdout
    assert "memories: 0 copied, 0 updated, 13 already there" in again.stdout
    assert messages_in(tmp_path / "b" / "hubbub.sqlite3") == 33
    target = await opened(tmp_path / "b" / "hubbub.sqlite3")
    try:
        assert await snapshot(target) == before
        assert not any(
            o.startswith("hubbub-store-copy") for o in (await snapshot(target))["owners"]
        )
    finally:
        await target.aclose()


async def usage_of(home: Path, owner: str) -> Any:
    store = await opened(home / "hubbub.sqlite3")
    try:
        return await store.usage(owner)
    finally:
        await store.aclose()


async def test_copying_again_brings_over_what_is_new_or_changed(tmp_path: Path) -> None:
    source_toml, target_toml = config_file(tmp_path, "a"), config_file(tmp_path, "b")
    source = await opened(tmp_path / "a" / "hubbub.sqlite3")
    try:
        made = await fill(source)
        args = ["store", "copy", "--from", str(source_toml), "--to", str(target_toml)]
        assert run_cli(args, cwd=tmp_path).returncode == 0
        talk, renamed = made["conversations"][1], made["conversations"][5]
        await source.append_message(Message(role="user", content="new", conversation_id=talk.id))
        renamed.title = "renamed since"
        await source.update_conversation(renamed)
        newer = Summary(
            conversation_id=made["summary"].conversation_id,
            content="ada greeted, twice",
            through_message_id=made["summary"].through_message_id,
            covered=5,
        )
        await source.save_summary(newer)
        await source.create_conversation(Conversation(owner="eve", title="new owner"))
        await source.add_memory(MemoryItem(owner="bob", content="learned since"))
        before = await snapshot(source)
    finally:
        await source.aclose()
    done = run_cli(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "owners: 5" in done.stdout
    assert "conversations: 1 copied, 2 updated, 10 already there" in done.stdout
    assert "messages: 1 copied, 0 updated, 33 already there" in done.stdout
    assert "summaries: 0 copied, 1 updated, 0 already there" in done.stdout
    assert "memories: 1 copied, 0 updated, 13 already there" in done.stdout
    target = await opened(tmp_path / "b" / "hubbub.sqlite3")
    try:
        assert await snapshot(target) == before
    finally:
        await target.aclose()


def test_a_bad_configuration_is_a_clear_error_and_exit_code_2(tmp_path: Path) -> None:
    good = config_file(tmp_path, "a")
    missing = tmp_path / "missing.toml"
    done = run_cli(["store", "copy", "--from", str(missing), "--to", str(good)], cwd=tmp_path)
    assert done.returncode == 2
    assert f"{missing}: cannot read" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "a").exists()  # nothing was opened, nothing created

    typo = config_file(tmp_path, "typo", '\n[memory]\nbackend = "sqlight"\n')
    done = run_cli(["store", "copy", "--from", str(good), "--to", str(typo)], cwd=tmp_path)
    assert done.returncode == 2
    assert f"{typo}:" in done.stderr
    assert "memory.backend" in done.stderr
    assert "did you mean 'sqlite'" in done.stderr
    assert "Traceback" not in done.stderr

    done = run_cli(["store", "copy", "--from", str(good)], cwd=tmp_path)
    assert done.returncode == 2
    assert "--to" in done.stderr


async def test_a_store_is_not_copied_onto_itself(tmp_path: Path) -> None:
    first = config_file(tmp_path, "a")
    shared = tmp_path / "a" / "hubbub.sqlite3"
    # another file, another data directory, the same database
    second = config_file(tmp_path, "b", f'\n[plugins.sqlite_store]\npath = "{shared}"\n')
    source = await opened(shared)
    try:
        await fill(source)
        before = await snapshot(source)
    finally:
        await source.aclose()
    for args in (
        ["--from", str(first), "--to", str(first)],
        ["--from", str(first), "--to", str(second)],
    ):
        done = run_cli(["store", "copy", *args], cwd=tmp_path)
        assert done.returncode == 2, done.stdout
        assert "same store" in done.stderr
        assert "nothing copied" in done.stderr
    store = await opened(shared)
    try:
        assert await snapshot(store) == before  # the probe is gone, nothing doubled
    finally:
        await store.aclose()


# -- in process --------------------------------------------------------------------------------


class Recording:
    """A store that records the largest page asked for and the largest batch written."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.largest_page = 0
        self.largest_import = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)
        if not name.startswith("list_"):
            return method

        async def listing(*args: Any, **kwargs: Any) -> Any:
            self.largest_page = max(self.largest_page, kwargs.get("limit", 100))
            return await method(*args, **kwargs)

        return listing

    async def import_conversation(self, conversation: Conversation, messages: Any) -> int:
        self.largest_import = max(self.largest_import, len(messages))
        return await self.store.import_conversation(conversation, messages)


async def test_a_copy_reads_and_writes_in_batches(tmp_path: Path) -> None:
    source = await opened(tmp_path / "a.sqlite3")
    target = await opened(tmp_path / "b.sqlite3")
    try:
        await fill(source)
        reading, writing = Recording(source), Recording(target)
        report = await copy_store(reading, writing, batch_size=BATCH)  # type: ignore[arg-type]
        assert report.messages.copied == 33
        assert reading.largest_page == BATCH
        assert writing.largest_page == BATCH
        assert writing.largest_import == BATCH  # the 7-message conversation went in 3 batches
        assert await snapshot(target) == await snapshot(source)
        with pytest.raises(SameStoreError):
            await copy_store(source, source)
    finally:
        await source.aclose()
        await target.aclose()


class OtherStorePlugin:
    """A third-party plugin: its own store name, its own file."""

    @hookimpl
    def register_memory_stores(self, register: Any) -> None:
        register("elsewhere", lambda context: SQLiteStore(str(context.data_dir / "other.db")))


async def test_the_stores_are_chosen_by_configuration_like_any_other(tmp_path: Path) -> None:
    """Each side's store comes from its configuration's [memory] backend, through the
    registry: here the target is a third-party plugin's."""
    source_config = load_config(config_file(tmp_path, "a"), env={})
    target_config = load_config(
        config_file(tmp_path, "b", '\n[memory]\nbackend = "elsewhere"\n'), env={}
    )
    plugins = load_plugins(extra=[OtherStorePlugin()], env={})
    source = await opened(tmp_path / "a" / "hubbub.sqlite3")
    try:
        await fill(source)
        before = await snapshot(source)
    finally:
        await source.aclose()
    report = await copy_configured(
        (source_config, plugins, check_config(source_config, plugins)),
        (target_config, plugins, check_config(target_config, plugins)),
    )
    assert report.conversations.copied == 12
    assert not (tmp_path / "b" / "hubbub.sqlite3").exists()
    target = await opened(tmp_path / "b" / "other.db")
    try:
        assert await snapshot(target) == before
    finally:
        await target.aclose()


# -- the two contract methods the copy uses ----------------------------------------------------


async def test_sqlite_moves_to_postgresql(tmp_path: Path, postgres_session: Any) -> None:
    """The path a team takes when it outgrows one machine: the SQLite store's data, copied into
    PostgreSQL by the command, reads back identical through the postgres store."""
    url = postgres_session.create_database()
    source_toml = config_file(tmp_path, "a")
    target_toml = config_file(
        tmp_path,
        "b",
        f'[memory]\nbackend = "postgres"\n[plugins.postgres_store]\nurl = "{url}"\n'
        + keyring_toml(tmp_path),
    )
    source = await opened(tmp_path / "a" / "hubbub.sqlite3")
    try:
        await fill(source)
        before = await snapshot(source)
    finally:
        await source.aclose()
    args = ["store", "copy", "--from", str(source_toml), "--to", str(target_toml)]
    done = run_cli([*args, "--batch-size", str(BATCH)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "messages: 33 copied" in done.stdout
    again = run_cli(args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "messages: 0 copied, 0 updated, 33 already there" in again.stdout

    async with runtime_for(load_config(path=target_toml)) as runtime:
        assert await snapshot(runtime.memory) == before
        assert (await runtime.health()).components["memory"].backend == "postgres"


# -- accounts ------------------------------------------------------------------------------------

FAST_PASSWORDS = "[passwords]\ntime_cost = 1\nmemory_cost = 8\n"
SECRET = "correct horse battery"


async def make_accounts(toml: Path) -> None:
    """alice and bob, an API key record and a session, in the store ``toml`` selects."""
    from hubbub.models import Principal, Record

    async with runtime_for(load_config(path=toml)) as runtime:
        await runtime.users.add("alice", SECRET)
        await runtime.users.add("bob", SECRET, admin=True)
        await runtime.accounts.create(
            Record(kind="api_key", id="k1", owner="alice", lookup="digest-1", data=b"{}")
        )
        await runtime.sessions.open(Principal(id="alice"), method="local")


async def test_accounts_move_with_the_store(tmp_path: Path, postgres_session: Any) -> None:
    url = postgres_session.create_database()
    source_toml = config_file(tmp_path, "a", FAST_PASSWORDS)
    target_toml = config_file(
        tmp_path,
        "b",
        FAST_PASSWORDS
        + f'[memory]\nbackend = "postgres"\n[plugins.postgres_store]\nurl = "{url}"\n'
        + keyring_toml(tmp_path),
    )
    await make_accounts(source_toml)
    args = ["store", "copy", "--from", str(source_toml), "--to", str(target_toml)]
    done = run_cli(args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "users: 2 copied" in done.stdout
    assert "api keys: 1 copied" in done.stdout
    again = run_cli(args, cwd=tmp_path)
    assert "users: 0 copied, 0 updated, 2 already there" in again.stdout

    async with runtime_for(load_config(path=target_toml)) as runtime:
        assert (await runtime.health()).components["accounts"].backend == "postgres"
        assert [user.id for user in await runtime.users.list()] == ["alice", "bob"]
        assert (await runtime.users.check_password("alice", SECRET)).user is not None
        assert "admin" in (await runtime.users.require("bob")).value.roles
        assert await runtime.accounts.find("api_key", "digest-1") is not None
        assert await runtime.sessions.list("alice") == []  # sessions stay behind


async def test_an_account_named_alike_is_not_copied_over_another(tmp_path: Path) -> None:
    source_toml = config_file(tmp_path, "a", FAST_PASSWORDS)
    target_toml = config_file(tmp_path, "b", FAST_PASSWORDS)
    await make_accounts(source_toml)
    async with runtime_for(load_config(path=target_toml)) as runtime:
        await runtime.users.add("ALICE", "another password")
    plugins = load_plugins(env={})
    source_config, target_config = load_config(path=source_toml), load_config(path=target_toml)
    report = await copy_configured(
        (source_config, plugins, check_config(source_config, plugins)),
        (target_config, plugins, check_config(target_config, plugins)),
    )
    assert report.users is not None
    assert (report.users.copied, report.users.conflicting) == (1, 1)
    async with runtime_for(target_config) as runtime:
        assert (await runtime.users.check_password("alice", "another password")).user


async def test_one_account_store_is_not_copied_onto_itself(tmp_path: Path) -> None:
    shared = tmp_path / "accounts.sqlite3"
    extra = f'[plugins.sqlite_store]\naccounts_path = "{shared}"\n'
    source_toml = config_file(tmp_path, "a", extra)
    target_toml = config_file(tmp_path, "b", extra)
    plugins = load_plugins(env={})
    source_config, target_config = load_config(path=source_toml), load_config(path=target_toml)
    with pytest.raises(SameStoreError, match="same account store"):
        await copy_configured(
            (source_config, plugins, check_config(source_config, plugins)),
            (target_config, plugins, check_config(target_config, plugins)),
        )
