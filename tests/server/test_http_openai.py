"""The official ``openai`` client, sync and async, unchanged, against ``hubbub serve``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from live_support import LiveServer, data_frames

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}
CALL = 'call calculator {"expression": "2+3"}'


@pytest.fixture
def client(live_server: LiveServer, alice_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{live_server.url}/v1", api_key=alice_key, max_retries=0, timeout=15
    ) as client:
        yield client


@pytest.fixture
async def aclient(live_server: LiveServer, alice_key: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{live_server.url}/v1", api_key=alice_key, max_retries=0, timeout=15
    ) as client:
        yield client


# -- sync ----------------------------------------------------------------------------------


def test_sync_completion_says_offline_and_echoes(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="offline/echo",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "the quick brown fox"},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.id
    assert completion.model == "offline/echo"
    (choice,) = completion.choices
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    content = choice.message.content or ""
    assert "offline" in content
    assert "the quick brown fox" in content
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_sync_stream_yields_content_chunks_then_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="offline/echo",
        messages=[{"role": "user", "content": "streaming works one word at a time"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(contents) >= 1  # words that stream in together arrive merged
    text = "".join(contents)
    assert "offline" in text
    assert "streaming works one word at a time" in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert all(reason is None for reason in finishes[:-1])
    # The usage chunk comes last, with no choices, and only it carries usage.
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_sync_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="offline/echo", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert chunks
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)


def test_sync_models_list(client: openai.OpenAI) -> None:
    models = {model.id: model for model in client.models.list()}
    assert {"offline/echo", "offline/tools"} <= set(models)
    assert models["offline/echo"].object == "model"
    assert models["offline/echo"].owned_by == "offline"


def test_sync_tool_call_round_trip(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": CALL}]
    first = client.chat.completions.create(
        model="offline/tools", messages=messages, tools=[CALCULATOR]
    )
    (choice,) = first.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.id
    assert call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": "2+3"}

    # The client runs the tool and sends the result back, as OpenAI's protocol has it.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "the sum is 5"})
    second = client.chat.completions.create(
        model="offline/tools", messages=messages, tools=[CALCULATOR]
    )
    (answer,) = second.choices
    assert answer.finish_reason == "stop"
    assert not answer.message.tool_calls
    content = answer.message.content or ""
    assert "offline" in content
    assert "the sum is 5" in content


def test_sync_tool_not_offered_is_not_called(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="offline/tools", messages=[{"role": "user", "content": CALL}]
    )
    (choice,) = completion.choices
    assert choice.finish_reason == "stop"
    assert not choice.message.tool_calls


def test_sync_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="nowhere/none", messages=[{"role": "user", "content": "hi"}]
        )
    body = caught.value.body  # the client unwraps OpenAI's "error" object
    assert isinstance(body, dict)
    assert "nowhere/none" in body["message"]
    assert body["param"] == "model"
    assert caught.value.code == "model_not_found"


def test_sync_error_message_reaches_openai_exception_text(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="nowhere/none", messages=[{"role": "user", "content": "hi"}]
        )
    assert "nowhere/none" in str(caught.value)


def test_sync_bad_key_is_authentication_error(live_server: LiveServer) -> None:
    with (
        openai.OpenAI(
            base_url=f"{live_server.url}/v1",
            api_key="hbk_0123456789abcdef_" + "x" * 43,
            max_retries=0,
        ) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.models.list()


# -- async ---------------------------------------------------------------------------------


async def test_async_completion(aclient: openai.AsyncOpenAI) -> None:
    completion = await aclient.chat.completions.create(
        model="offline/echo", messages=[{"role": "user", "content": "async hello"}]
    )
    content = completion.choices[0].message.content or ""
    assert "offline" in content
    assert "async hello" in content
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0


async def test_async_stream_with_usage(aclient: openai.AsyncOpenAI) -> None:
    stream = await aclient.chat.completions.create(
        model="offline/echo",
        messages=[{"role": "user", "content": "tell me about async streams"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    contents = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(contents) >= 1  # words that stream in together arrive merged
    assert "tell me about async streams" in "".join(contents)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    # tiktoken's cl100k_base tokens of the reply and of the prompt (its 5 tokens, and 4 for
    # the message), not words (7 and 5)
    assert "".join(contents) == "[offline echo] You said: tell me about async streams"
    assert chunks[-1].usage.completion_tokens == 12
    assert chunks[-1].usage.prompt_tokens == 4 + 5


async def test_async_models_list(aclient: openai.AsyncOpenAI) -> None:
    ids = [model.id async for model in aclient.models.list()]
    assert "offline/echo" in ids
    assert "offline/tools" in ids


async def test_async_streamed_tool_call(aclient: openai.AsyncOpenAI) -> None:
    stream = await aclient.chat.completions.create(
        model="offline/tools",
        messages=[{"role": "user", "content": CALL}],
        tools=[CALCULATOR],
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or ():
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += delta.id or ""
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"]
    assert calls[0]["name"] == "calculator"
    assert json.loads(calls[0]["arguments"]) == {"expression": "2+3"}


async def test_async_tool_result_answer(aclient: openai.AsyncOpenAI) -> None:
    first = await aclient.chat.completions.create(
        model="offline/tools", messages=[{"role": "user", "content": CALL}], tools=[CALCULATOR]
    )
    message = first.choices[0].message
    assert message.tool_calls
    call = message.tool_calls[0]
    second = await aclient.chat.completions.create(
        model="offline/tools",
        messages=[
            {"role": "user", "content": CALL},
            message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "42"},
        ],
        tools=[CALCULATOR],
    )
    assert "42" in (second.choices[0].message.content or "")


def test_raw_stream_is_data_frames_ending_with_done(
    live_server: LiveServer, alice_key: str
) -> None:
    """The wire format itself: SSE ``data:`` frames of chunks, the last one ``[DONE]``."""
    with (
        live_server.client(alice_key) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "offline/echo",
                "stream": True,
                "messages": [{"role": "user", "content": "raw frames"}],
            },
        ) as response,
    ):
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    frames = data_frames(lines)
    assert frames[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(frame["object"] == "chat.completion.chunk" for frame in frames[:-1])
