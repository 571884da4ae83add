"""What a model is shown of a conversation, within its context window.

:meth:`ContextBuilder.build` assembles, in order: the user's long-term memories (newest
``[context] memories`` of them, as one system message), the conversation's stored summary (one
system message standing for every message it covers), and the messages after it (at most
``[llm] history_messages``). It counts them in tokens (:class:`hubbub.llm.tokens.TokenCounter`)
and keeps the total inside the model's window minus ``[context] reply_tokens``: the oldest
messages go first, then the memories, then the summary; a last message too long on its own is cut.
So a request never exceeds the window, whatever the conversation holds.

When what would be shown passes ``[context] summarize_at`` of the window, it asks the
:class:`~hubbub.conversation.summaries.Summarizer` for a new summary, which is written in the
background: this reply goes on with what fits, later ones get the summary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec

from hubbub.config import ContextConfig
from hubbub.contracts import CacheBackend, MemoryStore
from hubbub.conversation.history import after_summary, nothing_said
from hubbub.conversation.summaries import Summarizer
from hubbub.llm import LLMClient
from hubbub.llm.tokens import TokenCounter
from hubbub.memory import LongTermMemory
from hubbub.models import Conversation, MemoryItem, Message, Summary

__all__ = ["ContextBuilder"]

logger = logging.getLogger("hubbub.conversation.context")

TRUNCATED = "\n[… cut to fit the model's context window]"


def memories_message(memories: Sequence[MemoryItem]) -> Message:
    """The system message that shows a user's long-term memories to a model."""
    facts = "\n".join(f"- {item.content}" for item in memories)
    return Message(
        role="system",
        content=f"What you know about the user from earlier conversations:\n{facts}",
        metadata={"hubbub": "memories"},
    )


def summary_message(summary: Summary) -> Message:
    """The system message that stands for the messages ``summary`` covers."""
    return Message(
        role="system",
        content=(
            f"Summary of the earlier part of this conversation ({summary.covered} messages):\n"
            f"{summary.content}"
        ),
        metadata={"hubbub": "summary"},
    )


class ContextBuilder:
    """Builds the messages a model is shown for one reply."""

    def __init__(
        self,
        store: MemoryStore,
        llm: LLMClient,
        counter: TokenCounter,
        config: ContextConfig,
        memories: LongTermMemory,
        *,
        history_limit: int,
        cache: CacheBackend,
        spawn: Callable[[Coroutine[Any, Any, Any], str], object] | None,
    ) -> None:
        self.store = store
        self.llm = llm
        self.counter = counter
        self.config = config
        self.memories = memories
        self.history_limit = history_limit
        self.summarizer = Summarizer(
            store,
            llm,
            counter,
            config,
            cache=cache,
            spawn=spawn,
            history_limit=history_limit,
            window=self.window,
        )
        """Writes the summaries (in the background when :meth:`build` asks)."""

    def window(self, model_id: str) -> int:
        """The model's context window in tokens (its provider's figure, else
        ``[context] context_window``)."""
        try:
            declared = self.llm.model(model_id).context_window
        except Exception:
            declared = None
        return declared or self.config.context_window

    def budget(self, model_id: str) -> int:
        """Tokens the context may take: the window less what the reply needs."""
        window = self.window(model_id)
        return window - min(self.config.reply_tokens, window // 2)

    async def build(self, conversation: Conversation, model_id: str) -> list[Message]:
        """The context for a reply to ``conversation`` by ``model_id``."""
        recent = await self.store.recent_messages(conversation.id, limit=self.history_limit)
        summary = await self.store.get_summary(conversation.id)
        messages = [m for m in after_summary(recent, summary) if not nothing_said(m)]
        memories = await self.memories.shown(conversation.owner, self.config.memories)
        extras = [memories_message(memories)] if memories else []
        if summary is not None:
            extras.append(summary_message(summary))
        counts = await self.counter.count_messages(model_id, [*extras, *messages])
        total = sum(counts)
        window = self.window(model_id)
        if total > self.config.summarize_at * window and len(messages) > self.config.keep_messages:
            self.summarizer.request(conversation, model_id)
        budget = self.budget(model_id)
        if total <= budget:
            return [*extras, *messages]
        return await self._fit(model_id, budget, extras, counts[: len(extras)], messages, counts)

    async def _fit(
        self,
        model_id: str,
        budget: int,
        extras: list[Message],
        extra_counts: list[int],
        messages: list[Message],
        counts: list[int],
    ) -> list[Message]:
        """Drop the oldest messages (a tool result never outlives the call it answers), then
        the extras, then cut the last message, until the total fits ``budget``."""
        message_counts = counts[len(extras) :]
        total = sum(counts)
        dropped = 0
        while total > budget and len(messages) > 1:
            total -= message_counts.pop(0)
            messages.pop(0)
            dropped += 1
            while len(messages) > 1 and messages[0].role == "tool":
                total -= message_counts.pop(0)
                messages.pop(0)
                dropped += 1
        while total > budget and extras:
            total -= extra_counts.pop(0)
            extras.pop(0)
        if total > budget and messages:
            last = messages[-1]
            room = max(budget - (total - message_counts[-1]) - 16, 1)
            content = await self.counter.truncate(model_id, last.content, room)
            messages[-1] = msgspec.structs.replace(last, content=content + TRUNCATED)
        if dropped:
            logger.info(
                "context over %d tokens: %d oldest messages left out",
                budget,
                dropped,
                extra={"model": model_id},
            )
        return [*extras, *messages]
