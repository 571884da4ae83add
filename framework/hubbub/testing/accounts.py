"""The account store contract suite: the tests every :class:`hubbub.contracts.AccountStore`
passes. Subclass it with a ``store`` fixture yielding a started, empty store, as for
:class:`hubbub.testing.MemoryStoreContract`::

    class TestMyAccounts(AccountStoreContract):
        @pytest.fixture
        async def store(self, tmp_path):
            store = MyAccountStore(tmp_path / "accounts")
            await store.start()
            yield store
            await store.aclose()

Every test uses kinds of its own, so a store shared between tests works too.
"""

from __future__ import annotations

import asyncio

import pytest

from hubbub.contracts import AccountStore
from hubbub.errors import ConflictError, NotFoundError
from hubbub.models import Record, new_id

__all__ = ["AccountStoreContract"]


def _kind() -> str:
    return new_id("kind_")


def _record(kind: str, record_id: str, **fields: object) -> Record:
    data = fields.pop("data", f"data of {record_id}".encode())
    return Record(kind=kind, id=record_id, data=data, **fields)  # type: ignore[arg-type]


class AccountStoreContract:
    """The tests; subclass it and provide a ``store`` fixture (see the module's docstring)."""

    async def test_create_then_get_and_find(self, store: AccountStore) -> None:
        kind = _kind()
        created = await store.create(
            _record(kind, "u1", owner="alice", lookup="alice", expires_at=2e9)
        )
        assert created.version == 1
        got = await store.get(kind, "u1")
        assert got == created
        assert got.data == b"data of u1"
        assert got.owner == "alice"
        assert got.expires_at == 2e9
        assert await store.find(kind, "alice") == created
        assert await store.get(kind, "u2") is None
        assert await store.find(kind, "bob") is None
        assert await store.get(_kind(), "u1") is None  # kinds are apart

    async def test_binary_data_survives(self, store: AccountStore) -> None:
        kind = _kind()
        data = bytes(range(256)) * 4 + b"\x00"
        await store.create(_record(kind, "bin", data=data))
        got = await store.get(kind, "bin")
        assert got is not None
        assert got.data == data

    async def test_create_refuses_a_taken_id_or_lookup(self, store: AccountStore) -> None:
        kind = _kind()
        await store.create(_record(kind, "a", lookup="same", data=b"first"))
        with pytest.raises(ConflictError):
            await store.create(_record(kind, "a", data=b"second"))
        with pytest.raises(ConflictError):
            await store.create(_record(kind, "b", lookup="same"))
        assert await store.get(kind, "b") is None
        got = await store.get(kind, "a")
        assert got is not None
        assert got.data == b"first"
        # the same lookup in another kind is fine
        await store.create(_record(_kind(), "a", lookup="same"))

    async def test_records_without_lookup_never_collide(self, store: AccountStore) -> None:
        kind = _kind()
        for index in range(3):
            await store.create(_record(kind, f"r{index}"))
        assert len(await store.list_records(kind)) == 3

    async def test_replace_compares_versions(self, store: AccountStore) -> None:
        kind = _kind()
        first = await store.create(_record(kind, "s", owner="o", data=b"v1"))
        second = await store.replace(
            Record(kind=kind, id="s", owner="o", data=b"v2", version=first.version)
        )
        assert second.version == first.version + 1
        with pytest.raises(ConflictError):  # written from the stale version
            await store.replace(
                Record(kind=kind, id="s", owner="o", data=b"stale", version=first.version)
            )
        got = await store.get(kind, "s")
        assert got is not None
        assert got.data == b"v2"
        assert got.version == second.version
        with pytest.raises(NotFoundError):
            await store.replace(Record(kind=kind, id="gone", data=b"x", version=1))

    async def test_one_of_concurrent_replaces_wins(self, store: AccountStore) -> None:
        kind = _kind()
        created = await store.create(_record(kind, "race", data=b"0"))

        async def write(value: bytes) -> bool:
            try:
                await store.replace(
                    Record(kind=kind, id="race", data=value, version=created.version)
                )
            except ConflictError:
                return False
            return True

        results = await asyncio.gather(*(write(str(n).encode()) for n in range(8)))
        assert results.count(True) == 1
        got = await store.get(kind, "race")
        assert got is not None
        assert got.version == 2

    async def test_replace_moves_the_lookup(self, store: AccountStore) -> None:
        kind = _kind()
        first = await store.create(_record(kind, "u", lookup="old"))
        other = await store.create(_record(kind, "v", lookup="taken"))
        with pytest.raises(ConflictError):
            await store.replace(
                Record(kind=kind, id="u", lookup="taken", data=b"x", version=first.version)
            )
        assert (await store.find(kind, "old")) == first  # nothing changed
        moved = await store.replace(
            Record(kind=kind, id="u", lookup="new", data=b"y", version=first.version)
        )
        assert await store.find(kind, "old") is None
        assert await store.find(kind, "new") == moved
        assert await store.find(kind, "taken") == other
        cleared = await store.replace(
            Record(kind=kind, id="u", lookup=None, data=b"z", version=moved.version)
        )
        assert await store.find(kind, "new") is None
        assert cleared.lookup is None
        await store.create(_record(kind, "w", lookup="new"))  # free again

    async def test_replace_moves_the_owner(self, store: AccountStore) -> None:
        kind = _kind()
        created = await store.create(_record(kind, "k", owner="alice"))
        await store.replace(Record(kind=kind, id="k", owner="bob", data=b"x", version=1))
        assert await store.list_records(kind, owner="alice") == []
        assert [r.id for r in await store.list_records(kind, owner="bob")] == ["k"]
        assert created.owner == "alice"

    async def test_delete(self, store: AccountStore) -> None:
        kind = _kind()
        await store.create(_record(kind, "d", owner="o", lookup="name"))
        assert await store.delete(kind, "d") is True
        assert await store.delete(kind, "d") is False
        assert await store.get(kind, "d") is None
        assert await store.find(kind, "name") is None
        assert await store.list_records(kind, owner="o") == []
        await store.create(_record(kind, "d2", lookup="name"))  # the lookup is free again

    async def test_listing_is_by_id_paged_and_per_owner(self, store: AccountStore) -> None:
        kind = _kind()
        ids = [f"id{n:03d}" for n in range(25)]
        for index, record_id in enumerate(reversed(ids)):
            await store.create(_record(kind, record_id, owner="odd" if index % 2 else "even"))
        await store.create(_record(_kind(), "id000"))  # another kind
        page = await store.list_records(kind, limit=10)
        assert [r.id for r in page] == ids[:10]
        rest = await store.list_records(kind, after=page[-1].id, limit=100)
        assert [r.id for r in rest] == ids[10:]
        odd = await store.list_records(kind, owner="odd")
        assert len(odd) == 12
        assert all(r.owner == "odd" for r in odd)
        assert [r.id for r in odd] == sorted(r.id for r in odd)
        assert await store.list_records(kind, owner="nobody") == []
        assert await store.list_records(kind, after="id024") == []

    async def test_purge_removes_only_what_expired(self, store: AccountStore) -> None:
        kind = _kind()
        await store.create(_record(kind, "old", lookup="l-old", owner="o", expires_at=100.0))
        await store.create(_record(kind, "due", expires_at=200.0))
        await store.create(_record(kind, "later", expires_at=300.0))
        await store.create(_record(kind, "never"))
        removed = 0
        while True:
            done = await store.purge(now=200.0, limit=1)
            assert done <= 1
            removed += done
            if done == 0:
                break
        assert removed >= 2
        assert await store.get(kind, "old") is None
        assert await store.get(kind, "due") is None
        assert await store.find(kind, "l-old") is None
        assert await store.list_records(kind, owner="o") == []
        assert {r.id for r in await store.list_records(kind)} == {"later", "never"}

    async def test_replace_changes_expiry(self, store: AccountStore) -> None:
        kind = _kind()
        created = await store.create(_record(kind, "e", expires_at=100.0))
        await store.replace(
            Record(kind=kind, id="e", data=b"x", expires_at=None, version=created.version)
        )
        while await store.purge(now=1000.0, limit=100) == 100:
            pass
        got = await store.get(kind, "e")
        assert got is not None
        assert got.expires_at is None
