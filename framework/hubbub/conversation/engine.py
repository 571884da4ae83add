"""The conversation engine: conversations owned by principals, and replies produced by models.

:meth:`ConversationEngine.send` stores the user's message; :meth:`ConversationEngine.reply` asks
the model, streams the answer as events (``typing``, ``status``, ``message.created``,
``message.delta``, ``tool.started``/``tool.finished``, ``message.completed``, ``usage``), runs the
tools the model asks for (up to ``[llm] max_tool_rounds`` rounds), and stores every message.
Text that streams in together is published as one ``message.delta`` (see
:mod:`hubbub.llm.coalesce`).
A conversation belongs to its creator; to anyone else it does not exist (:class:`NotFoundError`).

Deleting a conversation stops the reply being written to it first: the reply is cancelled and
says so with an ``error`` event (code ``conversation_deleted``), then the conversation and its
messages are deleted and ``conversation.updated`` (change ``deleted``) is published last.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

import msgspec

from hubbub.contracts import MemoryStore, ToolContext
from hubbub.errors import ConflictError, HubbubError, InvalidRequestError, NotFoundError
from hubbub.events import (
    ConversationUpdated,
    ErrorEvent,
    EventBus,
    MessageCompleted,
    MessageCreated,
    MessageDelta,
    Status,
    ToolFinished,
    ToolStarted,
    Typing,
)
from hubbub.llm import LLMClient
from hubbub.llm.coalesce import TextBuffer
from hubbub.log import log_context
from hubbub.models import (
    ChatRequest,
    Conversation,
    Health,
    Message,
    Page,
    Principal,
    ToolCall,
    ToolSpec,
    Usage,
    now,
)
from hubbub.tools import ToolRegistry

__all__ = ["ConversationEngine"]

logger = logging.getLogger("hubbub.conversation")

MAX_TITLE = 200


class ConversationEngine:
    """Conversations, messages and replies, on top of the memory store, LLM client and tools."""

    def __init__(
        self,
        memory: MemoryStore,
        llm: LLMClient,
        tools: ToolRegistry,
        events: EventBus,
        *,
        max_tool_rounds: int = 5,
        history_limit: int = 1000,
        spawn: Callable[[Coroutine[Any, Any, Any], str], object] | None = None,
    ) -> None:
        self.memory = memory
        self.llm = llm
        self.tools = tools
        self.events = events
        self.max_tool_rounds = max_tool_rounds
        self.history_limit = history_limit
        self._spawn = spawn
        self._replies: dict[str, _Reply] = {}

    async def start(self) -> None:
        """Nothing to acquire: the engine uses components the runtime started before it."""

    async def health(self) -> Health:
        return Health()

    async def aclose(self) -> None:
        """Nothing to release."""

    # -- conversations -----------------------------------------------------------------------

    async def create(
        self, owner: Principal, *, title: str = "", model: str | None = None
    ) -> Conversation:
        """Start a conversation owned by ``owner``."""
        if model is not None:
            self.llm.resolve(model)
        conversation = await self.memory.create_conversation(
            Conversation(owner=owner.id, title=_title(title), model=model)
        )
        self._changed("created", owner, conversation.id, conversation)
        return conversation

    async def get(self, owner: Principal, conversation_id: str) -> Conversation:
        """The conversation, if ``owner`` owns it; else :class:`NotFoundError`."""
        conversation = await self.memory.get_conversation(conversation_id)
        if conversation is None or conversation.owner != owner.id:
            raise NotFoundError(f"no conversation {conversation_id!r}")
        return conversation

    async def list_conversations(
        self, owner: Principal, *, limit: int = 50, cursor: str | None = None
    ) -> Page[Conversation]:
        """``owner``'s conversations, most recently updated first."""
        return await self.memory.list_conversations(owner.id, limit=limit, cursor=cursor)

    async def update(
        self,
        owner: Principal,
        conversation_id: str,
        *,
        title: str | None = None,
        model: str | None = None,
    ) -> Conversation:
        """Rename a conversation or change its model."""
        conversation = await self.get(owner, conversation_id)
        if title is not None:
            conversation.title = _title(title)
        if model is not None:
            self.llm.resolve(model)
            conversation.model = model
        conversation = await self.memory.update_conversation(conversation)
        self._changed("updated", owner, conversation.id, conversation)
        return conversation

    async def delete(self, owner: Principal, conversation_id: str) -> None:
        """Delete a conversation and its messages. A reply being written to it is cancelled
        first (it publishes an ``error`` event with code ``conversation_deleted``); the
        ``conversation.updated`` event (change ``deleted``) comes last."""
        await self.get(owner, conversation_id)
        while (running := self._replies.get(conversation_id)) is not None:
            running.stop_for_deletion()
            await running.done.wait()
        deleting = self._reserve(conversation_id)  # at once: no new reply while deleting
        deleting.deleted = True
        try:
            await self.get(owner, conversation_id)  # a concurrent delete may have won
            await self.memory.delete_conversation(conversation_id)
        finally:
            self._release(conversation_id, deleting)
        self._changed("deleted", owner, conversation_id)

    def _changed(
        self,
        change: Literal["created", "updated", "deleted"],
        owner: Principal,
        conversation_id: str,
        conversation: Conversation | None = None,
    ) -> None:
        self.events.publish(
            ConversationUpdated(
                change=change,
                conversation=conversation,
                conversation_id=conversation_id,
                owner=owner.id,
            )
        )

    async def messages(
        self, owner: Principal, conversation_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[Message]:
        """The conversation's messages, oldest first."""
        await self.get(owner, conversation_id)
        return await self.memory.list_messages(conversation_id, limit=limit, cursor=cursor)

    # -- messages and replies ------------------------------------------------------------------

    async def send(self, owner: Principal, conversation_id: str, content: str) -> Message:
        """Store the user's message (the reply is :meth:`reply`'s job)."""
        return await self._store_user_message(
            owner, await self.get(owner, conversation_id), content
        )

    async def _store_user_message(
        self, owner: Principal, conversation: Conversation, content: str
    ) -> Message:
        if not content.strip():
            raise InvalidRequestError("content must not be empty", field="content")
        message = await self.memory.append_message(
            Message(
                role="user",
                content=content,
                conversation_id=conversation.id,
                name=owner.name or None,
            )
        )
        self.events.publish(
            MessageCreated(message=message, conversation_id=conversation.id, owner=owner.id)
        )
        return message

    async def post_message(
        self,
        owner: Principal,
        conversation_id: str,
        content: str,
        *,
        model: str | None = None,
        wait: bool = False,
        request_id: str | None = None,
    ) -> tuple[Message, Message | None]:
        """Store the user's message and start the reply: in the background (returns
        ``(message, None)``; follow the events) or, with ``wait``, to completion (returns
        ``(message, reply)``). One reply at a time per conversation: while one runs, this raises
        :class:`ConflictError` and stores nothing."""
        if model is not None:
            self.llm.resolve(model)
        record = self._reserve(conversation_id)
        try:
            conversation = await self.get(owner, conversation_id)
            message = await self._store_user_message(owner, conversation, content)
        except BaseException:
            self._release(conversation_id, record)
            raise
        reply = self._reply_reserved(
            owner,
            conversation_id,
            record,
            conversation=conversation,
            model=model,
            request_id=request_id,
        )
        if wait:
            return message, await self._await_reply(conversation_id, record, reply)
        if self._spawn is None:
            reply.close()
            self._release(conversation_id, record)
            raise RuntimeError("this engine cannot reply in the background: give it spawn=")
        task = self._spawn(reply, f"reply {conversation_id}")
        if isinstance(task, asyncio.Task):
            record.task = task  # cancellable even before it starts, released even if it never does
            task.add_done_callback(lambda _: self._release(conversation_id, record))
        return message, None

    async def reply(
        self,
        owner: Principal,
        conversation_id: str,
        *,
        model: str | None = None,
        request_id: str | None = None,
    ) -> Message:
        """Produce, stream (as events) and store the assistant's reply; return the last message.

        Errors are published as an ``error`` event and re-raised; so is an interruption (the
        server stopping). :class:`ConflictError` if a reply to this conversation is running;
        :class:`NotFoundError` if the conversation is deleted while the reply is written.
        """
        record = self._reserve(conversation_id)
        reply = self._reply_reserved(
            owner, conversation_id, record, model=model, request_id=request_id
        )
        return await self._await_reply(conversation_id, record, reply)

    def _reserve(self, conversation_id: str) -> _Reply:
        running = self._replies.get(conversation_id)
        if running is not None and running.deleted:
            raise NotFoundError(f"no conversation {conversation_id!r}: it is being deleted")
        if running is not None:
            raise ConflictError(
                f"a reply to conversation {conversation_id!r} is still being written; "
                "wait for its message.completed event"
            )
        record = self._replies[conversation_id] = _Reply()
        return record

    def _release(self, conversation_id: str, record: _Reply) -> None:
        if self._replies.get(conversation_id) is record:
            del self._replies[conversation_id]
        record.done.set()

    async def _await_reply(
        self, conversation_id: str, record: _Reply, reply: Coroutine[Any, Any, Message]
    ) -> Message:
        """Run ``reply`` in a task of its own, so that deleting the conversation cancels the
        reply and not the caller, who gets :class:`NotFoundError` instead."""
        task = asyncio.ensure_future(reply)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if record.deleted and (current is None or not current.cancelling()):
                raise NotFoundError(
                    f"conversation {conversation_id!r} was deleted while its reply was written"
                ) from None
            raise

    async def _reply_reserved(
        self,
        owner: Principal,
        conversation_id: str,
        record: _Reply,
        *,
        conversation: Conversation | None = None,
        model: str | None,
        request_id: str | None,
    ) -> Message:
        record.task = asyncio.current_task()
        try:
            if record.deleted:  # deleted before this reply started: nothing to say
                raise asyncio.CancelledError
            if conversation is None:
                conversation = await self.get(owner, conversation_id)
            model_id = model or conversation.model or self.llm.default_model
            with log_context(conversation_id=conversation_id, model=model_id):
                publish = _Publisher(self.events, conversation_id, owner.id)
                publish(Typing(active=True))
                try:
                    return await self._reply(owner, conversation, model_id, request_id, publish)
                except HubbubError as exc:
                    publish(ErrorEvent(code=exc.code, message=str(exc)))
                    raise
                except asyncio.CancelledError:
                    if record.deleted:
                        publish(
                            ErrorEvent(
                                code="conversation_deleted",
                                message="the conversation was deleted: its reply was stopped",
                            )
                        )
                    else:
                        publish(
                            ErrorEvent(
                                code="interrupted",
                                message="the reply was interrupted: the server is stopping",
                            )
                        )
                    raise
                except Exception as exc:
                    logger.exception("reply failed")
                    publish(
                        ErrorEvent(
                            code="internal_error", message=f"the reply failed: {type(exc).__name__}"
                        )
                    )
                    raise
                finally:
                    publish(Typing(active=False))
                    publish(Status(state="idle"))
        finally:
            self._release(conversation_id, record)

    async def _reply(
        self,
        owner: Principal,
        conversation: Conversation,
        model_id: str,
        request_id: str | None,
        publish: _Publisher,
    ) -> Message:
        history = await self.memory.recent_messages(conversation.id, limit=self.history_limit)
        specs = self.tools.specs() or None
        context = ToolContext(
            principal=owner, conversation_id=conversation.id, request_id=request_id
        )
        for round_number in range(self.max_tool_rounds + 1):
            offer_tools = specs if round_number < self.max_tool_rounds else None
            publish(Status(state="thinking", detail=model_id))
            message = await self._stream_one(
                owner, conversation, model_id, history, offer_tools, request_id, publish
            )
            history.append(message)
            if not message.tool_calls:
                return message
            for call in message.tool_calls:
                history.append(await self._run_tool(call, conversation, context, publish))
        raise AssertionError("unreachable: the last round offers no tools")  # pragma: no cover

    async def _stream_one(
        self,
        owner: Principal,
        conversation: Conversation,
        model_id: str,
        history: list[Message],
        tools: list[ToolSpec] | None,
        request_id: str | None,
        publish: _Publisher,
    ) -> Message:
        message = Message(role="assistant", conversation_id=conversation.id, model=model_id)
        publish(
            MessageCreated(message=msgspec.structs.replace(message))
        )  # a snapshot: filled later
        request = ChatRequest(
            model=model_id,
            messages=list(history),
            tools=tools,
            user=owner.id,
            metadata={"conversation_id": conversation.id, "request_id": request_id},
        )
        parts: list[str] = []
        calls: list[ToolCall] = []
        usage = Usage()
        # Merged: a reply streamed word by word is a few events, not one per word.
        deltas = TextBuffer(lambda text: publish(MessageDelta(message_id=message.id, delta=text)))
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
        stored = await self.memory.append_message(message)
        publish(MessageCompleted(message=stored))
        return stored

    async def _run_tool(
        self, call: ToolCall, conversation: Conversation, context: ToolContext, publish: _Publisher
    ) -> Message:
        publish(Status(state="calling_tool", detail=call.name))
        publish(ToolStarted(call=call))
        started = time.perf_counter()
        result = await self.tools.call(call, context)
        publish(ToolFinished(result=result, duration_ms=(time.perf_counter() - started) * 1000))
        message = await self.memory.append_message(
            Message(
                role="tool",
                content=result.content,
                name=call.name,
                tool_call_id=call.id,
                conversation_id=conversation.id,
                metadata={"is_error": True} if result.is_error else {},
            )
        )
        publish(MessageCreated(message=message))
        return message


class _Reply:
    """A reply being written to one conversation (or the conversation being deleted)."""

    __slots__ = ("deleted", "done", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        """The task writing the reply, once there is one."""
        self.deleted = False
        """The conversation is being deleted: the reply stops, and no new one starts."""
        self.done = asyncio.Event()
        """Set when the reply has ended (or never started) and the conversation is free."""

    def stop_for_deletion(self) -> None:
        """Mark the conversation deleted and cancel the reply's task (not the caller's own)."""
        self.deleted = True
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


class _Publisher:
    """Publishes events stamped with one conversation and owner."""

    def __init__(self, bus: EventBus, conversation_id: str, owner: str) -> None:
        self._bus = bus
        self._conversation_id = conversation_id
        self._owner = owner

    def __call__(self, event: Any) -> None:
        self._bus.publish(event, conversation_id=self._conversation_id, owner=self._owner)


def _title(title: str) -> str:
    title = " ".join(title.split())
    if len(title) > MAX_TITLE:
        raise InvalidRequestError(f"title is longer than {MAX_TITLE} characters", field="title")
    return title
