"""Long-term memory: what a user's conversations should know about them, kept across
conversations in the memory store and managed by its owner (``/api/memory``).

:class:`LongTermMemory` checks ownership and quotas around the store's memory methods, and
picks the memories shown to a model (:meth:`LongTermMemory.shown`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from hubbub.config import RetentionConfig
from hubbub.contracts import MemoryStore
from hubbub.errors import InvalidRequestError, NotFoundError
from hubbub.memory.expiry import checked_expiry
from hubbub.memory.quotas import Quotas
from hubbub.models import MemoryItem, Page, Principal, stored_size

__all__ = ["MAX_MEMORY_CHARS", "MAX_METADATA_BYTES", "LongTermMemory"]

MAX_MEMORY_CHARS = 4000
MAX_METADATA_BYTES = 4096
"""Most bytes a memory's metadata may take (as JSON): memories are read for every reply."""
"""Longest memory, in characters: a memory is a fact, not a document."""


class LongTermMemory:
    """One store's long-term memories, as their owners see them."""

    def __init__(
        self,
        store: MemoryStore,
        quotas: Quotas,
        retention: RetentionConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.quotas = quotas
        self.retention = retention
        self._clock = clock

    async def add(
        self,
        owner: Principal,
        content: str,
        *,
        source_conversation_id: str | None = None,
        expires_at: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> MemoryItem:
        """Remember ``content`` for ``owner``. Without ``expires_at`` it is kept for
        ``[retention] memory_days`` (or until deleted). ``source_conversation_id`` must be one of
        theirs."""
        content = content.strip()
        if not content:
            raise InvalidRequestError("content must not be empty", field="content")
        if len(content) > MAX_MEMORY_CHARS:
            raise InvalidRequestError(
                f"content is longer than {MAX_MEMORY_CHARS} characters", field="content"
            )
        if metadata and len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
            raise InvalidRequestError(
                f"metadata takes more than {MAX_METADATA_BYTES} bytes as JSON", field="metadata"
            )
        moment = self._clock()
        expires_at = checked_expiry(expires_at, moment)
        if expires_at is None and self.retention.memory_days is not None:
            expires_at = moment + self.retention.memory_days * 86_400
        if source_conversation_id is not None:
            conversation = await self.store.get_conversation(source_conversation_id)
            if conversation is None or conversation.owner != owner.id:
                raise NotFoundError(f"no conversation {source_conversation_id!r}")
        item = MemoryItem(
            owner=owner.id,
            content=content,
            source_conversation_id=source_conversation_id,
            created_at=moment,
            expires_at=expires_at,
            metadata=metadata or {},
        )
        self.quotas.check_size(content)
        async with self.quotas.writing(owner.id):
            await self.quotas.check_bytes(owner.id, stored_size(item))
            return await self.store.add_memory(item)

    async def list_memories(
        self, owner: Principal, *, limit: int = 100, cursor: str | None = None
    ) -> Page[MemoryItem]:
        """``owner``'s memories, newest first."""
        return await self.store.list_memories(owner.id, limit=limit, cursor=cursor)

    async def delete(self, owner: Principal, memory_id: str) -> None:
        """Forget one of ``owner``'s memories; :class:`NotFoundError` when they have none by
        that id."""
        if not await self.store.delete_memory(owner.id, memory_id):
            raise NotFoundError(f"no memory {memory_id!r}")

    async def clear(self, owner: Principal) -> int:
        """Forget all of ``owner``'s memories; return how many there were."""
        return await self.store.delete_memories(owner.id)

    async def shown(self, owner: str, limit: int) -> list[MemoryItem]:
        """The memories a model is shown in ``owner``'s conversations: the newest ``limit``."""
        if limit <= 0:
            return []
        return (await self.store.list_memories(owner, limit=limit)).items
