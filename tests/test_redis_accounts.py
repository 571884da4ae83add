"""The ``redis`` account store against real ``redis-server``s: the account store contract (on one
Redis and on a three-node Redis Cluster), its keys (under the prefix, one slot, nothing left
behind), two processes sharing one Redis, and clear errors while Redis is away."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import msgspec
import pytest
import redis.asyncio
from redis_support import RedisCluster, RedisServer
from support import keyring_toml

from hubbub.config import Config
from hubbub.errors import ComponentError, ConflictError
from hubbub.models import Record, new_id
from hubbub.runtime import Runtime
from hubbub.testing import AccountStoreContract, context_for
from hubbub_plugins.redis_accounts import RedisAccountStore
from hubbub_plugins.redis_store import RedisStoreSettings

TIMEOUT = 1.0
"""``[redis] timeout`` of these tests' stores."""
MARGIN = 4.0
"""Slack allowed over ``TIMEOUT`` for an operation against a dead Redis (a loaded machine):
the bound tested is "no hang", not a latency."""


def redis_toml(url: str, extra: str = "") -> str:
    return f'[redis]\nurl = "{url}"\ntimeout = {TIMEOUT}\n' + extra


@contextlib.asynccontextmanager
async def open_accounts(
    config: Config, prefix: str | None = None
) -> AsyncIterator[RedisAccountStore]:
    """A started store with a context like the runtime's (its own shared-resources registry,
    so two of them are two clients: two processes)."""
    settings = RedisStoreSettings() if prefix is None else RedisStoreSettings(key_prefix=prefix)
    context = context_for(
        config, kind="accounts", name="redis", plugin="redis_store", settings=settings
    )
    store = RedisAccountStore(context)
    try:
        await store.start()
        yield store
    finally:
        await store.aclose()
        await context.tasks.aclose()
        await context.resources.release_all()


@pytest.fixture
async def store(
    redis_server: RedisServer, make_config: Callable[..., Config]
) -> AsyncIterator[RedisAccountStore]:
    async with open_accounts(make_config(redis_toml(redis_server.url))) as opened:
        yield opened


async def all_keys(client: redis.asyncio.Redis) -> list[bytes]:
    return sorted([key async for key in client.scan_iter(count=1000)])


def kind() -> str:
    return new_id("kind_")


class TestRedisAccounts(AccountStoreContract):
    """The contract suite on one ``redis-server`` per test."""


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One three-node Redis Cluster for the module (every contract test uses kinds of its
    own)."""
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


class TestRedisAccountsOnACluster(AccountStoreContract):
    """The contract suite on a Redis Cluster (``[redis] cluster = true``)."""

    @pytest.fixture
    async def store(
        self, redis_cluster: RedisCluster, make_config: Callable[..., Config]
    ) -> AsyncIterator[RedisAccountStore]:
        config = make_config(redis_toml(redis_cluster.url, "cluster = true\n"))
        async with open_accounts(config) as opened:
            yield opened

    async def test_every_key_lives_in_one_slot(
        self, store: RedisAccountStore, redis_cluster: RedisCluster
    ) -> None:
        await fill(store, kind())
        client = redis.asyncio.RedisCluster.from_url(redis_cluster.url)
        try:
            keys = [key async for key in client.scan_iter(match="{hubbub:store:}account*")]
            slots = {client.keyslot(key) for key in keys}
        finally:
            await client.aclose()
        assert len(keys) >= 6
        assert len(slots) == 1


# -- keys --------------------------------------------------------------------------------------


async def fill(store: RedisAccountStore, of: str) -> list[Record]:
    """Records that use every index: lookups, owners, expiries, and one without any."""
    return [
        await store.create(
            Record(kind=of, id="u1", owner="ada", lookup="ada", data=b"\x00\xff", expires_at=9e9)
        ),
        await store.create(Record(kind=of, id="u2", owner="bob", lookup="bob", data=b"b")),
        await store.create(Record(kind=of, id="s1", data=b"s", expires_at=100.0)),
    ]


async def test_every_key_carries_the_prefix_and_nothing_is_left_behind(
    redis_server: RedisServer,
    redis_client: redis.asyncio.Redis,
    make_config: Callable[..., Config],
) -> None:
    async with open_accounts(make_config(redis_toml(redis_server.url)), "team-a:") as store:
        of = kind()
        first, second, _ = await fill(store, of)
        keys = await all_keys(redis_client)
        assert len(keys) >= 6  # records, ids, lookups, owners, expiry: see the layout
        assert all(key.startswith(b"team-a:account") for key in keys), keys
        # move a lookup, an owner and an expiry; delete one; purge one; delete the last
        moved = await store.replace(
            Record(kind=of, id="u1", owner="cy", lookup="cy", data=b"x", version=first.version)
        )
        assert moved.version == 2
        assert await store.delete(of, second.id)
        assert await store.purge(now=200.0, limit=10) == 1
        assert await store.delete(of, "u1")
        assert await all_keys(redis_client) == []


async def test_kinds_and_ids_cannot_spell_each_others_keys(store: RedisAccountStore) -> None:
    base = kind()
    # without the kind's length in every key, the first record's lookup index would be the
    # second record's hash ("<base>:record:y" + ":lookups" == "<base>" + ":record:" + id)
    one = await store.create(Record(kind=f"{base}:record:y", id="a", lookup="l", data=b"1"))
    two = await store.create(Record(kind=base, id="y:lookups", owner="o", data=b"2"))
    three = await store.create(Record(kind=f"{base}:a", id="b", owner="o", lookup="l", data=b"3"))
    assert await store.get(f"{base}:record:y", "a") == one
    assert await store.get(base, "y:lookups") == two
    assert await store.find(f"{base}:record:y", "l") == one
    assert await store.find(f"{base}:a", "l") == three
    assert await store.list_records(base, owner="o") == [two]
    assert await store.delete(base, "y:lookups")
    assert await store.find(f"{base}:record:y", "l") == one


async def test_two_prefixes_on_one_redis_do_not_see_each_other(
    redis_server: RedisServer, make_config: Callable[..., Config]
) -> None:
    config = make_config(redis_toml(redis_server.url))
    async with open_accounts(config, "a:") as a, open_accounts(config, "b:") as b:
        of = kind()
        await fill(a, of)
        assert await b.get(of, "u1") is None
        assert await b.find(of, "ada") is None
        assert await b.list_records(of) == []
        assert await b.purge(now=1e10, limit=100) == 0
        assert await b.delete(of, "u1") is False
        await b.create(Record(kind=of, id="u1", lookup="ada", data=b"theirs"))
        assert len(await a.list_records(of)) == 3


# -- two processes -----------------------------------------------------------------------------


async def test_two_processes_agree(
    redis_server: RedisServer, make_config: Callable[..., Config]
) -> None:
    config = make_config(redis_toml(redis_server.url))
    async with open_accounts(config) as one, open_accounts(config) as two:
        assert one._client is not two._client  # two clients, as two processes have
        of = kind()
        session = await one.create(
            Record(kind=of, id="sess-1", owner="ada", lookup="digest", data=b"\x01s")
        )
        assert await two.get(of, "sess-1") == session
        assert await two.find(of, "digest") == session
        assert await two.list_records(of, owner="ada") == [session]
        assert await two.delete(of, "sess-1")
        assert await one.get(of, "sess-1") is None
        assert await one.find(of, "digest") is None

        created = await one.create(Record(kind=of, id="race", data=b"0"))
        for round_ in range(10):  # concurrent rotations from the same version, across both

            async def rotate(store: RedisAccountStore, value: bytes, at: Record) -> bool:
                try:
                    await store.replace(msgspec.structs.replace(at, data=value))
                except ConflictError:
                    return False
                return True

            results = await asyncio.gather(
                *(
                    rotate(one if n % 2 else two, f"{round_}-{n}".encode(), created)
                    for n in range(6)
                )
            )
            assert results.count(True) == 1
            stored = await two.get(of, "race")
            assert stored is not None
            assert stored.version == created.version + 1
            assert stored.data == f"{round_}-{results.index(True)}".encode()
            created = stored


# -- Redis away --------------------------------------------------------------------------------


async def test_redis_killed_mid_use_is_a_clear_error_and_coming_back_heals(
    store: RedisAccountStore, redis_server: RedisServer
) -> None:
    of = kind()
    record = await store.create(Record(kind=of, id="k", owner="o", lookup="l", data=b"x"))
    redis_server.kill()
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
            await call()
        assert time.monotonic() - began < TIMEOUT + MARGIN
        assert caught.value.status == 503
        message = str(caught.value)
        assert message.startswith(f"the Redis account store at {redis_server.url} failed to ")
        assert "Traceback" not in message
    health = await store.health()
    assert health.status == "down"
    assert f"Redis at {redis_server.url} does not answer" in health.detail
    redis_server.start()  # same port, empty: nothing was persisted
    assert (await store.health()).status == "ok"
    assert await store.get(of, "k") is None
    again = await store.create(Record(kind=of, id="k", lookup="l", data=b"back"))
    assert await store.find(of, "l") == again


async def test_starting_without_redis_names_it_without_the_password(
    redis_server: RedisServer, make_config: Callable[..., Config]
) -> None:
    url = redis_server.url.replace("redis://", "redis://:s3cret@")
    redis_server.kill()
    with pytest.raises(ComponentError) as caught:
        async with open_accounts(make_config(redis_toml(url))):
            pass
    assert "s3cret" not in str(caught.value)
    assert str(caught.value).startswith("the Redis account store at redis://:***@127.0.0.1:")


async def test_a_corrupt_record_is_named_with_its_key(
    store: RedisAccountStore, redis_client: redis.asyncio.Redis
) -> None:
    of = kind()
    await store.create(Record(kind=of, id="c", data=b"x"))
    key = f"hubbub:store:account:{len(of)}:{of}:record:c"
    await redis_client.hset(key, "version", "not a number")
    with pytest.raises(ComponentError, match=rf"is corrupt .*restore key '{key}'"):
        await store.get(of, "c")
    assert await store.delete(of, "c")  # deleting it works


# -- through the runtime -----------------------------------------------------------------------


async def test_the_runtime_keeps_accounts_in_redis(
    tmp_path: Path,
    make_runtime: Callable[..., Runtime],
    redis_server: RedisServer,
    redis_client: redis.asyncio.Redis,
) -> None:
    text = '[memory]\nbackend = "redis"\n' + redis_toml(redis_server.url)
    text += keyring_toml(tmp_path)
    async with make_runtime(text) as runtime:
        accounts = runtime.accounts
        assert isinstance(accounts, RedisAccountStore)
        of = kind()
        await accounts.create(Record(kind=of, id="r", data=b"kept"))
        health = await runtime.health()
        assert health.components["accounts"].status == "ok"
        assert health.components["accounts"].backend == "redis"
    assert await redis_client.hget(f"hubbub:store:account:{len(of)}:{of}:record:r", "data") == (
        b"kept"
    )
