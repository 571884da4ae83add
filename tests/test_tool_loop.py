"""The tool loop of a reply: calls of one message run at once, each result is stored as it
comes, events say what ran, and the conversation's own tool filter holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from hubbub import hookimpl
from hubbub.errors import ComponentError
from hubbub.events import ToolFinished, ToolStarted
from hubbub.models import Message, Principal, ToolCall
from hubbub.registry import ComponentContext, Registrar
from hubbub.runtime import Runtime
from hubbub.testing import FakeLLM, reply
from hubbub.tools import StaticToolProvider, function_tools

CONFIG = '[llm]\ndefault_model = "fake/model"\n[tools]\nparallel_calls = 2\n'


class Slow:
    """Tools ``slow.wait`` (sleeps, recording when it ran) and ``slow.loud`` (a long result)."""

    __name__ = "slow_tools"

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []

    @hookimpl
    def register_tools(self, register: Registrar) -> None:
        spans = self.spans

        async def wait(label: str, seconds: float = 0.2) -> str:
            """Wait, then say so."""
            began = time.monotonic()
            await asyncio.sleep(seconds)
            spans.append((label, began, time.monotonic()))
            return f"{label} done"

        async def loud() -> str:
            """A long answer."""
            return "word " * 10_000

        def build(context: ComponentContext[Any]) -> StaticToolProvider:
            return function_tools(wait, loud)

        register("slow", build)


def calls(*pairs: tuple[str, str]) -> list[ToolCall]:
    return [
        ToolCall(id=f"call_{i}", name=name, arguments=arguments)
        for i, (name, arguments) in enumerate(pairs)
    ]


async def test_calls_of_one_message_run_at_once_within_parallel_calls(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    slow, fake = Slow(), FakeLLM()
    fake.script(
        reply(
            tool_calls=calls(
                ("slow.wait", '{"label": "a", "seconds": 0.3}'),
                ("slow.wait", '{"label": "b", "seconds": 0.05}'),
                ("slow.wait", '{"label": "c", "seconds": 0.05}'),
            )
        ),
        lambda request: reply("; ".join(m.content for m in request.messages if m.role == "tool")),
    )
    async with make_runtime(CONFIG, slow, fake) as runtime:
        conversation = await runtime.conversations.create(principal)
        _, answer = await runtime.conversations.post_message(
            principal, conversation.id, "go", wait=True
        )
        stored = (await runtime.conversations.messages(principal, conversation.id)).items
    assert answer is not None
    # the model reads the results in the order it made the calls, whatever order they ended in
    assert answer.content == "a done; b done; c done"
    spans = {label: (began, ended) for label, began, ended in slow.spans}
    assert spans["b"][0] < spans["a"][1]  # b started before a ended: at once
    assert spans["c"][0] >= min(spans["a"][1], spans["b"][1]) - 0.01  # two at a time
    # each result was stored as it came: b's first
    tools = [m for m in stored if m.role == "tool"]
    assert next(m.tool_call_id for m in tools) == "call_1"
    assert sorted(m.tool_call_id for m in tools) == ["call_0", "call_1", "call_2"]


async def test_events_say_what_ran_and_a_long_result_is_cut_in_the_event_only(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    slow, fake = Slow(), FakeLLM()
    fake.script(
        reply(tool_calls=calls(("slow.loud", "{}"), ("slow.wait", '{"label": 3}'))),
        reply("done"),
    )
    async with make_runtime(CONFIG, slow, fake) as runtime:
        seen: list[Any] = []
        with runtime.events.subscribe(lambda e: isinstance(e, ToolStarted | ToolFinished)) as sub:
            conversation = await runtime.conversations.create(principal)
            await runtime.conversations.post_message(principal, conversation.id, "go", wait=True)
            events = aiter(sub)
            while len(seen) < 4:
                seen.append(await asyncio.wait_for(anext(events), 5))
        stored = (await runtime.conversations.messages(principal, conversation.id)).items
    started = [e for e in seen if isinstance(e, ToolStarted)]
    finished = {e.result.call_id: e for e in seen if isinstance(e, ToolFinished)}
    assert [e.call.arguments for e in started] == ["{}", '{"label": 3}']
    loud, bad = finished["call_0"], finished["call_1"]
    assert len(loud.result.content) <= 16 * 1024 + 3
    assert loud.summary.startswith("word word")
    assert len(loud.summary) <= 200
    assert loud.error is None
    assert loud.duration_ms >= 0
    assert bad.result.is_error
    assert bad.error == "error: invalid arguments: label: expected 'str', got 'int'"
    whole = next(m for m in stored if m.tool_call_id == "call_0")
    assert len(whole.content) == len("word " * 10_000)  # stored whole


@pytest.mark.parametrize(
    ("allowed", "ran"), [(["slow.*"], True), (["basic.*"], False), ([], False)]
)
async def test_a_conversation_s_tools_filter_what_is_offered_and_what_runs(
    make_runtime: Callable[..., Runtime], principal: Principal, allowed: list[str], ran: bool
) -> None:
    slow, fake = Slow(), FakeLLM()
    fake.script(
        reply(tool_calls=calls(("slow.wait", '{"label": "x", "seconds": 0}'))),
        lambda request: reply(request.messages[-1].content),
    )
    async with make_runtime(CONFIG, slow, fake) as runtime:
        conversation = await runtime.conversations.create(principal, tools=allowed)
        assert conversation.tools == sorted(allowed)
        _, answer = await runtime.conversations.post_message(
            principal, conversation.id, "go", wait=True
        )
    offered = [spec.name for spec in fake.requests[0].tools or ()]
    assert ("slow.wait" in offered) is ran
    assert "basic.calculator" in offered or allowed != ["basic.*"]
    assert answer is not None
    assert (answer.content == "x done") is ran
    if not ran:  # the model asked anyway: refused as unknown
        assert answer.content == "error: no tool named 'slow.wait' is available"


async def test_a_failure_to_store_a_result_of_parallel_calls_is_the_error_itself(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    """Not an ExceptionGroup (a 500 with ``internal_error``): the store's own error, as when
    one call alone fails to store its result."""
    slow, fake = Slow(), FakeLLM()
    fake.script(
        reply(
            tool_calls=calls(
                ("slow.wait", '{"label": "a", "seconds": 0}'),
                ("slow.wait", '{"label": "b", "seconds": 0}'),
            )
        ),
        reply("never"),
    )
    async with make_runtime(CONFIG, slow, fake) as runtime:
        store = runtime.memory
        append = store.append_message

        async def failing(message: Message) -> Message:
            if message.role == "tool":
                raise ComponentError("the store is unavailable")
            return await append(message)

        store.append_message = failing  # type: ignore[method-assign]
        conversation = await runtime.conversations.create(principal)
        with pytest.raises(ComponentError, match="the store is unavailable"):
            await runtime.conversations.post_message(principal, conversation.id, "go", wait=True)
