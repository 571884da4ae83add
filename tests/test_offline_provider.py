"""The offline provider streams deterministically, calls tools on request, says it is offline; the
conversation engine drives it through a whole tool round, publishing events in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest

from hubbub import hookimpl
from hubbub.errors import UnknownModelError
from hubbub.events import Event, Subscription
from hubbub.models import ChatChunk, ChatRequest, Message, Principal, ToolCall, ToolSpec
from hubbub.runtime import Runtime

CALCULATOR = ToolSpec(name="basic.calculator", description="arithmetic")
CALL = 'call basic.calculator {"expression": "1+2"}'


@pytest.fixture
async def runtime(make_runtime: Callable[..., Runtime]) -> AsyncIterator[Runtime]:
    async with make_runtime() as runtime:
        yield runtime


async def stream(runtime: Runtime, request: ChatRequest) -> list[ChatChunk]:
    return [chunk async for chunk in runtime.llm.stream(request)]


def user(text: str) -> Message:
    return Message(role="user", content=text)


# -- the provider through the LLM client -------------------------------------------------------


async def test_models_are_listed(runtime: Runtime) -> None:
    models = {m.id: m for m in runtime.llm.models()}
    assert set(models) >= {"offline/echo", "offline/tools"}
    assert models["offline/tools"].supports_tools is True
    assert models["offline/echo"].provider == "offline"
    assert "Offline" in models["offline/echo"].description


async def test_echo_streams_deterministically(runtime: Runtime) -> None:
    def request() -> ChatRequest:
        return ChatRequest(
            model="offline/echo",
            messages=[
                user("earlier"),
                Message(role="assistant", content="ok"),
                user("hello there"),
            ],
        )

    first = await stream(runtime, request())
    second = await stream(runtime, request())
    assert first == second
    deltas = [chunk.delta for chunk in first if chunk.delta]
    assert len(deltas) == 6  # word by word
    assert "".join(deltas) == "[offline echo] You said: hello there"
    final = first[-1]
    assert final.finish_reason == "stop"
    assert final.delta == ""
    assert final.usage is not None
    # cl100k_base tokens: "ear" "lier", "ok", "hello" " there", each message 4 more; the reply
    # "[offline echo] You said: hello there" is 9 (6 words)
    assert final.usage.prompt_tokens == (4 + 2) + (4 + 1) + (4 + 2)
    assert final.usage.completion_tokens == 9
    assert final.usage.total_tokens == 26
    assert final.usage.cost == 0
    assert isinstance(final.usage.cost, Decimal)
    assert all(chunk.finish_reason is None for chunk in first[:-1])


async def test_different_prompts_give_different_replies(runtime: Runtime) -> None:
    one = await stream(runtime, ChatRequest(model="offline/echo", messages=[user("apples")]))
    two = await stream(runtime, ChatRequest(model="offline/echo", messages=[user("pears")]))
    assert one != two


async def test_complete_matches_stream(runtime: Runtime) -> None:
    request = ChatRequest(model="offline/echo", messages=[user("same either way")])
    response = await runtime.llm.complete(request)
    chunks = await stream(
        runtime, ChatRequest(model="offline/echo", messages=[user("same either way")])
    )
    assert response.message.content == "".join(c.delta for c in chunks)
    assert response.usage == chunks[-1].usage
    assert response.finish_reason == "stop"
    assert response.message.role == "assistant"


async def test_default_model_is_offline_echo(runtime: Runtime) -> None:
    request = ChatRequest(model="", messages=[user("hi")])
    response = await runtime.llm.complete(request)
    assert request.model == "offline/echo"
    assert response.message.content.startswith("[offline echo]")


async def test_unknown_model(runtime: Runtime) -> None:
    with pytest.raises(UnknownModelError) as caught:
        await runtime.llm.complete(ChatRequest(model="offline/ehco", messages=[user("hi")]))
    assert "offline/echo" in str(caught.value)
    assert caught.value.field == "model"


async def test_tools_model_asks_for_the_offered_tool(runtime: Runtime) -> None:
    request = ChatRequest(model="offline/tools", messages=[user(CALL)], tools=[CALCULATOR])
    chunks = await stream(runtime, request)
    again = await stream(
        runtime, ChatRequest(model="offline/tools", messages=[user(CALL)], tools=[CALCULATOR])
    )
    assert chunks == again  # the call id is deterministic too
    calls = [call for chunk in chunks for call in chunk.tool_calls or ()]
    assert len(calls) == 1
    assert calls[0].name == "basic.calculator"
    assert json.loads(calls[0].arguments) == {"expression": "1+2"}
    assert calls[0].id.startswith("call_")
    assert chunks[-1].finish_reason == "tool_calls"
    assert "".join(c.delta for c in chunks) == ""


async def test_tools_model_answers_with_the_tool_result(runtime: Runtime) -> None:
    call = ToolCall(id="call_1", name="basic.calculator", arguments='{"expression": "1+2"}')
    request = ChatRequest(
        model="offline/tools",
        messages=[
            user(CALL),
            Message(role="assistant", tool_calls=[call]),
            Message(role="tool", name="basic.calculator", tool_call_id="call_1", content="3"),
        ],
        tools=[CALCULATOR],
    )
    chunks = await stream(runtime, request)
    text = "".join(c.delta for c in chunks)
    assert text == "[offline tools] The tool basic.calculator returned: 3"
    assert chunks[-1].finish_reason == "stop"
    assert not any(c.tool_calls for c in chunks)


@pytest.mark.parametrize(
    ("prompt", "tools", "expected"),
    [
        (
            "call basic.calculator {expression: 1+2",
            [CALCULATOR],
            "[offline tools] The arguments for 'basic.calculator' are not valid JSON: "
            "{expression: 1+2",
        ),
        (
            'call teleport {"to": "mars"}',
            [CALCULATOR],
            "[offline tools] No tool named 'teleport' is available (available: basic.calculator).",
        ),
        (
            CALL,
            None,
            "[offline tools] No tool named 'basic.calculator' is available (available: none).",
        ),
        (
            "what can you do?",
            [CALCULATOR],
            "[offline tools] Say 'call <tool-name> <json-arguments>' to call a tool. "
            "You said: what can you do?",
        ),
    ],
)
async def test_tools_model_explains_what_it_cannot_do(
    runtime: Runtime, prompt: str, tools: list[ToolSpec] | None, expected: str
) -> None:
    chunks = await stream(
        runtime, ChatRequest(model="offline/tools", messages=[user(prompt)], tools=tools)
    )
    assert "".join(c.delta for c in chunks) == expected
    assert not any(c.tool_calls for c in chunks)
    assert chunks[-1].finish_reason == "stop"


async def test_tool_choice_none_is_respected(runtime: Runtime) -> None:
    request = ChatRequest(
        model="offline/tools", messages=[user(CALL)], tools=[CALCULATOR], tool_choice="none"
    )
    response = await runtime.llm.complete(request)
    assert response.message.tool_calls is None
    assert "offline" in response.message.content


async def test_token_delay_setting_slows_the_stream(make_runtime: Callable[..., Runtime]) -> None:
    async with make_runtime("[plugins.offline_provider]\ntoken_delay = 0.05\n") as runtime:
        loop = asyncio.get_running_loop()
        began = loop.time()
        chunks = await stream(
            runtime, ChatRequest(model="offline/echo", messages=[user("one two three")])
        )
        elapsed = loop.time() - began
    words = sum(1 for c in chunks if c.delta)
    assert words == 7
    assert elapsed >= 0.05 * words * 0.9


async def test_slow_stream_times_out(make_runtime: Callable[..., Runtime]) -> None:
    from hubbub.errors import ProviderTimeoutError

    text = (
        "[plugins.offline_provider]\ntoken_delay = 1.0\n[llm]\nrequest_timeout = 0.1\nretries = 0\n"
    )
    async with make_runtime(text) as runtime:
        with pytest.raises(ProviderTimeoutError, match=r"within 0\.1 s"):
            await stream(runtime, ChatRequest(model="offline/echo", messages=[user("hi")]))


# -- the conversation engine --------------------------------------------------------------------


def summarise(events: list[Event]) -> list[str]:
    """Event types, with consecutive deltas collapsed and roles/states spelled out."""
    out: list[str] = []
    for event in events:
        name = event.type
        if name == "message.delta":
            if out and out[-1] == "message.delta*":
                continue
            name = "message.delta*"
        elif name in ("message.created", "message.completed"):
            name += f":{event.message.role}"  # type: ignore[attr-defined]
        elif name == "status":
            name += f":{event.state}"  # type: ignore[attr-defined]
        elif name == "typing":
            name += f":{'on' if event.active else 'off'}"  # type: ignore[attr-defined]
        out.append(name)
    return out


async def drain(subscription: Subscription) -> list[Event]:
    """Everything the subscription received: close it, then read until it ends."""
    subscription.close()
    return [event async for event in subscription]


async def test_conversation_runs_the_calculator_through_the_tool_loop(
    runtime: Runtime, principal: Principal
) -> None:
    conversation = await runtime.conversations.create(
        principal, title="  maths   time ", model="offline/tools"
    )
    assert conversation.title == "maths time"
    with runtime.events.subscribe(lambda e: e.conversation_id == conversation.id) as subscription:
        await runtime.conversations.send(principal, conversation.id, CALL)
        reply = await runtime.conversations.reply(principal, conversation.id, request_id="r1")
        events = await drain(subscription)

    assert reply.content == "[offline tools] The tool basic.calculator returned: 3"
    assert reply.role == "assistant"
    assert reply.model == "offline/tools"

    stored = (await runtime.conversations.messages(principal, conversation.id)).items
    assert [m.role for m in stored] == ["user", "assistant", "tool", "assistant"]
    asked, answered = stored[1], stored[2]
    assert asked.tool_calls is not None
    assert asked.tool_calls[0].name == "basic.calculator"
    assert answered.tool_call_id == asked.tool_calls[0].id
    assert answered.content == "3"
    assert stored[3] == reply

    assert summarise(events) == [
        "message.created:user",
        "typing:on",
        "status:thinking",
        "message.created:assistant",
        "usage",  # published by the LLM client as the model's stream ends
        "message.completed:assistant",
        "status:calling_tool",
        "tool.started",
        "tool.finished",
        "message.created:tool",
        "status:thinking",
        "message.created:assistant",
        "message.delta*",
        "usage",
        "message.completed:assistant",
        "typing:off",
        "status:idle",
    ]
    assert all(e.owner == principal.id for e in events)
    ids = [e.id for e in events]
    assert len(set(ids)) == len(ids)
    finished = next(e for e in events if e.type == "tool.finished")
    assert finished.result.content == "3"  # type: ignore[attr-defined]
    assert finished.result.is_error is False  # type: ignore[attr-defined]
    deltas = "".join(e.delta for e in events if e.type == "message.delta")  # type: ignore[attr-defined]
    assert deltas == reply.content


async def test_message_created_for_a_reply_is_the_empty_start(
    runtime: Runtime, principal: Principal
) -> None:
    conversation = await runtime.conversations.create(principal, model="offline/echo")
    with runtime.events.subscribe() as subscription:
        await runtime.conversations.send(principal, conversation.id, "hello")
        await runtime.conversations.reply(principal, conversation.id)
        events = await drain(subscription)
    created = [
        e
        for e in events
        if e.type == "message.created" and e.message.role == "assistant"  # type: ignore[attr-defined]
    ]
    assert created[0].message.content == ""  # type: ignore[attr-defined]


async def test_failed_tool_is_reported_to_the_model(runtime: Runtime, principal: Principal) -> None:
    conversation = await runtime.conversations.create(principal, model="offline/tools")
    await runtime.conversations.send(
        principal, conversation.id, 'call basic.calculator {"expression": "__import__(1)"}'
    )
    reply = await runtime.conversations.reply(principal, conversation.id)
    assert reply.content.startswith("[offline tools] The tool basic.calculator returned: error:")


async def test_tool_rounds_are_limited(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    # A model that always asks for a tool gets no tools offered in its last round.
    class Stubborn:
        __name__ = "stubborn"

        @hookimpl
        def register_llm_providers(self, register: Any) -> None:
            from hubbub_plugins.offline_provider import OfflineProvider, OfflineSettings

            class Always(OfflineProvider):
                async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
                    if request.tools:
                        yield ChatChunk(
                            tool_calls=[
                                ToolCall(id=f"c{len(request.messages)}", name="current_time")
                            ]
                        )
                        yield ChatChunk(finish_reason="tool_calls")
                    else:
                        yield ChatChunk(delta="giving up")
                        yield ChatChunk(finish_reason="stop")

            register("always", lambda context: Always("always", OfflineSettings()))

    async with make_runtime("[llm]\nmax_tool_rounds = 2\n", Stubborn()) as runtime:
        conversation = await runtime.conversations.create(principal, model="always/echo")
        await runtime.conversations.send(principal, conversation.id, "what time is it?")
        reply = await runtime.conversations.reply(principal, conversation.id)
        stored = (await runtime.conversations.messages(principal, conversation.id)).items
    assert reply.content == "giving up"
    assert [m.role for m in stored] == ["user"] + ["assistant", "tool"] * 2 + ["assistant"]


async def test_interceptor_sees_one_system_message_each_round(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    seen: list[list[str]] = []

    class SystemPrompt:
        __name__ = "system_prompt"

        @hookimpl
        def before_llm_request(self, request: ChatRequest) -> None:
            request.messages.insert(0, Message(role="system", content="You are terse."))
            seen.append([m.role for m in request.messages])

    async with make_runtime("", SystemPrompt()) as runtime:
        conversation = await runtime.conversations.create(principal, model="offline/tools")
        await runtime.conversations.send(principal, conversation.id, CALL)
        await runtime.conversations.reply(principal, conversation.id)
    assert seen == [["system", "user"], ["system", "user", "assistant", "tool"]]


async def test_reply_errors_are_published(runtime: Runtime, principal: Principal) -> None:
    conversation = await runtime.conversations.create(principal)
    await runtime.conversations.send(principal, conversation.id, "hi")
    with runtime.events.subscribe() as subscription:
        with pytest.raises(UnknownModelError):
            await runtime.conversations.reply(principal, conversation.id, model="nope/none")
        events = await drain(subscription)
    kinds = [e.type for e in events]
    assert "error" in kinds
    assert kinds[-2:] == ["typing", "status"]
    error = next(e for e in events if e.type == "error")
    assert error.code == "model_not_found"  # type: ignore[attr-defined]


async def test_conversations_belong_to_their_owner(runtime: Runtime, principal: Principal) -> None:
    from hubbub.errors import InvalidRequestError, NotFoundError

    conversation = await runtime.conversations.create(principal, title="mine")
    stranger = Principal(id="someone-else")
    with pytest.raises(NotFoundError):
        await runtime.conversations.get(stranger, conversation.id)
    with pytest.raises(NotFoundError):
        await runtime.conversations.send(stranger, conversation.id, "hi")
    assert (await runtime.conversations.list_conversations(stranger)).items == []
    with pytest.raises(InvalidRequestError):
        await runtime.conversations.send(principal, conversation.id, "   ")
    renamed = await runtime.conversations.update(principal, conversation.id, title="ours")
    assert renamed.title == "ours"
    await runtime.conversations.delete(principal, conversation.id)
    with pytest.raises(NotFoundError):
        await runtime.conversations.get(principal, conversation.id)


async def test_replies_answer_the_newest_message_of_a_long_conversation(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime("[llm]\nhistory_messages = 3\n") as runtime:
        conversation = await runtime.conversations.create(principal)
        for n in range(5):
            await runtime.conversations.send(principal, conversation.id, f"message {n}")
        reply = await runtime.conversations.reply(principal, conversation.id)
    assert reply.content == "[offline echo] You said: message 4"


# -- usage: real tokens, free -------------------------------------------------------------------


def cl100k(text: str) -> int:
    """``text``'s tokens in cl100k_base, counted here with tiktoken itself."""
    import tiktoken

    from hubbub.llm.tokens import offline_encodings

    offline_encodings()
    return len(tiktoken.get_encoding("cl100k_base").encode(text))


async def test_usage_counts_the_tools_offered_and_the_call_made(runtime: Runtime) -> None:
    bare = await runtime.llm.complete(ChatRequest(model="offline/tools", messages=[user(CALL)]))
    offered = await runtime.llm.complete(
        ChatRequest(model="offline/tools", messages=[user(CALL)], tools=[CALCULATOR])
    )
    assert bare.usage.prompt_tokens == 4 + cl100k(CALL)
    described = json.dumps(
        {
            "name": "basic.calculator",
            "description": "arithmetic",
            "parameters": CALCULATOR.parameters,
        },
        separators=(",", ":"),
    )
    assert offered.usage.prompt_tokens == bare.usage.prompt_tokens + cl100k(described)
    (call,) = offered.message.tool_calls or ()
    assert offered.usage.completion_tokens == cl100k("basic.calculator") + cl100k(call.arguments)
    assert offered.usage.cost == 0


async def test_the_offline_models_are_priced_free(runtime: Runtime) -> None:
    from hubbub.llm.pricing import PriceTable

    prices = PriceTable({})  # no table at all: the models' own prices are enough
    for model in runtime.llm.models():
        if model.provider == "offline":
            assert prices.cost(model, 1000, 1000) == Decimal(0)
