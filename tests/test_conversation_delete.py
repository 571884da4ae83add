"""Deleting a conversation while its reply is being written stops the reply: the reply says so
with an ``error`` event (``conversation_deleted``), the deletion is announced last, nothing of
the reply is stored afterwards and nothing is logged as a failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from reply_support import SLOW, streaming, summary, waiting, words

from hubbub.errors import NotFoundError
from hubbub.events import ConversationUpdated
from hubbub.models import Principal
from hubbub.runtime import Runtime

LONG = words(200)  # about 4 s of streaming at 0.02 s a word


async def test_deleting_mid_reply_cancels_the_reply_and_announces_it_last(
    make_runtime: Callable[..., Runtime],
    principal: Principal,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with make_runtime(SLOW) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        events = await streaming(runtime, principal, conversation.id, LONG)
        await engine.delete(principal, conversation.id)
        after = []
        while events.pending:  # everything was published before delete() returned
            event = await events.get()
            assert event is not None
            after.append(summary(event))
        await asyncio.sleep(0.2)
        assert events.pending == 0  # and nothing came since: the reply stopped
        with pytest.raises(NotFoundError):
            await engine.messages(principal, conversation.id)
        # The conversation is free again for nobody: posting says it does not exist.
        with pytest.raises(NotFoundError):
            await engine.post_message(principal, conversation.id, "hello?")
    tail = [s for s in after if s not in ("message.delta", "usage")]
    assert tail == [
        "error:conversation_deleted",
        "typing:False",
        "status:idle",
        "conversation.updated:deleted",
    ]
    assert after[-1] == "conversation.updated:deleted"
    assert "reply failed" not in caplog.text
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_caller_waiting_for_the_reply_is_told_the_conversation_is_gone(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime(SLOW) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        _, caller = await waiting(runtime, principal, conversation.id, LONG)
        await engine.delete(principal, conversation.id)
        with pytest.raises(NotFoundError, match="deleted"):
            await asyncio.wait_for(caller, 5)


async def test_deleting_before_the_background_reply_starts_stops_it_too(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime(SLOW) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        seen = runtime.events.subscribe(lambda e: e.conversation_id == conversation.id)
        await engine.post_message(principal, conversation.id, LONG)
        await engine.delete(principal, conversation.id)  # no await between: not started yet
        await asyncio.sleep(0.2)
        types = []
        while seen.pending:
            event = await seen.get()
            assert event is not None
            types.append(summary(event))
    assert types[-1] == "conversation.updated:deleted"
    assert "message.delta" not in types


async def test_two_deletes_at_once_delete_once(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime(SLOW) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        deleted = runtime.events.subscribe(
            lambda e: isinstance(e, ConversationUpdated) and e.change == "deleted"
        )
        await engine.post_message(principal, conversation.id, LONG)
        outcomes = await asyncio.gather(
            engine.delete(principal, conversation.id),
            engine.delete(principal, conversation.id),
            return_exceptions=True,
        )
        assert outcomes.count(None) == 1
        assert [type(o) for o in outcomes if o is not None] == [NotFoundError]
        await asyncio.sleep(0.1)
        assert deleted.pending == 1
