"""Replies stopped early keep their text: cancelled (from this runtime or another sharing Redis),
left by their waiting caller, cut by the runtime stopping, or failed mid-stream. The partial
reply is stored marked ``interrupted`` and announced with ``message.completed``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from redis_support import RedisServer
from reply_support import (
    SLOW,
    messages,
    rest,
    streaming,
    summary,
    two_processes,
    until,
    waiting,
    words,
)

from hubbub import hookimpl
from hubbub.errors import NotFoundError, ProviderError
from hubbub.events import CancelRequested, ErrorEvent, MessageCompleted, Status
from hubbub.models import Message, Principal
from hubbub.runtime import Runtime
from hubbub.testing import FakeLLM, delay, error, reply, tool_call
from hubbub.tools import function_tools

LONG = words(300)  # about 6 s of streaming at 0.02 s a word
FULL = f"[offline echo] You said: {LONG}"


async def test_a_cancelled_reply_keeps_its_text_and_ends_with_message_completed(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime(SLOW) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        events = await streaming(runtime, principal, conversation.id, LONG)
        assert await engine.cancel(principal, conversation.id) is True
        request = await until(events, CancelRequested)
        assert request.reason == "cancelled"
        assert request.owner == principal.id
        tail = await rest(events)
        stored = await messages(runtime, principal, conversation.id)
        # the conversation is free again, and the next reply is whole
        _, answer = await engine.post_message(principal, conversation.id, "again", wait=True)
    assert [s for s in tail if s not in ("message.delta", "usage")] == [
        "completed:assistant:cancelled",
        "typing:False",
        "status:idle",
    ]
    assert [m.role for m in stored] == ["user", "assistant"]
    partial = stored[1]
    assert partial.interrupted == "cancelled"
    assert partial.content  # some text was produced...
    assert FULL.startswith(partial.content)  # ...and kept as it was
    assert len(partial.content) < len(FULL)  # but not the whole reply
    assert partial.tool_calls is None
    assert answer is not None
    assert answer.content == "[offline echo] You said: again"
    assert answer.interrupted is None


async def test_a_reply_whose_lease_is_lost_stops_keeping_its_text(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime(SLOW) as runtime:
        engine = runtime.conversations
        engine.leases.renew_every = 0.05  # so that the loss is noticed at once
        conversation = await engine.create(principal)
        events = await streaming(runtime, principal, conversation.id, LONG)
        # The lease expired and another process took it (as after a long stall here).
        await runtime.cache.set(engine.leases.key(conversation.id), b"elsewhere/1/1/reply_x")
        tail = await rest(events)
        stored = await messages(runtime, principal, conversation.id)
    assert "completed:assistant:error" in tail  # two replies never run on for long
    assert stored[-1].interrupted == "error"
    assert FULL.startswith(stored[-1].content)
    assert len(stored[-1].content) < len(FULL)


async def test_cancelling_when_no_reply_runs_changes_nothing(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime("") as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        await engine.post_message(principal, conversation.id, "hi", wait=True)
        requests = runtime.events.subscribe(lambda e: isinstance(e, CancelRequested))
        assert await engine.cancel(principal, conversation.id) is False
        assert requests.pending == 0  # nothing was published
        with pytest.raises(NotFoundError):
            await engine.cancel(Principal(id="mallory"), conversation.id)
        stored = await messages(runtime, principal, conversation.id)
    assert [m.interrupted for m in stored] == [None, None]


async def test_someone_elses_cancel_request_is_ignored(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    """Engines act on a cancel request only for the conversation's owner (a request published
    on the shared log by a buggy or older process for another owner stops nothing)."""
    async with make_runtime(SLOW) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        events = runtime.events.subscribe(lambda e: e.conversation_id == conversation.id)
        await engine.post_message(principal, conversation.id, "one two three four five six")
        runtime.events.publish(CancelRequested(), conversation_id=conversation.id, owner="mallory")
        completed = await until(events, MessageCompleted)
    assert completed.message.interrupted is None


async def test_a_reply_cancelled_before_any_text_stores_an_empty_interrupted_message(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    # The first request waits (and is cancelled meanwhile); the second gets the answer.
    fake = FakeLLM(delay(60), reply("first answer"))
    async with make_runtime('[llm]\ndefault_model = "fake/model"\n', fake) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        events = runtime.events.subscribe(lambda e: e.conversation_id == conversation.id)
        await engine.post_message(principal, conversation.id, "hello")
        await until(events, Status)  # thinking: the model was asked
        assert await engine.cancel(principal, conversation.id) is True
        tail = await rest(events)
        await engine.post_message(principal, conversation.id, "hello again", wait=True)
        stored = await messages(runtime, principal, conversation.id)
    assert "message.delta" not in tail
    assert tail[-3:] == ["completed:assistant:cancelled", "typing:False", "status:idle"]
    assert [(m.role, m.content, m.interrupted) for m in stored] == [
        ("user", "hello", None),
        ("assistant", "", "cancelled"),
        ("user", "hello again", None),
        ("assistant", "first answer", None),
    ]
    # The model is not shown the empty interrupted message.
    assert len(fake.requests) == 2
    assert [(m.role, m.content) for m in fake.requests[1].messages] == [
        ("user", "hello"),
        ("user", "hello again"),
    ]


async def test_a_reply_cancelled_while_a_tool_runs_answers_the_call_and_ends_the_reply(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    started = asyncio.Event()

    async def slow_lookup(query: str) -> str:
        """Look something up, slowly."""
        started.set()
        await asyncio.sleep(60)
        return "found"

    class SlowTools:
        __name__ = "slow_tools"

        @hookimpl
        def register_tools(self, register: Any) -> None:
            register("slow", lambda context: function_tools(slow_lookup))

    fake = FakeLLM(tool_call("slow.slow_lookup", {"query": "x"}, text="Let me look."), reply("ok"))
    config = '[llm]\ndefault_model = "fake/model"\n'
    async with make_runtime(config, fake, SlowTools()) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        events = runtime.events.subscribe(lambda e: e.conversation_id == conversation.id)
        await engine.post_message(principal, conversation.id, "look it up")
        await asyncio.wait_for(started.wait(), 30)
        assert await engine.cancel(principal, conversation.id) is True
        tail = await rest(events)
        await engine.post_message(principal, conversation.id, "never mind", wait=True)
        stored = await messages(runtime, principal, conversation.id)
    assert tail[-3:] == ["completed:assistant:cancelled", "typing:False", "status:idle"]
    roles = [(m.role, m.interrupted) for m in stored]
    assert roles == [
        ("user", None),
        ("assistant", None),  # asked for the tool: stored whole
        ("tool", "cancelled"),  # the call gets an answer, so the history stays valid
        ("assistant", "cancelled"),  # the reply's end
        ("user", None),
        ("assistant", None),
    ]
    assert stored[1].content == "Let me look."
    assert stored[2].tool_call_id == stored[1].tool_calls[0].id  # type: ignore[index]
    assert stored[2].metadata == {"is_error": True}
    # the next request shows the model the call and its (interrupted) result
    shown = [m.role for m in fake.requests[-1].messages]
    assert shown == ["user", "assistant", "tool", "user"]


async def test_a_caller_that_leaves_stops_its_reply_as_disconnected(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime(SLOW) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        events, caller = await waiting(runtime, principal, conversation.id, LONG)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        tail = await rest(events)
        stored = await messages(runtime, principal, conversation.id)
    assert tail[-3:] == ["completed:assistant:disconnected", "typing:False", "status:idle"]
    assert stored[-1].interrupted == "disconnected"
    assert stored[-1].content
    assert FULL.startswith(stored[-1].content)


async def test_a_waiting_caller_whose_reply_is_cancelled_gets_the_partial_reply(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime(SLOW) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        _, caller = await waiting(runtime, principal, conversation.id, LONG)
        await engine.cancel(principal, conversation.id)
        _, answer = await asyncio.wait_for(caller, 30)
    assert answer is not None
    assert answer.interrupted == "cancelled"
    assert FULL.startswith(answer.content)


async def test_stopping_the_runtime_mid_reply_stores_it_marked_shutdown(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    runtime = make_runtime(SLOW + "[runtime]\ndrain_timeout = 0.1\n")
    await runtime.start()
    conversation = await runtime.conversations.create(principal)
    events = await streaming(runtime, principal, conversation.id, LONG)
    await runtime.stop()
    seen = []
    while (event := await events.get()) is not None:
        seen.append(summary(event))
    async with make_runtime("") as again:  # same data directory: read back from SQLite
        stored = await messages(again, principal, conversation.id)
    tail = [s for s in seen if s not in ("message.delta", "usage")]
    assert tail[-4:] == [
        "completed:assistant:shutdown",
        "error:interrupted",
        "typing:False",
        "status:idle",
    ]
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[1].interrupted == "shutdown"
    assert stored[1].content
    assert FULL.startswith(stored[1].content)
    assert len(stored[1].content) < len(FULL)


async def test_a_waiting_reply_is_stored_when_the_engine_closes(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    """A reply awaited by its caller is not a runtime task: closing the engine stops it."""
    runtime = make_runtime(SLOW + "[runtime]\ndrain_timeout = 0.1\n")
    await runtime.start()
    conversation = await runtime.conversations.create(principal)
    _, caller = await waiting(runtime, principal, conversation.id, LONG)
    await runtime.stop()
    _, answer = await asyncio.wait_for(caller, 30)
    assert answer is not None
    assert answer.interrupted == "shutdown"
    async with make_runtime("") as again:
        stored = await messages(again, principal, conversation.id)
    assert stored[-1].id == answer.id
    assert stored[-1].interrupted == "shutdown"


async def test_a_reply_that_fails_after_some_text_keeps_it_marked_error(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    fake = FakeLLM(error("provider_error", "the model fell over", partial="Half an"))
    async with make_runtime('[llm]\ndefault_model = "fake/model"\n', fake) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        events = runtime.events.subscribe(lambda e: e.conversation_id == conversation.id)
        with pytest.raises(ProviderError):
            await engine.post_message(principal, conversation.id, "go", wait=True)
        tail = await rest(events)
        stored = await messages(runtime, principal, conversation.id)
    assert [s for s in tail if s.startswith(("completed", "error"))] == [
        "completed:assistant:error",
        "error:provider_error",
    ]
    assert [(m.role, m.content, m.interrupted) for m in stored] == [
        ("user", "go", None),
        ("assistant", "Half an", "error"),
    ]


async def test_a_reply_that_fails_before_any_text_stores_nothing(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    fake = FakeLLM(error("provider_error", "refused"))
    async with make_runtime('[llm]\ndefault_model = "fake/model"\n', fake) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        with pytest.raises(ProviderError):
            await engine.post_message(principal, conversation.id, "go", wait=True)
        stored = await messages(runtime, principal, conversation.id)
    assert [m.role for m in stored] == ["user"]


class SlowReplyStore:
    """Memory store ``slow``: SQLite, but storing a finished assistant reply takes a while (so
    a stop can arrive while the reply is being stored)."""

    __name__ = "slow_store"

    def __init__(self) -> None:
        self.storing = asyncio.Event()

    @hookimpl
    def register_memory_stores(self, register: Any) -> None:
        from hubbub_plugins.sqlite_store import SQLiteStore

        storing = self.storing

        class Slow(SQLiteStore):
            async def append_message(self, message: Message) -> Message:
                if message.role == "assistant" and message.content and not message.interrupted:
                    storing.set()
                    await asyncio.sleep(0.3)
                return await super().append_message(message)

        register("slow", lambda context: Slow(str(context.data_dir / "slow.sqlite3")))


async def test_a_stop_while_the_finished_reply_is_stored_keeps_it_whole_and_once(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    store = SlowReplyStore()
    async with make_runtime('[memory]\nbackend = "slow"\n', store) as runtime:
        engine = runtime.conversations
        conversation = await engine.create(principal)
        events = runtime.events.subscribe(lambda e: e.conversation_id == conversation.id)
        await engine.post_message(principal, conversation.id, "hello")
        await asyncio.wait_for(store.storing.wait(), 30)
        assert await engine.cancel(principal, conversation.id) is True
        tail = await rest(events)
        stored = await messages(runtime, principal, conversation.id)
    assert [s for s in tail if s.startswith(("completed", "error"))] == ["completed:assistant:None"]
    assert [(m.role, m.content, m.interrupted) for m in stored] == [
        ("user", "hello", None),
        ("assistant", "[offline echo] You said: hello", None),
    ]


# -- another process -------------------------------------------------------------------------


async def test_a_reply_is_cancelled_from_another_runtime_sharing_redis(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer, principal: Principal
) -> None:
    async with two_processes(make_runtime, redis_server) as (a, b):
        conversation = await a.conversations.create(principal)
        there = b.events.subscribe(lambda e: e.conversation_id == conversation.id)
        await streaming(a, principal, conversation.id, LONG)
        assert await b.conversations.cancel(principal, conversation.id) is True
        completed = await until(there, MessageCompleted)  # seen on b, produced on a
        stored = await messages(b, principal, conversation.id)
    assert completed.message.interrupted == "cancelled"
    assert stored[-1].interrupted == "cancelled"
    assert FULL.startswith(stored[-1].content)
    assert len(stored[-1].content) < len(FULL)


async def test_deleting_a_conversation_stops_its_reply_in_another_runtime(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer, principal: Principal
) -> None:
    async with two_processes(make_runtime, redis_server) as (a, b):
        conversation = await a.conversations.create(principal)
        here = await streaming(a, principal, conversation.id, LONG)
        # b waits for a's reply to stop (well before a's 6 s reply would end), then deletes
        await asyncio.wait_for(b.conversations.delete(principal, conversation.id), 5)
        stopped = await until(here, ErrorEvent)
        with pytest.raises(NotFoundError):
            await a.conversations.messages(principal, conversation.id)
    assert stopped.code == "conversation_deleted"


async def test_a_late_cancel_request_for_an_earlier_reply_leaves_the_current_one_alone(
    make_runtime: Callable[..., Runtime], redis_server: RedisServer, principal: Principal
) -> None:
    """b asks to stop reply X running on a; the request reaches a once more, late (delayed on
    its way, or repeated), when X has ended and reply Y runs: it names X, so Y goes on whole."""
    async with two_processes(make_runtime, redis_server) as (a, b):
        conversation = await a.conversations.create(principal)
        requests = a.events.subscribe(lambda e: isinstance(e, CancelRequested))
        first = await streaming(a, principal, conversation.id, LONG)
        assert await b.conversations.cancel(principal, conversation.id) is True
        request = await until(requests, CancelRequested)
        assert request.reply_id.startswith("reply_")  # read by b from a's lease
        assert "completed:assistant:cancelled" in await rest(first)  # X stopped
        second = await streaming(a, principal, conversation.id, words(100))  # Y, about 2 s
        b.events.publish(msgspec.structs.replace(request, id=""))  # X's request, again
        tail = await rest(second)
        stored = await messages(b, principal, conversation.id)
    late = tail.index("reply.cancel")  # a heard it while Y ran...
    assert "message.delta" in tail[late:]  # ...and Y went on streaming
    assert tail[-3:] == ["completed:assistant:None", "typing:False", "status:idle"]
    assert [(m.role, m.interrupted) for m in stored] == [
        ("user", None),
        ("assistant", "cancelled"),
        ("user", None),
        ("assistant", None),
    ]
    assert stored[-1].content == f"[offline echo] You said: {words(100)}"
