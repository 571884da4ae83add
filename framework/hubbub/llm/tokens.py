"""Counting tokens the way a model does, offline.

OpenAI-family models are counted exactly with tiktoken: ``o200k_base`` for the GPT-4o, 4.1, 5
and o-series models, ``cl100k_base`` for GPT-4 and 3.5. Any other model is counted with
``cl100k_base`` too, which is close for most modern tokenizers (within about 10-20%): budgets
built on it keep a margin (``[context] reply_tokens``).

The encodings are read from files installed with litellm (its package ships them), never
downloaded: :func:`offline_encodings` points tiktoken there before its first use. If they cannot
be read, counting falls back to an estimate of one token per four bytes, logged once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hubbub.models import Message

__all__ = ["TokenCounter", "encoding_for", "offline_encodings"]

logger = logging.getLogger("hubbub.llm.tokens")

MESSAGE_OVERHEAD = 4
"""Tokens a chat message costs besides its text (role and separators, as OpenAI counts them)."""

OFF_LOOP_CHARS = 16_384
"""Texts longer than this are counted on a worker thread, never on the event loop."""

_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4")


def offline_encodings() -> Path | None:
    """Make tiktoken read its encodings from the files litellm ships (``TIKTOKEN_CACHE_DIR``,
    unless set already) and return that directory; ``None`` when litellm is not installed."""
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    if configured:
        return Path(configured)
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.origin:
        return None
    directory = Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"
    os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
    return directory


def encoding_for(model: str) -> str:
    """The tiktoken encoding used to count ``model``'s tokens (a provider prefix such as
    ``openai/`` is ignored)."""
    name = model.rsplit("/", 1)[-1].lower()
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


class TokenCounter:
    """Counts tokens of texts and messages; loads each encoding once, off the event loop.

    Message counts are remembered by message id (the last ``remember`` of them), so the history
    shown to a model on every reply is not counted again.
    """

    def __init__(self, *, remember: int = 50_000) -> None:
        self._encodings: dict[str, Any] = {}
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self._counted: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._remember = remember
        self._warned = False

    async def encoding(self, model: str) -> Any:
        """The tiktoken encoding for ``model`` (``None`` when it cannot be loaded)."""
        name = encoding_for(model)
        if name in self._encodings:
            return self._encodings[name]
        loading = self._loading.get(name)
        if loading is None:
            loading = asyncio.ensure_future(asyncio.to_thread(_load, name))
            self._loading[name] = loading
        encoding = await asyncio.shield(loading)
        self._encodings[name] = encoding
        self._loading.pop(name, None)
        if encoding is None and not self._warned:
            self._warned = True
            logger.warning(
                "tiktoken encoding %s is not available offline: token counts are estimates "
                "(bytes / 4); install litellm, or set TIKTOKEN_CACHE_DIR to a directory "
                "holding the encoding files",
                name,
            )
        return encoding

    async def count(self, model: str, text: str) -> int:
        """Tokens ``text`` takes for ``model``."""
        encoding = await self.encoding(model)
        if len(text) > OFF_LOOP_CHARS:
            return await asyncio.to_thread(_count, encoding, text)
        return _count(encoding, text)

    async def count_messages(self, model: str, messages: Sequence[Message]) -> list[int]:
        """Tokens each message takes for ``model``, its overhead included."""
        encoding = await self.encoding(model)
        key = encoding_for(model)
        new = [m for m in messages if (key, m.id) not in self._counted]
        if new:
            size = sum(len(m.content) for m in new)
            counted = (
                await asyncio.to_thread(_count_messages, encoding, new)
                if size > OFF_LOOP_CHARS
                else _count_messages(encoding, new)
            )
            for message, tokens in zip(new, counted, strict=True):
                self._counted[(key, message.id)] = tokens
            while len(self._counted) > self._remember:
                self._counted.popitem(last=False)
        counts = []
        for message in messages:
            remembered = self._counted.get((key, message.id))
            if remembered is None:  # forgotten already (more messages than remembered)
                remembered = _count_messages(encoding, [message])[0]
            counts.append(remembered)
        return counts

    async def truncate(self, model: str, text: str, tokens: int) -> str:
        """The longest start of ``text`` that takes at most ``tokens`` tokens."""
        encoding = await self.encoding(model)
        if encoding is None:
            return text.encode()[: tokens * 4].decode(errors="ignore")
        if len(text) > OFF_LOOP_CHARS:
            return await asyncio.to_thread(_truncate, encoding, text, tokens)
        return _truncate(encoding, text, tokens)


def _load(name: str) -> Any:
    offline_encodings()
    try:
        import tiktoken

        return tiktoken.get_encoding(name)
    except Exception as exc:  # missing files (and then a refused download): estimate instead
        logger.debug("cannot load tiktoken encoding %s: %s", name, exc)
        return None


def _count_messages(encoding: Any, messages: Sequence[Message]) -> list[int]:
    counts = []
    for message in messages:
        tokens = MESSAGE_OVERHEAD + _count(encoding, message.content)
        for call in message.tool_calls or ():
            tokens += _count(encoding, call.name) + _count(encoding, call.arguments)
        counts.append(tokens)
    return counts


def _truncate(encoding: Any, text: str, tokens: int) -> str:
    ids = encoding.encode(text, disallowed_special=())
    return text if len(ids) <= tokens else str(encoding.decode(ids[:tokens]))


def _count(encoding: Any, text: str) -> int:
    if not text:
        return 0
    if encoding is None:
        return (len(text.encode()) + 3) // 4
    return len(encoding.encode(text, disallowed_special=()))
