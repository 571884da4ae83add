"""The benchmark baseline: a bare Litestar app answering a canned chat completion.

It parses the same JSON body hubbub does (into a msgspec struct) and returns a fixed
``chat.completion``, so the difference to hubbub is hubbub's own work.
"""

from __future__ import annotations

import msgspec
from litestar import Litestar, get, post


class Message(msgspec.Struct):
    role: str
    content: str


class Body(msgspec.Struct):
    model: str
    messages: list[Message]
    stream: bool = False


CANNED = {
    "id": "chatcmpl-canned",
    "object": "chat.completion",
    "created": 0,
    "model": "canned",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "canned reply"},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
}


@post("/v1/chat/completions", status_code=200)
async def chat(data: Body) -> dict[str, object]:
    return CANNED


@get("/health/ready")
async def ready() -> dict[str, str]:
    return {"status": "ok"}


app = Litestar([chat, ready])
