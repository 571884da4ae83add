"""Typed items in an :class:`~hubbub.contracts.AccountStore`: :class:`Records` encodes one
msgspec Struct type into :class:`~hubbub.models.Record`\\ s of one kind and back, so the
repositories (users, sessions, API keys) never handle bytes, and a store never sees a type."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec

from hubbub.contracts import AccountStore
from hubbub.models import Record

__all__ = ["Item", "Records"]

logger = logging.getLogger("hubbub.auth")

T = TypeVar("T", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()


class Item(msgspec.Struct, Generic[T], kw_only=True, frozen=True):
    """A decoded record: the value and what :meth:`Records.replace` needs to write it back."""

    value: T
    """The decoded Struct."""
    version: int
    """The stored version (compared when writing back)."""


class Records(Generic[T]):
    """The records of one ``kind``, each holding a ``T``."""

    def __init__(
        self,
        store: AccountStore,
        kind: str,
        type: type[T],
        *,
        key: Callable[[T], str],
        owner: Callable[[T], str] = lambda value: "",
        lookup: Callable[[T], str | None] = lambda value: None,
        expires: Callable[[T], float | None] = lambda value: None,
    ) -> None:
        self.store = store
        self.kind = kind
        self._decoder = msgspec.json.Decoder(type)
        self._key, self._owner, self._lookup, self._expires = key, owner, lookup, expires

    def _record(self, value: T, version: int = 0) -> Record:
        return Record(
            kind=self.kind,
            id=self._key(value),
            data=_encoder.encode(value),
            owner=self._owner(value),
            lookup=self._lookup(value),
            version=version,
            expires_at=self._expires(value),
        )

    def _decode(self, record: Record | None) -> Item[T] | None:
        if record is None:
            return None
        try:
            value = self._decoder.decode(record.data)
        except msgspec.DecodeError as exc:
            logger.error("unreadable %s record %r: %s", self.kind, record.id, exc)
            return None
        return Item(value=value, version=record.version)

    async def create(self, value: T) -> Item[T]:
        """Store a new ``value`` (:class:`~hubbub.errors.ConflictError` when its id or lookup
        is taken)."""
        record = await self.store.create(self._record(value))
        return Item(value=value, version=record.version)

    async def get(self, key: str) -> Item[T] | None:
        """The item with id ``key``, or ``None``."""
        return self._decode(await self.store.get(self.kind, key))

    async def find(self, lookup: str) -> Item[T] | None:
        """The item whose lookup is ``lookup``, or ``None``."""
        return self._decode(await self.store.find(self.kind, lookup))

    async def replace(self, value: T, version: int) -> Item[T]:
        """Write ``value`` over the item stored at ``version`` (:class:`~hubbub.errors.
        ConflictError` when it changed since, :class:`~hubbub.errors.NotFoundError` when it
        is gone)."""
        record = await self.store.replace(self._record(value, version))
        return Item(value=value, version=record.version)

    async def delete(self, key: str) -> bool:
        """Delete the item with id ``key``; whether it existed."""
        return await self.store.delete(self.kind, key)

    async def all(self, *, owner: str | None = None, page: int = 200) -> list[Item[T]]:
        """Every item (``owner``'s only, when given), in id order, read ``page`` at a time."""
        items: list[Item[T]] = []
        after: str | None = None
        while True:
            records = await self.store.list_records(self.kind, owner=owner, after=after, limit=page)
            items += [item for item in map(self._decode, records) if item is not None]
            if len(records) < page:
                return items
            after = records[-1].id
