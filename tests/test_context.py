"""What a model is shown: long-term memories, the stored summary in place of older messages,
and never more than its context window (``[context]``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from hubbub import hookimpl
from hubbub.config import Config
from hubbub.llm.tokens import TokenCounter
from hubbub.models import ChatRequest, MemoryItem, Message, ToolCall
from hubbub.registry import ComponentContext, Registrar
from hubbub.testing import FakeLLM, config_for, principal, reply, runtime_for, tool_call
from hubbub.tools import StaticToolProvider, function_tools

SMALL_WINDOW = """
[context]
context_window = 600
reply_tokens = 100
keep_messages = 2
summarize_at = 0.5
summary_tokens = 60
summary_model = "offline/echo"
"""

ALICE = principal("alice")
BOB = principal("bob")


async def _tokens(request: ChatRequest) -> int:
    return sum(await TokenCounter().count_messages(request.model, request.messages))


def _config(tmp_path: Path, fake: FakeLLM, toml: str = SMALL_WINDOW) -> Config:
    return config_for(tmp_path, f'[llm]\ndefault_model = "{fake.model}"\n' + toml)


async def _wait_for(condition: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(500):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never happened")


async def test_older_messages_are_summarized_and_shown_as_the_summary(tmp_path: Path) -> None:
    fake = FakeLLM()
    async with runtime_for(_config(tmp_path, fake), [fake]) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(ALICE)
        for i in range(8):
            fake.script(reply(f"answer {i} " + "words " * 20))
            await engine.post_message(
                ALICE, conversation.id, f"question {i} " + "lorem ipsum " * 20, wait=True
            )
        store = runtime.memory

        async def summarized() -> bool:
            return await store.get_summary(conversation.id) is not None

        await _wait_for(summarized)
        summary = await store.get_summary(conversation.id)
        assert summary is not None
        assert summary.model == "offline/echo"
        assert summary.covered >= 1
        assert summary.tokens <= 60
        # every message is still stored and listed
        listed = await engine.messages(ALICE, conversation.id, limit=100)
        assert len(listed.items) == 16

        fake.script(reply("last"))
        await engine.post_message(ALICE, conversation.id, "one more question", wait=True)
        request = fake.requests[-1]
        texts = [m.content for m in request.messages]
        assert any(t.startswith("Summary of the earlier part") for t in texts)
        assert "question 0 " + "lorem ipsum " * 20 not in texts
        assert texts[-1] == "one more question"
        assert await _tokens(request) <= 600 - 100


async def test_no_request_exceeds_the_window(tmp_path: Path) -> None:
    fake = FakeLLM()
    config = _config(tmp_path, fake, SMALL_WINDOW + "\n[quotas]\nmax_message_bytes = 0\n")
    async with runtime_for(config, [fake]) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(ALICE)
        fake.script(reply("a"), reply("b"))
        await engine.post_message(ALICE, conversation.id, "short one", wait=True)
        huge = "every word counts " * 2000
        await engine.post_message(ALICE, conversation.id, huge, wait=True)
        request = fake.requests[-1]
        assert await _tokens(request) <= 500
        assert request.messages[-1].content.endswith("cut to fit the model's context window]")
        stored = (await engine.messages(ALICE, conversation.id)).items
        assert huge in [m.content for m in stored]  # stored whole, only the request is cut


async def test_the_users_memories_are_shown_and_nobody_elses(tmp_path: Path) -> None:
    fake = FakeLLM()
    async with runtime_for(_config(tmp_path, fake, ""), [fake]) as runtime:
        engine = runtime.conversations
        await engine.memories.add(ALICE, "prefers metric units")
        await runtime.memory.add_memory(MemoryItem(owner=BOB.id, content="bob's secret"))
        conversation = await engine.create(ALICE)
        fake.script(reply("ok"))
        await engine.post_message(ALICE, conversation.id, "how far is it?", wait=True)
        first = fake.requests[-1].messages[0]
        assert first.role == "system"
        assert "prefers metric units" in first.content
        assert all("bob's secret" not in m.content for m in fake.requests[-1].messages)


async def test_no_memories_shown_when_turned_off(tmp_path: Path) -> None:
    fake = FakeLLM()
    config = _config(tmp_path, fake, "[context]\nmemories = 0\n")
    async with runtime_for(config, [fake]) as runtime:
        engine = runtime.conversations
        await engine.memories.add(ALICE, "prefers metric units")
        conversation = await engine.create(ALICE)
        fake.script(reply("ok"))
        await engine.post_message(ALICE, conversation.id, "hi", wait=True)
        assert [m.role for m in fake.requests[-1].messages] == ["user"]


async def test_one_summary_at_a_time_per_conversation(tmp_path: Path) -> None:
    fake = FakeLLM()
    async with runtime_for(_config(tmp_path, fake), [fake]) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(ALICE)
        for i in range(6):
            await runtime.memory.append_message(
                Message(
                    role="user", content=f"m{i} " + "text " * 30, conversation_id=conversation.id
                )
            )
        summarizer = engine.context.summarizer
        results = await asyncio.gather(
            *(summarizer.summarize(conversation, fake.model) for _ in range(3))
        )
        written = [r for r in results if r is not None]
        assert len(written) == 1
        assert written[0].covered == 4  # keep_messages = 2 stay verbatim
        # nothing new to cover: no second summary
        assert await summarizer.summarize(conversation, fake.model) is None


@pytest.mark.parametrize(
    ("model", "text", "expected"),
    [("gpt-4o-mini", "hello world", 2), ("gpt-4", "hello world", 2), ("x/other", "", 0)],
)
async def test_tokens_are_counted_with_tiktoken(model: str, text: str, expected: int) -> None:
    assert await TokenCounter().count(model, text) == expected


class HugeTool:
    """A plugin object: the tool ``dump``, whose result is far larger than any window here."""

    __name__ = "huge_tool"

    @hookimpl
    def register_tools(self, register: Registrar) -> None:
        async def dump() -> str:
            """Return a lot of text."""
            return "lots of output " * 5000

        def build(context: ComponentContext[Any]) -> StaticToolProvider:
            return function_tools(dump)

        register("huge_tool", build)


async def test_a_huge_tool_result_does_not_push_the_next_request_past_the_window(
    tmp_path: Path,
) -> None:
    fake = FakeLLM()
    async with runtime_for(_config(tmp_path, fake), [fake, HugeTool()]) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(ALICE)
        fake.script(tool_call("huge_tool.dump", {}), reply("done"))
        await engine.post_message(ALICE, conversation.id, "dump it", wait=True)
        second = fake.requests[-1]
        roles = [m.role for m in second.messages]
        assert roles[-3:] == ["user", "assistant", "tool"]  # the turn kept whole, in order
        assert second.messages[-1].content.endswith("cut to fit the model's context window]")
        shown = await TokenCounter().count_prompt(second.model, second.messages, second.tools)
        assert shown <= 600 - 100
        stored = (await engine.messages(ALICE, conversation.id)).items
        assert stored[-2].role == "tool"
        assert len(stored[-2].content) == len("lots of output " * 5000)  # stored whole


async def test_a_summary_never_parts_a_tool_call_from_its_result(tmp_path: Path) -> None:
    fake = FakeLLM()
    async with runtime_for(_config(tmp_path, fake), [fake]) as runtime:
        store = runtime.memory
        conversation = await runtime.conversations.create(ALICE)
        call = ToolCall(id="call_1", name="dump", arguments="{}")
        for message in (
            Message(role="user", content="first " * 40),
            Message(role="assistant", content="", tool_calls=[call]),
            Message(role="tool", content="result " * 40, tool_call_id="call_1"),
            Message(role="assistant", content="answer " * 40),
        ):
            message.conversation_id = conversation.id
            await store.append_message(message)
        # keep_messages = 2 would cut between the call and its result: the cut moves back
        summary = await runtime.conversations.context.summarizer.summarize(conversation, fake.model)
        assert summary is not None
        assert summary.covered == 1
        context = await runtime.conversations.context.build(conversation, fake.model)
        assert [m.role for m in context] == ["system", "assistant", "tool", "assistant"]


async def test_a_memory_with_heavy_metadata_is_refused(tmp_path: Path) -> None:
    # memories are read for every reply: their metadata is bounded
    from hubbub.errors import InvalidRequestError

    fake = FakeLLM()
    async with runtime_for(_config(tmp_path, fake, ""), [fake]) as runtime:
        memories = runtime.conversations.memories
        with pytest.raises(InvalidRequestError) as caught:
            await memories.add(ALICE, "fact", metadata={"blob": "x" * 5000})
        assert caught.value.field == "metadata"
        kept = await memories.add(ALICE, "fact", metadata={"blob": "x" * 4000})
        assert kept.metadata == {"blob": "x" * 4000}
