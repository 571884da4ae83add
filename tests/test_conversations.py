"""The conversation engine's reply rules: one reply at a time per conversation, replies in the
background drained on stop, interrupted replies reported."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from hubbub.errors import ConflictError, NotFoundError
from hubbub.events import ErrorEvent, MessageCompleted
from hubbub.models import Principal
from hubbub.runtime import Runtime

SLOW = "[plugins.offline_provider]\ntoken_delay = 0.05\n"


async def test_a_second_message_while_a_reply_runs_is_refused_and_not_stored(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime(SLOW) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        done = runtime.events.subscribe(
            lambda e: isinstance(e, MessageCompleted) and e.message.role == "assistant"
        )
        _, reply = await engine.post_message(principal, conversation.id, "one two three")
        assert reply is None  # replying in the background
        with pytest.raises(ConflictError, match="still being written"):
            await engine.post_message(principal, conversation.id, "too soon")
        assert await done.get() is not None  # the first reply is complete
        _, answer = await engine.post_message(principal, conversation.id, "now", wait=True)
        assert answer is not None
        assert answer.content == "[offline echo] You said: now"
        stored = [m.content for m in (await engine.messages(principal, conversation.id)).items]
    assert "too soon" not in stored
    assert stored[0] == "one two three"


async def test_other_conversations_reply_at_the_same_time(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime(SLOW) as runtime:
        engine = runtime.conversations
        a, b = await engine.create(principal), await engine.create(principal)
        replies = await asyncio.gather(
            engine.post_message(principal, a.id, "alpha", wait=True),
            engine.post_message(principal, b.id, "beta", wait=True),
        )
    assert [r[1].content for r in replies if r[1]] == [
        "[offline echo] You said: alpha",
        "[offline echo] You said: beta",
    ]


async def test_stopping_lets_a_short_reply_finish(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    runtime = make_runtime(SLOW + "[runtime]\ndrain_timeout = 5\n")
    await runtime.start()
    conversation = await runtime.conversations.create(principal)
    await runtime.conversations.post_message(principal, conversation.id, "a few words")
    await runtime.stop()  # waits for the reply (about 0.4 s) before stopping the store
    async with make_runtime("") as again:  # same data directory
        stored = (await again.conversations.messages(principal, conversation.id)).items
    assert [m.role for m in stored] == ["user", "assistant"]


async def test_a_reply_cut_by_stopping_is_reported(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    runtime = make_runtime(SLOW + "[runtime]\ndrain_timeout = 0.1\n")
    await runtime.start()
    conversation = await runtime.conversations.create(principal)
    errors = runtime.events.subscribe(lambda e: isinstance(e, ErrorEvent))
    await runtime.conversations.post_message(
        principal,
        conversation.id,
        " ".join(["word"] * 100),  # about 5 s of streaming
    )
    await asyncio.sleep(0.2)
    await runtime.stop()
    error = await errors.get()
    assert isinstance(error, ErrorEvent)
    assert error.code == "interrupted"
    assert error.conversation_id == conversation.id


async def test_someone_elses_conversation_does_not_exist(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime("") as runtime:
        conversation = await runtime.conversations.create(principal)
        with pytest.raises(NotFoundError):
            await runtime.conversations.post_message(Principal(id="mallory"), conversation.id, "hi")
        # The refused request reserved nothing: the owner can post at once.
        _, reply = await runtime.conversations.post_message(
            principal, conversation.id, "hi", wait=True
        )
        assert reply is not None
