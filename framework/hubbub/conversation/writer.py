"""Writing one reply: rounds of model requests and tool calls.

:meth:`ReplyWriter.write` shows the model the conversation's history (as
:mod:`hubbub.conversation.context` builds it: memories, summary, what fits the window), streams
its answer (``status`` thinking, ``message.created``, ``message.delta``; text that streams in
together is one delta, see :mod:`hubbub.llm.coalesce`) and stores it; while the model asks for
tools, it runs them (``status`` calling_tool, ``tool.started``, ``tool.finished``, the result's
``message.created``) and asks again, up to ``max_tool_rounds`` rounds (the last offers no
tools); the calls of one message run at once. What it has produced and not stored yet is
kept in :attr:`ReplyWriter.progress`, so that a reply stopped early keeps it
(:mod:`hubbub.conversation.ending`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from hubbub.contracts import MemoryStore, ToolContext
from hubbub.conversation.context import ContextBuilder
from hubbub.conversation.running import Progress
from hubbub.errors import HubbubError
from hubbub.events import (
    EventBus,
    MessageCompleted,
    MessageCreated,
    MessageDelta,
    Status,
    ToolFinished,
    ToolStarted,
)
from hubbub.llm import LLMClient
from hubbub.llm.caller import caller_metadata
from hubbub.llm.coalesce import TextBuffer
from hubbub.models import (
    ChatRequest,
    Conversation,
    Message,
    Principal,
    ToolCall,
    ToolSpec,
    Usage,
    now,
)
from hubbub.tools import ToolSet

__all__ = ["Publisher", "ReplyWriter"]


class Publisher:
    """Publishes events stamped with one conversation and owner."""

    def __init__(self, bus: EventBus, conversation_id: str, owner: str) -> None:
        self._bus = bus
        self._conversation_id = conversation_id
        self._owner = owner

    def __call__(self, event: Any) -> None:
        """Publish ``event`` as the conversation's."""
        self._bus.publish(event, conversation_id=self._conversation_id, owner=self._owner)


@dataclass(slots=True, kw_only=True)
class ReplyWriter:
    """Writes one reply to ``conversation`` with ``model_id``, on behalf of ``owner``."""

    memory: MemoryStore
    """Where the conversation's messages are read and the reply's stored."""
    llm: LLMClient
    """Asked for the reply."""
    tools: ToolSet
    """The tools the owner may use in this conversation: offered to the model, and run when
    it asks."""
    owner: Principal
    """Whose conversation it is (tools run on their behalf)."""
    conversation: Conversation
    """The conversation replied to."""
    model_id: str
    """The model that writes the reply."""
    request_id: str | None
    """The request that asked for the reply, passed on to the model and tools."""
    publish: Publisher
    """Publishes the reply's events."""
    max_tool_rounds: int
    """Rounds of tool calls at most; the round after the last offers no tools."""
    parallel_calls: int
    """Tool calls of one model message run at once, at most."""
    context: ContextBuilder
    """Builds what the model is shown of the conversation."""
    progress: Progress = field(default_factory=Progress)
    """What the reply has produced and not stored yet."""

    async def write(self) -> Message:
        """Ask the model and run the tools it asks for, round after round; return the reply's
        last message, stored (its ``message.completed`` is the caller's to publish)."""
        history = await self.context.build(self.conversation, self.model_id)
        specs = self.tools.specs() or None
        context = ToolContext(
            principal=self.owner, conversation_id=self.conversation.id, request_id=self.request_id
        )
        for round_number in range(self.max_tool_rounds + 1):
            self.publish(Status(state="thinking", detail=self.model_id))
            offered = specs if round_number < self.max_tool_rounds else None
            shown = await self.context.fit(self.model_id, history, offered)
            message = await self._stream_one(shown, offered)
            history.append(message)
            if not message.tool_calls:
                return message
            history.extend(await self._run_tools(message.tool_calls, context))
        raise AssertionError("unreachable: the last round offers no tools")  # pragma: no cover

    async def _stream_one(self, history: list[Message], tools: list[ToolSpec] | None) -> Message:
        message = Message(
            role="assistant", conversation_id=self.conversation.id, model=self.model_id
        )
        self.publish(MessageCreated(message=msgspec.structs.replace(message)))  # filled later
        request = ChatRequest(
            model=self.model_id,
            messages=list(history),
            tools=tools,
            user=self.owner.id,
            metadata=caller_metadata(
                self.owner, conversation_id=self.conversation.id, request_id=self.request_id
            ),
        )
        parts = self.progress.streaming(message)
        calls: list[ToolCall] = []
        usage = Usage()
        # Merged: a reply streamed word by word is a few events, not one per word.
        deltas = TextBuffer(
            lambda text: self.publish(MessageDelta(message_id=message.id, delta=text))
        )
        try:
            async for chunk in self.llm.stream(request):
                if chunk.delta:
                    parts.append(chunk.delta)
                    deltas.add(chunk.delta)
                if chunk.tool_calls or chunk.finish_reason or chunk.usage:
                    deltas.flush()  # the text first: the usage event follows the last chunk
                calls.extend(chunk.tool_calls or ())
                usage = chunk.usage or usage
        finally:
            deltas.flush()  # however the stream ended, what was streamed is published
        message.content = "".join(parts)
        message.tool_calls = calls or None
        message.usage = usage
        message.created_at = now()

        def done(stored: Message) -> None:
            self.progress.stored(stored)
            if stored.tool_calls:  # the reply goes on; its last message.completed is the caller's
                self.publish(MessageCompleted(message=stored))

        return await self._append(message, done)

    async def _run_tools(self, calls: list[ToolCall], context: ToolContext) -> list[Message]:
        """Run ``calls`` at once (``parallel_calls`` at most), each result stored as soon as
        it is there; return the results' messages in the calls' order."""
        if len(calls) == 1:
            return [await self._run_tool(calls[0], context)]
        slots = asyncio.Semaphore(self.parallel_calls)

        async def one(call: ToolCall) -> Message:
            async with slots:
                return await self._run_tool(call, context)

        try:
            async with asyncio.TaskGroup() as group:
                running = [group.create_task(one(call)) for call in calls]
        except BaseExceptionGroup as failed:  # the same error one call alone would raise
            raise _first_error(failed) from None
        return [task.result() for task in running]

    async def _run_tool(self, call: ToolCall, context: ToolContext) -> Message:
        self.publish(Status(state="calling_tool", detail=call.name))
        self.publish(ToolStarted(call=call))
        started = time.perf_counter()
        result = await self.tools.call(call, context)
        self.publish(ToolFinished.of(result, (time.perf_counter() - started) * 1000))

        def done(stored: Message) -> None:
            self.progress.answered(call)
            self.publish(MessageCreated(message=stored))

        return await self._append(
            Message(
                role="tool",
                content=result.content,
                name=call.name,
                tool_call_id=call.id,
                conversation_id=self.conversation.id,
                metadata={"is_error": True} if result.is_error else {},
            ),
            done,
        )

    async def _append(self, message: Message, then: Callable[[Message], None]) -> Message:
        """Store ``message`` and call ``then`` with what was stored. Cancelled meanwhile, it
        still waits for the write and calls ``then`` before the cancellation goes on, so the
        reply knows what is stored and never stores it twice."""
        storing = asyncio.ensure_future(self.memory.append_message(message))
        try:
            stored = await asyncio.shield(storing)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                then(await storing)
            raise
        then(stored)
        return stored


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error of ``group`` to raise in its place: the first :class:`HubbubError` (it has
    its own status and code), else the first that is not a cancellation."""
    errors: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending[:0] = error.exceptions
        elif not isinstance(error, asyncio.CancelledError):
            errors.append(error)
    chosen = next((e for e in errors if isinstance(e, HubbubError)), None)
    return chosen or (errors[0] if errors else group)
