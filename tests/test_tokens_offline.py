"""Token counting reads its encodings from installed files: it works with the network gone, and
it counts what tiktoken (and litellm) count, for cl100k_base and o200k_base models alike."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hubbub.llm import tokens
from hubbub.llm.tokens import TokenCounter, counting_rate, offline_encodings
from hubbub.models import Message, ToolCall, ToolSpec

# Texts and their token counts, computed with tiktoken and tokenizers on this machine and
# cross-checked against litellm.token_counter below: (text, cl100k_base, o200k_base, DeepSeek).
KNOWN = [
    ("The quick brown fox jumps over the lazy dog.", 10, 10, 10),
    ("Hello, world!", 4, 4, 4),
    ("Bonjour le monde, ça va très bien.", 9, 9, 10),
    ("日本語のテキストを数えます。", 13, 11, 9),
    (
        "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
        26,
        26,
        26,
    ),
    ("🦀🐍 emoji 👍🏽", 12, 9, 10),
    ("    indented\n\n\n  spaces\t\ttabs", 9, 9, 9),
    ("antidisestablishmentarianism", 6, 6, 5),
    ("नमस्ते दुनिया", 13, 5, 7),
    ("Здравствуй, мир!", 9, 7, 8),
]

SCRIPT = """
import asyncio, json, os, socket, sys

reached = None
try:  # prove the network is gone before counting
    socket.create_connection(("1.1.1.1", 443), timeout=2).close()
    reached = "1.1.1.1:443"
except OSError:
    pass

from hubbub.llm.tokens import TokenCounter, encoding_for

async def main():
    counter = TokenCounter()
    texts = json.loads(sys.argv[1])
    counts = {
        model: [await counter.count(model, text) for text in texts]
        for model in ("gpt-3.5-turbo", "gpt-4o", "deepseek/deepseek-chat")
    }
    print(json.dumps({
        "reached": reached,
        "counts": counts,
        "encodings": [
            encoding_for(model) for model in ("openai/gpt-4o-mini", "claude-3-haiku", "deepseek-v3")
        ],
        "cache": os.environ.get("TIKTOKEN_CACHE_DIR"),
    }))

asyncio.run(main())
"""

SITECUSTOMIZE = """
import socket

def refuse(*args, **kwargs):
    raise OSError("network is off in this test")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
"""


def no_network(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """A command prefix and environment that run a process without any network: a network
    namespace of its own (``unshare -rn``, only a loopback that is down) when the machine
    allows it, else a ``sitecustomize`` that makes every connection fail."""
    unshare = shutil.which("unshare")
    if unshare is not None:
        tried = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=30)
        if tried.returncode == 0:
            return [unshare, "-rn"], {}
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return [], {"PYTHONPATH": str(site)}


def test_counting_needs_no_network(tmp_path: Path) -> None:
    prefix, extra = no_network(tmp_path)
    temp = tmp_path / "tmp"  # tiktoken's own download cache would be here: it stays empty
    temp.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR", "PYTHONPATH")
    }
    env.update(extra, TMPDIR=str(temp))
    texts = [text for text, *_ in KNOWN]
    done = subprocess.run(
        [*prefix, sys.executable, "-c", SCRIPT, json.dumps(texts)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["reached"] is None, "the subprocess could reach the network"
    assert result["counts"]["gpt-3.5-turbo"] == [cl100k for _, cl100k, _, _ in KNOWN]
    assert result["counts"]["gpt-4o"] == [o200k for _, _, o200k, _ in KNOWN]
    assert result["counts"]["deepseek/deepseek-chat"] == [deepseek for *_, deepseek in KNOWN]
    assert result["encodings"] == ["o200k_base", "cl100k_base", "deepseek"]
    assert "estimate" not in done.stderr  # real encodings, not the bytes / 4 fallback
    assert result["cache"] == str(offline_encodings())  # the files litellm installs
    assert list(temp.iterdir()) == []  # nothing downloaded, nothing cached


@pytest.mark.parametrize(("text", "cl100k", "o200k", "deepseek"), KNOWN)
async def test_known_counts(text: str, cl100k: int, o200k: int, deepseek: int) -> None:
    counter = TokenCounter()
    assert await counter.count("gpt-4", text) == cl100k
    assert await counter.count("gpt-3.5-turbo", text) == cl100k
    assert await counter.count("gpt-4o", text) == o200k
    assert await counter.count("openai/gpt-4.1-mini", text) == o200k
    assert await counter.count("o3-mini", text) == o200k
    assert await counter.count("deepseek/deepseek-chat", text) == deepseek
    assert await counter.count("deepseek-reasoner", text) == deepseek
    assert await counter.count("anthropic/claude-sonnet-4-5", text) == cl100k  # as litellm does


def test_known_counts_agree_with_litellm() -> None:
    litellm = pytest.importorskip("litellm")
    for text, cl100k, o200k, deepseek in KNOWN:
        assert litellm.token_counter(model="gpt-4", text=text) == cl100k, text
        assert litellm.token_counter(model="gpt-4o", text=text) == o200k, text
        assert litellm.token_counter(model="deepseek/deepseek-chat", text=text) == deepseek, text
        claude = litellm.token_counter(model="anthropic/claude-sonnet-4-5", text=text)
        assert claude == cl100k, text


async def test_long_texts_are_counted_the_same_off_the_loop() -> None:
    counter = TokenCounter()
    text, cl100k, o200k, _ = KNOWN[0]
    many = " ".join([text] * 2_000)  # > OFF_LOOP_CHARS: counted on a worker thread
    # each copy after the first starts with a space, which joins its first token (" The")
    assert await counter.count("gpt-4", many) == cl100k * 2_000
    assert await counter.count("gpt-4o", many) == o200k * 2_000


async def test_a_prompt_counts_its_messages_and_tools() -> None:
    counter = TokenCounter()
    messages = [
        Message(role="system", content="Hello, world!"),
        Message(role="user", content="The quick brown fox jumps over the lazy dog."),
    ]
    assert await counter.count_prompt("gpt-4o", messages) == (4 + 4) + (4 + 10)
    tool = ToolSpec(name="clock", description="the time")
    described = (
        '{"name":"clock","description":"the time","parameters":{"type":"object","properties":{}}}'
    )
    with_tools = await counter.count_prompt("gpt-4o", messages, [tool])
    assert with_tools == 22 + await counter.count("gpt-4o", described)
    call = ToolCall(id="c1", name="clock", arguments='{"zone": "UTC"}')
    completion = await counter.count_completion("gpt-4o", "Hello, world!", [call])
    assert completion == 4 + await counter.count("gpt-4o", "clock") + await counter.count(
        "gpt-4o", '{"zone": "UTC"}'
    )
    assert await counter.count_completion("gpt-4o", "") == 0


async def test_long_tool_calls_and_schemas_are_counted_off_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = TokenCounter()
    await counter.encoding("gpt-4o")  # loaded (on a thread) before the threads are watched
    on_threads: list[str] = []
    to_thread = asyncio.to_thread

    async def watched(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        on_threads.append(func.__name__)
        return await to_thread(func, *args, **kwargs)

    monkeypatch.setattr(tokens.asyncio, "to_thread", watched)
    arguments = json.dumps({"rows": ["a value"] * 4_000})  # ~44,000 characters; no text
    assert len(arguments) > tokens.OFF_LOOP_CHARS
    call = ToolCall(id="c1", name="store", arguments=arguments)
    big = Message(role="assistant", content="", tool_calls=[call])
    short = [Message(role="user", content="Hello, world!")]

    counted = await counter.count_messages("gpt-4o", [big])
    assert on_threads == ["_count_messages"]
    on_threads.clear()
    assert await counter.count_completion("gpt-4o", "", [call]) == counted[0] - 4
    assert on_threads == ["_count_completion"]
    on_threads.clear()
    schema = ToolSpec(name="store", parameters={"type": "object", "description": arguments})
    await counter.count_prompt("gpt-4o", short, [schema])  # the short message goes with it
    assert sorted(on_threads) == ["_count", "_count_messages"]
    on_threads.clear()
    assert await counter.count_prompt("gpt-4o", short) == 8  # remembered: nothing to count
    assert await counter.count_completion("gpt-4o", "short") == 1
    assert on_threads == []  # short work stays on the loop


async def test_a_model_is_counted_by_its_upstream_encoding() -> None:
    counter = TokenCounter()
    text = "नमस्ते दुनिया"
    # a model clients call "up-gpt" that is gpt-4o-mini upstream: count by the upstream id
    assert await counter.count("gpt-4o-mini", text) == 5
    assert await counter.count("up-gpt", text) == 13  # an unknown name counts as cl100k_base


def test_counting_rate_measures_tokens_per_second() -> None:
    text = " ".join(text for text, *_ in KNOWN) * 20
    for encoding in ("cl100k_base", "o200k_base", "deepseek"):
        rate = counting_rate(encoding, text, seconds=0.05)
        assert rate > 1_000  # tokens per second; the real figure is in bench/llm.py
    with pytest.raises(ValueError, match="not available"):
        counting_rate("no_such_encoding", text, seconds=0.01)
    with pytest.raises(ValueError, match="needs a text"):
        counting_rate("cl100k_base", "", seconds=0.01)


@pytest.mark.parametrize("model", ["gpt-4", "gpt-4o", "deepseek-chat"])
async def test_truncation_keeps_the_longest_start_within_the_limit(model: str) -> None:
    counter = TokenCounter()
    text = KNOWN[0][0]  # 10 tokens in every encoding
    assert await counter.truncate(model, text, 4) == "The quick brown fox"
    assert await counter.truncate(model, text, 10) == text
    assert await counter.truncate(model, text, 0) == ""
