"""The offline models honour ``max_tokens``, ``stop`` and ``tool_choice`` as OpenAI's models do,
streamed and whole alike (the HTTP side is in tests/server/test_api_semantics.py)."""

from __future__ import annotations

from typing import Any

import pytest

from hubbub.errors import InvalidRequestError
from hubbub.models import ChatRequest, Message, ToolSpec
from hubbub_plugins.offline_provider import OfflineProvider, OfflineSettings

PROVIDER = OfflineProvider("offline", OfflineSettings())
TOOLS = [ToolSpec(name="calculator"), ToolSpec(name="clock")]


def ask(text: str, model: str = "offline/echo", **fields: Any) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message(role="user", content=text)], **fields)


async def both(request: ChatRequest) -> tuple[str, str]:
    """The text and finish reason, checking that streaming and a whole reply agree."""
    whole = await PROVIDER.complete(request)
    chunks = [chunk async for chunk in PROVIDER.stream(request)]
    streamed = "".join(chunk.delta for chunk in chunks)
    assert streamed == whole.message.content
    assert chunks[-1].finish_reason == whole.finish_reason
    assert chunks[-1].usage == whole.usage
    return whole.message.content, whole.finish_reason


@pytest.mark.parametrize(
    ("fields", "text", "finish"),
    [
        # tokens (cl100k_base): "[", "offline", " echo", "]", " You", " said", ":", " x"...
        ({"max_tokens": 3}, "[offline echo", "length"),
        ({"max_tokens": 9}, "[offline echo] You said: x y", "length"),
        ({"max_tokens": 10}, "[offline echo] You said: x y z", "stop"),  # exactly enough
        ({"stop": ["y"]}, "[offline echo] You said: x ", "stop"),
        ({"stop": ["z", " y"]}, "[offline echo] You said: x", "stop"),  # the earliest wins
        ({"stop": ["", "zzz"]}, "[offline echo] You said: x y z", "stop"),  # never found
        ({"stop": ["[offline"]}, "", "stop"),
        ({"stop": ["z"], "max_tokens": 8}, "[offline echo] You said: x", "length"),
        ({"stop": ["x"], "max_tokens": 8}, "[offline echo] You said: ", "stop"),  # 8 tokens
    ],
)
async def test_limits_cut_the_text(fields: dict[str, Any], text: str, finish: str) -> None:
    assert await both(ask("x y z", **fields)) == (text, finish)


async def test_max_tokens_counts_the_way_usage_does() -> None:
    reply = await PROVIDER.complete(ask("a b c d e f", max_tokens=4))
    assert reply.usage.completion_tokens == 4
    assert reply.message.content == "[offline echo]"
    whole = await PROVIDER.complete(ask("a b c d e f"))
    assert whole.usage.completion_tokens == 13  # the reply's cl100k_base tokens, not 7 words


async def test_a_required_tool_call_is_made_after_a_tool_result_too() -> None:
    request = ChatRequest(
        model="offline/tools",
        messages=[
            Message(role="user", content="call clock {}"),
            Message(role="tool", content="noon", name="clock", tool_call_id="c1"),
        ],
        tools=TOOLS,
        tool_choice="required",
    )
    reply = await PROVIDER.complete(request)
    assert reply.finish_reason == "tool_calls"
    assert [call.name for call in reply.message.tool_calls or ()] == ["clock"]


async def test_limits_leave_tool_calls_whole() -> None:
    request = ask(
        'call calculator {"expression": "1 + 2 + 3"}',
        model="offline/tools",
        tools=TOOLS,
        max_tokens=1,
        stop=["+"],
    )
    reply = await PROVIDER.complete(request)
    assert reply.finish_reason == "tool_calls"
    (call,) = reply.message.tool_calls or ()
    assert call.arguments == '{"expression": "1 + 2 + 3"}'


@pytest.mark.parametrize(
    "choice",
    [
        {"type": "function"},
        {"type": "function", "function": {"name": ""}},
        {"type": "file", "function": {"name": "clock"}},
    ],
)
async def test_malformed_named_choices_are_refused(choice: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await PROVIDER.complete(ask("hi", model="offline/tools", tools=TOOLS, tool_choice=choice))
    assert caught.value.field == "tool_choice"
