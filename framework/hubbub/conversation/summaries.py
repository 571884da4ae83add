"""Summaries of older messages, written by a model, stored, and shown in their place.

:meth:`Summarizer.request` starts writing a conversation's summary in the background (what
:class:`~hubbub.conversation.context.ContextBuilder` does when a context passes ``[context]
summarize_at`` of the window); :meth:`Summarizer.summarize` writes it now. A summary covers
everything but the latest ``[context] keep_messages`` messages and builds on the previous one, so
each span of messages is summarized once: one summary at a time per conversation in this
process, and across processes sharing the cache (a lease). Transcripts longer than the
summarizing model's window are summarized in rolling chunks. The messages themselves stay
stored and listed; only what models are shown changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from hubbub.config import ContextConfig
from hubbub.contracts import CacheBackend, MemoryStore
from hubbub.conversation.history import nothing_said
from hubbub.llm import LLMClient
from hubbub.llm.tokens import TokenCounter
from hubbub.log import log_context
from hubbub.models import ChatRequest, Conversation, Message, Summary, new_id

__all__ = ["Summarizer"]

logger = logging.getLogger("hubbub.conversation.summaries")

PAGE = 200
"""Messages read per page while finding those a summary does not cover yet."""

LEASE_TTL = 300.0
"""Seconds a summarizing process holds a conversation's summary lease at most."""

INSTRUCTIONS = (
    "You condense conversations. Summarize the conversation below for whoever continues it: "
    "keep facts, names, numbers, decisions, instructions the user gave and open questions; "
    "leave out greetings and repetition. Write at most {words} words, in plain prose."
)


class Summarizer:
    """Writes and stores conversation summaries with ``[context] summary_model``."""

    def __init__(
        self,
        store: MemoryStore,
        llm: LLMClient,
        counter: TokenCounter,
        config: ContextConfig,
        *,
        cache: CacheBackend,
        spawn: Callable[[Coroutine[Any, Any, Any], str], object] | None,
        history_limit: int,
        window: Callable[[str], int],
    ) -> None:
        self.store = store
        self.llm = llm
        self.counter = counter
        self.config = config
        self._cache = cache
        self._spawn = spawn
        self.history_limit = history_limit
        self._window = window
        self._running: set[str] = set()

    def request(self, conversation: Conversation, model_id: str) -> None:
        """Summarize ``conversation`` in the background, unless that is under way already."""
        if conversation.id in self._running or self._spawn is None:
            return
        self._running.add(conversation.id)
        self._spawn(self._background(conversation, model_id), f"summary {conversation.id}")

    async def _background(self, conversation: Conversation, model_id: str) -> None:
        try:
            with log_context(conversation_id=conversation.id):
                await self.summarize(conversation, model_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the next reply asks again; nothing is lost meanwhile
            logger.warning("summary of %s failed: %s", conversation.id, exc)
        finally:
            self._running.discard(conversation.id)

    async def summarize(self, conversation: Conversation, model_id: str) -> Summary | None:
        """Write and store a new summary of everything but the latest messages; ``None`` when
        there is nothing new to cover or another process is writing one."""
        key = f"hubbub:summary:{conversation.id}"
        token = new_id().encode()
        cache = self._cache
        if not await cache.add(key, token, ttl=LEASE_TTL):
            return None
        try:
            return await self._summarize(conversation, model_id)
        finally:
            await cache.compare_and_set(key, token, None)

    async def _summarize(self, conversation: Conversation, model_id: str) -> Summary | None:
        previous = await self.store.get_summary(conversation.id)
        skipped, pending = await self._pending(conversation.id, previous)
        cut = len(pending) - self.config.keep_messages
        while cut > 0 and pending[cut].role == "tool":  # never part a call from its result
            cut -= 1
        if cut <= 0:
            return None
        cover = pending[:cut]
        model = self.config.summary_model or model_id
        text = previous.content if previous is not None else ""
        for chunk in await self._chunks(model, [m for m in cover if not nothing_said(m)]):
            text = await self._condense(model, text, chunk, conversation)
        text = await self.counter.truncate(model, text, self.config.summary_tokens)
        summary = Summary(
            conversation_id=conversation.id,
            content=text,
            through_message_id=cover[-1].id,
            covered=(previous.covered if previous is not None else 0) + skipped + len(cover),
            tokens=await self.counter.count(model, text),
            model=model,
        )
        await self.store.save_summary(summary)
        logger.info(
            "summarized %d messages of %s in %d tokens",
            summary.covered,
            conversation.id,
            summary.tokens,
            extra={"conversation_id": conversation.id, "model": model},
        )
        return summary

    async def _pending(
        self, conversation_id: str, previous: Summary | None
    ) -> tuple[int, list[Message]]:
        """The messages after those ``previous`` covers: how many are too old to condense (past
        the latest ``history_limit``: a conversation imported or written before summaries
        were on), and the latest ``history_limit`` of them, read page by page."""
        latest: deque[Message] = deque(maxlen=self.history_limit)
        count = 0
        cursor: str | None = None
        through = previous.through_message_id if previous is not None else None
        while True:
            page = await self.store.list_messages(conversation_id, limit=PAGE, cursor=cursor)
            for message in page.items:
                latest.append(message)
                count += 1
                if message.id == through:  # covered: everything so far
                    latest.clear()
                    count = 0
            cursor = page.next_cursor
            if cursor is None:
                return count - len(latest), list(latest)

    async def _chunks(self, model: str, messages: list[Message]) -> list[list[str]]:
        """The transcript lines, in chunks that each fit the summarizing model's window with
        the instructions, the summary so far and the answer (counted off the event loop when
        long)."""
        room = max(self._window(model) - 2 * self.config.summary_tokens - 200, 256)
        spoken = [m for m in messages if m.content]
        counts = await self.counter.count_messages(model, spoken)
        chunks: list[list[str]] = [[]]
        used = 0
        for message, tokens in zip(spoken, counts, strict=True):
            line = f"{message.role}: {message.content}"
            if tokens > room:  # one message longer than the window: its start stands for it
                line = await self.counter.truncate(model, line, room)
                tokens = room
            if used + tokens > room and chunks[-1]:
                chunks.append([])
                used = 0
            chunks[-1].append(line)
            used += tokens
        return [chunk for chunk in chunks if chunk]

    async def _condense(
        self, model: str, summary: str, lines: list[str], conversation: Conversation
    ) -> str:
        words = max(self.config.summary_tokens * 3 // 4, 10)
        earlier = f"Summary so far:\n{summary}\n\n" if summary else ""
        response = await self.llm.complete(
            ChatRequest(
                model=model,
                messages=[
                    Message(role="system", content=INSTRUCTIONS.format(words=words)),
                    Message(role="user", content=earlier + "Conversation:\n" + "\n".join(lines)),
                ],
                max_tokens=self.config.summary_tokens,
                user=conversation.owner,  # its cost is the owner's, like their replies'
                metadata={"conversation_id": conversation.id, "hubbub_purpose": "summary"},
            )
        )
        return response.message.content.strip()
