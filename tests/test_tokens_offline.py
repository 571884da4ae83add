"""Token counting reads its encodings from installed files: it works with the network gone."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import asyncio, socket

def refuse(*args, **kwargs):
    raise OSError("network is off in this test")

socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

from hubbub.llm.tokens import TokenCounter, encoding_for

async def main():
    counter = TokenCounter()
    print(await counter.count("gpt-4o", "The quick brown fox jumps over the lazy dog."))
    print(await counter.count("gpt-3.5-turbo", "The quick brown fox jumps over the lazy dog."))
    print(encoding_for("openai/gpt-4o-mini"), encoding_for("claude-3-haiku"))

asyncio.run(main())
"""


def test_counting_needs_no_network() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TIKTOKEN_CACHE_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert lines[:2] == ["10", "10"]
    assert lines[2:] == ["o200k_base", "cl100k_base"]
    assert "estimate" not in done.stderr
