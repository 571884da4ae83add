"""Stopping the runtime within a deadline (what ``hubbub serve`` does with ``[server]
grace_period``): replies in progress are cut so that the whole stop ends by the deadline, a hook
or a component that hangs is abandoned at it, and :meth:`Runtime.drain` stops the replies while
the runtime keeps serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from hubbub import hookimpl
from hubbub.events import ErrorEvent
from hubbub.models import Health, Principal
from hubbub.runtime import Runtime

# A 400-word reply at 0.05 s a word takes 20 s; drain and stop timeouts far above the deadlines
# used here, so that only the deadline can explain a quick stop.
SLOW = """\
[plugins.offline_provider]
token_delay = 0.05
[runtime]
drain_timeout = 30
stop_timeout = 30
"""
LONG = " ".join(["word"] * 400)
MARGIN = 2.0
"""Seconds past a deadline a stop may still take on this noisy machine (it takes ~0.1 s)."""


class HangingTools:
    """A tool provider that never finishes closing."""

    async def start(self) -> None:
        pass

    async def health(self) -> Health:
        return Health()

    async def aclose(self) -> None:
        await asyncio.sleep(3600)

    def tools(self) -> Sequence[Any]:
        return []


class Stubborn:
    """A plugin whose ``on_shutdown`` hook never returns and whose tool provider never
    closes."""

    __name__ = "stubborn"

    @hookimpl
    def register_tools(self, register: Any) -> None:
        register("stubborn", lambda context: HangingTools())

    @hookimpl
    async def on_shutdown(self, runtime: Any) -> None:
        await asyncio.sleep(3600)


async def _reply_in_progress(runtime: Runtime, principal: Principal) -> str:
    conversation = await runtime.conversations.create(principal)
    await runtime.conversations.post_message(principal, conversation.id, LONG)
    await asyncio.sleep(0.3)  # the reply streams now
    return conversation.id


async def test_a_stop_with_a_deadline_cuts_the_replies_and_ends_by_it(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    runtime = make_runtime(SLOW)
    await runtime.start()
    errors = runtime.events.subscribe(lambda e: isinstance(e, ErrorEvent))
    conversation_id = await _reply_in_progress(runtime, principal)
    began = time.monotonic()
    await runtime.stop(deadline=began + 1.0)
    took = time.monotonic() - began
    assert runtime.state == "stopped"
    assert took < 1.0 + MARGIN, took  # not drain_timeout (30 s), not the reply's 20 s
    error = await errors.get()
    assert isinstance(error, ErrorEvent)
    assert (error.code, error.conversation_id) == ("interrupted", conversation_id)
    assert runtime.abandoned == []


async def test_the_replies_get_at_most_half_of_what_remains(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    """With stop_timeout above the time left, half of it is kept for stopping the rest: the
    reply is cut about halfway, not at the deadline."""
    runtime = make_runtime(SLOW)
    await runtime.start()
    errors = runtime.events.subscribe(lambda e: isinstance(e, ErrorEvent))
    await _reply_in_progress(runtime, principal)
    began = time.monotonic()
    stopping = asyncio.ensure_future(runtime.stop(deadline=began + 4.0))
    await errors.get()
    cut_after = time.monotonic() - began
    await stopping
    assert cut_after < 4.0 - 0.5, cut_after  # about 2 s: before the deadline, with time left


async def test_a_hanging_hook_and_component_are_abandoned_at_the_deadline(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime(SLOW, Stubborn())
    await runtime.start()
    began = time.monotonic()
    await runtime.stop(deadline=began + 0.5)
    took = time.monotonic() - began
    assert runtime.state == "stopped"
    assert took < 0.5 + MARGIN, took  # stop_timeout is 30 s
    assert runtime.abandoned == ["tools.stubborn"]


async def test_drain_stops_the_replies_and_the_runtime_serves_on(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime(SLOW) as runtime:
        errors = runtime.events.subscribe(lambda e: isinstance(e, ErrorEvent))
        conversation_id = await _reply_in_progress(runtime, principal)
        began = time.monotonic()
        await runtime.drain(until=began + 0.3)
        assert time.monotonic() - began < 0.3 + MARGIN
        error = await errors.get()
        assert isinstance(error, ErrorEvent)
        assert error.code == "interrupted"
        assert runtime.state == "running"
        # the conversation is free again, and replies are produced as before
        _, answer = await runtime.conversations.post_message(
            principal, conversation_id, "again", wait=True
        )
        assert answer is not None
        assert answer.content == "[offline echo] You said: again"
