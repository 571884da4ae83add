"""Per-user quotas on what callers store (``[quotas]``), checked before each write.

Counts come from the memory store (:meth:`hubbub.contracts.MemoryStore.usage`), so every process
sharing the store agrees; the conversation creation rate is counted in the cache, per minute.
Checks and writes are not one transaction, so a check and the write it allows are made under
:meth:`Quotas.writing`, which lets one write of a user through at a time in this process:
requests sent at once cannot all pass one check. Processes sharing a store do not wait for each
other: with several, a user may overshoot a limit by one write per other process, never more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from hubbub.config import QuotasConfig
from hubbub.contracts import CacheBackend, MemoryStore
from hubbub.errors import ContentTooLargeError, QuotaExceededError

__all__ = ["Quotas"]

logger = logging.getLogger("hubbub.memory.quotas")

CONVERSATION_BYTES = 256
"""What a new conversation is assumed to take when checking the bytes quota."""


class Quotas:
    """Checks ``[quotas]`` for one store: raise before a write that would go past a limit."""

    def __init__(
        self,
        store: MemoryStore,
        cache: CacheBackend,
        config: QuotasConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._cache = cache
        self.config = config
        self._clock = clock
        self._writers: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def writing(self, owner: str) -> AsyncIterator[None]:
        """Hold ``owner``'s turn to write in this process: check a quota and make the write it
        allows inside, so that concurrent requests of one user are checked one after the
        other's write, never all against the same usage. Other users do not wait."""
        lock, holders = self._writers.get(owner, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._writers[owner] = (lock, holders + 1)
        try:
            async with lock:
                yield
        finally:
            _, holders = self._writers[owner]
            if holders <= 1:
                del self._writers[owner]
            else:
                self._writers[owner] = (lock, holders - 1)

    def check_size(self, content: str, *, field: str = "content") -> int:
        """The UTF-8 size of ``content``; :class:`ContentTooLargeError` (413) past
        ``max_message_bytes``."""
        size = len(content.encode("utf-8", "surrogatepass"))
        limit = self.config.max_message_bytes
        if limit and size > limit:
            raise ContentTooLargeError(
                f"{field} is {size} bytes; the most allowed is {limit}", field=field
            )
        return size

    async def check_message(self, owner: str, content: str) -> None:
        """Before storing a message of ``owner``: its size, then their stored bytes."""
        await self.check_bytes(owner, self.check_size(content))

    async def check_bytes(self, owner: str, adding: int) -> None:
        """:class:`QuotaExceededError` if ``owner`` storing ``adding`` more bytes would go past
        ``max_stored_bytes``."""
        limit = self.config.max_stored_bytes
        if not limit:
            return
        used = (await self.store.usage(owner)).bytes
        if used + adding > limit:
            raise QuotaExceededError(
                f"storing this would take {used + adding} bytes; your quota is {limit} bytes: "
                "delete conversations or memories to free some",
                quota="stored_bytes",
                used=used,
                limit=limit,
            )

    async def check_conversation(self, owner: str) -> None:
        """Before ``owner`` creates a conversation: their count, bytes, and creation rate."""
        config = self.config
        usage = await self.store.usage(owner)
        if config.max_conversations and usage.conversations >= config.max_conversations:
            raise QuotaExceededError(
                f"you have {usage.conversations} conversations, the most allowed: delete some "
                "to create more",
                quota="conversations",
                used=usage.conversations,
                limit=config.max_conversations,
            )
        if config.max_stored_bytes and usage.bytes + CONVERSATION_BYTES > config.max_stored_bytes:
            raise QuotaExceededError(
                f"your stored data takes {usage.bytes} bytes; your quota is "
                f"{config.max_stored_bytes} bytes: delete conversations or memories to free some",
                quota="stored_bytes",
                used=usage.bytes,
                limit=config.max_stored_bytes,
            )
        await self._check_rate(owner)

    async def _check_rate(self, owner: str) -> None:
        """A sliding minute: this clock minute's creations plus the previous minute's, weighed
        by how much of it is still within the last 60 seconds (so a burst at the end of one
        minute and another at the start of the next cannot pass twice the limit). A refused
        creation is not counted."""
        limit = self.config.conversations_per_minute
        if not limit:
            return
        moment = self._clock()
        window = int(moment // 60)
        elapsed = moment - window * 60
        current = f"hubbub:quota:conversations:{owner}:{window}"
        try:
            created = await self._cache.incr(current, ttl=125)
            previous = await self._cache.get(f"hubbub:quota:conversations:{owner}:{window - 1}")
        except Exception as exc:  # a cache that cannot count lets the write through
            logger.warning("cannot count conversation creations: %s", exc)
            return
        before = int(previous) if previous is not None and previous.isdigit() else 0
        recent = created + before * (1 - elapsed / 60)
        if recent <= limit:
            return
        with contextlib.suppress(Exception):  # not counted: it creates nothing
            await self._cache.incr(current, -1, ttl=125)
        # The previous minute's weight falls as time goes on; past its end only this one counts.
        if before and created <= limit:
            wait = 60 * (1 - (limit - created + 1) / before) - elapsed
        else:
            wait = 60 - elapsed
        raise QuotaExceededError(
            f"you created {limit} conversations in the last minute, the most allowed; retry "
            "in a moment",
            quota="conversations_per_minute",
            used=min(int(recent) - 1, limit),
            limit=limit,
            retry_after=max(wait, 1.0),
        )
