"""Counting tokens the way a model does, offline.

OpenAI-family models are counted exactly with tiktoken: ``o200k_base`` for the GPT-4o, 4.1, 5
and o-series models, ``cl100k_base`` for GPT-4 and 3.5. Other models follow litellm's tokenizer
mapping as far as it works offline: DeepSeek's chat models (V3, V4, ``deepseek-chat``,
``deepseek-reasoner``) are counted exactly with the DeepSeek tokenizer litellm ships (read with
HuggingFace ``tokenizers``); any other model is counted with ``cl100k_base``, as litellm does
offline, which is close for most modern tokenizers (within about 10-20%): budgets built on it
keep a margin (``[context] reply_tokens``).

The encodings are read from files installed with litellm (its package ships them), never
downloaded: :func:`offline_encodings` points tiktoken there before its first use. If they cannot
be read, counting falls back to an estimate of one token per four bytes, logged once.

Count a model by its upstream id (:attr:`hubbub.models.ModelInfo.pricing_id`): a model clients
call ``up-gpt`` may be ``gpt-4o-mini`` upstream, which counts with ``o200k_base``.
:meth:`TokenCounter.count_prompt` and :meth:`TokenCounter.count_completion` are the one way
hubbub counts a request and a reply (the offline models report exactly these counts, and budgets
reserve by them); :func:`counting_rate` measures the throughput.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from hubbub.models import Message, ToolCall, ToolSpec

__all__ = ["DEEPSEEK", "TokenCounter", "counting_rate", "encoding_for", "offline_encodings"]

logger = logging.getLogger("hubbub.llm.tokens")

MESSAGE_OVERHEAD = 4
"""Tokens a chat message costs besides its text (role and separators, as OpenAI counts them)."""

OFF_LOOP_CHARS = 16_384
"""Texts longer than this are counted on a worker thread, never on the event loop."""

_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4")
_DEEPSEEK = re.compile(  # litellm's own test for the models its DeepSeek tokenizer counts
    r"deepseek[-_.](?:chat[-_.])?v[34]|(?:^|/)deepseek-(?:chat|reasoner|flash)(?::free)?$",
    re.IGNORECASE,
)
DEEPSEEK = "deepseek"
"""The encoding name of DeepSeek's tokenizer (a HuggingFace ``tokenizers`` file litellm ships)."""
_TOKENIZER_FILES = {DEEPSEEK: "deepseek_tokenizer.json"}


def _litellm_tokenizers() -> Path | None:
    """The directory of tokenizer files in litellm's package; ``None`` without litellm."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "litellm_core_utils" / "tokenizers"


def offline_encodings() -> Path | None:
    """Make tiktoken read its encodings from the files litellm ships (``TIKTOKEN_CACHE_DIR``,
    unless set already) and return that directory; ``None`` when litellm is not installed."""
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    if configured:
        return Path(configured)
    directory = _litellm_tokenizers()
    if directory is None:
        return None
    os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
    return directory


def encoding_for(model: str) -> str:
    """The encoding used to count ``model``'s tokens: a tiktoken encoding name, or
    :data:`DEEPSEEK` (a provider prefix such as ``openai/`` is ignored)."""
    if _DEEPSEEK.search(model):
        return DEEPSEEK
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
        """The encoding for ``model`` (tiktoken's, or DeepSeek's tokenizer); ``None`` when it
        cannot be loaded."""
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
        size = sum(_size(m) for m in messages if (key, m.id) not in self._counted)
        return await self._message_counts(encoding, key, messages, size > OFF_LOOP_CHARS)

    async def _message_counts(
        self, encoding: Any, key: str, messages: Sequence[Message], off_loop: bool
    ) -> list[int]:
        """The counts of ``messages`` (those not remembered counted now, on a worker thread
        when ``off_loop``), remembering the new ones."""
        new = [m for m in messages if (key, m.id) not in self._counted]
        if new:
            counted = (
                await asyncio.to_thread(_count_messages, encoding, new)
                if off_loop
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

    async def count_prompt(
        self, model: str, messages: Sequence[Message], tools: Sequence[ToolSpec] | None = None
    ) -> int:
        """Tokens a request's prompt takes for ``model``: its messages (overhead included) and
        the tools offered (their name, description and parameters schema as JSON).

        What is still to count (messages not remembered: their text, names and tool calls; the
        tools' schemas) is counted on a worker thread when it is longer than
        :data:`OFF_LOOP_CHARS` altogether."""
        encoding = await self.encoding(model)
        key = encoding_for(model)
        described = "\n".join(_describe(tool) for tool in tools) if tools else ""
        size = len(described) + sum(_size(m) for m in messages if (key, m.id) not in self._counted)
        off_loop = size > OFF_LOOP_CHARS
        total = sum(await self._message_counts(encoding, key, messages, off_loop))
        if described:
            total += (
                await asyncio.to_thread(_count, encoding, described)
                if off_loop
                else _count(encoding, described)
            )
        return total

    async def count_completion(
        self, model: str, text: str, tool_calls: Sequence[ToolCall] | None = None
    ) -> int:
        """Tokens a reply takes for ``model``: its text and its tool calls (name and
        arguments); on a worker thread when they are longer than :data:`OFF_LOOP_CHARS`
        altogether."""
        encoding = await self.encoding(model)
        calls = tool_calls or ()
        size = len(text) + sum(len(c.name) + len(c.arguments) for c in calls)
        if size > OFF_LOOP_CHARS:
            return await asyncio.to_thread(_count_completion, encoding, text, calls)
        return _count_completion(encoding, text, calls)

    async def truncate(self, model: str, text: str, tokens: int) -> str:
        """The longest start of ``text`` that takes at most ``tokens`` tokens."""
        encoding = await self.encoding(model)
        if encoding is None:
            return text.encode()[: tokens * 4].decode(errors="ignore")
        if len(text) > OFF_LOOP_CHARS:
            return await asyncio.to_thread(_truncate, encoding, text, tokens)
        return _truncate(encoding, text, tokens)


def counting_rate(encoding: str, text: str, *, seconds: float = 0.5) -> float:
    """Tokens per second one thread counts of ``text`` with ``encoding`` (``cl100k_base``,
    ``o200k_base``, :data:`DEEPSEEK`), encoding it again and again for at least ``seconds``
    after a first encoding that loads the encoding and is not timed. For benchmarks
    (``bench/llm.py``): it blocks the calling thread; a text of a few kilobytes of prose gives
    the steady rate, a short message the cost of one call.

    :raises ValueError: ``text`` is empty, or the encoding cannot be loaded offline.
    """
    if not text:
        raise ValueError("counting_rate needs a text to count")
    loaded = _load(encoding)
    if loaded is None:
        raise ValueError(f"tiktoken encoding {encoding!r} is not available offline")
    _count(loaded, text)  # warm: the first encoding of a text builds tiktoken's caches
    counted = 0
    began = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        counted += _count(loaded, text)
        elapsed = time.perf_counter() - began
    return counted / elapsed


def _describe(tool: ToolSpec) -> str:
    return msgspec.json.encode(
        {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
    ).decode()


class _HuggingFaceEncoding:
    """A HuggingFace ``tokenizers`` tokenizer with the two methods of a tiktoken encoding that
    counting uses."""

    def __init__(self, name: str, tokenizer: Any) -> None:
        self.name = name
        """The encoding's name (as tiktoken's encodings have one)."""
        self._tokenizer = tokenizer

    def encode(self, text: str, disallowed_special: Any = ()) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=False))


def _load(name: str) -> Any:
    if name in _TOKENIZER_FILES:
        directory = _litellm_tokenizers()
        try:
            from tokenizers import Tokenizer

            if directory is None:
                raise FileNotFoundError("litellm (which ships the file) is not installed")
            path = directory / _TOKENIZER_FILES[name]
            return _HuggingFaceEncoding(name, Tokenizer.from_file(str(path)))
        except Exception as exc:  # no tokenizers package, or no file: the nearest we have
            logger.warning(
                "cannot load the %s tokenizer (%s): counting with cl100k_base", name, exc
            )
            return _load("cl100k_base")
    offline_encodings()
    try:
        import tiktoken

        return tiktoken.get_encoding(name)
    except Exception as exc:  # missing files (and then a refused download): estimate instead
        logger.debug("cannot load tiktoken encoding %s: %s", name, exc)
        return None


def _size(message: Message) -> int:
    """Characters counting ``message`` reads: its text and its tool calls (whose arguments may
    be far longer than its text)."""
    size = len(message.content)
    for call in message.tool_calls or ():
        size += len(call.name) + len(call.arguments)
    return size


def _count_completion(encoding: Any, text: str, calls: Sequence[ToolCall]) -> int:
    total = _count(encoding, text)
    for call in calls:
        total += _count(encoding, call.name) + _count(encoding, call.arguments)
    return total


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
