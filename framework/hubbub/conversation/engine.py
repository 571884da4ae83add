"""The conversation engine: conversations owned by principals, and replies produced by models.

:meth:`ConversationEngine.send` stores the user's message; :meth:`ConversationEngine.reply` asks
the model, streams the answer as events (``typing``, ``status``, ``message.created``,
``message.delta``, ``tool.started``/``tool.finished``, ``message.completed``, ``usage``), runs the
tools the model asks for (up to ``[llm] max_tool_rounds`` rounds), and stores every message.
A conversation belongs to its creator; to anyone else it does not exist (:class:`NotFoundError`).

The engine is the entry point; the work is done by its parts, one job each:

- :mod:`hubbub.conversation.replies`: one reply at a time per conversation, across processes
  (leases in the runtime's cache, :mod:`hubbub.conversation.lease`), and stopping replies:
  :meth:`ConversationEngine.cancel` from any process, a waiting caller that leaves, shutdown;
- :mod:`hubbub.conversation.writer`: writing one reply, in rounds of model requests and tool
  calls;
- :mod:`hubbub.conversation.ending`: how a reply ends, and the partial text a reply stopped early
  keeps (stored marked ``interrupted`` with the reason, announced with ``message.completed``).

Deleting a conversation stops the reply being written to it first: the reply is cancelled and
says so with an ``error`` event (code ``conversation_deleted``), then the conversation and its
messages are deleted and ``conversation.updated`` (change ``deleted``) is published last.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal

from hubbub.auth.scopes import check_model, check_tools
from hubbub.contracts import CacheBackend, MemoryStore
from hubbub.conversation.context import ContextBuilder
from hubbub.conversation.ending import write_to_end
from hubbub.conversation.lease import ReplyLeases
from hubbub.conversation.replies import RunningReplies
from hubbub.conversation.running import InterruptReason, RunningReply
from hubbub.conversation.writer import Publisher, ReplyWriter
from hubbub.errors import InvalidRequestError, NotFoundError
from hubbub.events import ConversationUpdated, EventBus, MessageCreated
from hubbub.llm import LLMClient
from hubbub.log import log_context
from hubbub.memory import Quotas
from hubbub.memory.expiry import checked_expiry
from hubbub.models import Conversation, Health, Message, Page, Principal, now
from hubbub.tools import ToolRegistry

__all__ = ["ConversationEngine"]

logger = logging.getLogger("hubbub.conversation")

MAX_TITLE = 200


class ConversationEngine:
    """Conversations, messages and replies, on top of the memory store, LLM client and tools.

    :param cache: where reply leases are kept (the runtime's cache): one reply at a time per
        conversation across every process sharing it.
    :param lease_ttl: seconds a reply lease lasts unrenewed (it is renewed every third of
        that while the reply runs): how long a conversation stays blocked after the process
        replying to it died.
    """

    def __init__(
        self,
        memory: MemoryStore,
        llm: LLMClient,
        tools: ToolRegistry,
        events: EventBus,
        *,
        cache: CacheBackend,
        context: ContextBuilder,
        quotas: Quotas,
        max_tool_rounds: int = 5,
        spawn: Callable[[Coroutine[Any, Any, Any], str], object] | None = None,
        lease_ttl: float = 30.0,
    ) -> None:
        self.memory = memory
        self.llm = llm
        self.tools = tools
        self.events = events
        self.leases = ReplyLeases(cache, ttl=lease_ttl)
        """The reply leases, in the runtime's cache."""
        self._replies = RunningReplies(events, self.leases)
        self.context = context
        """Builds what a model is shown of a conversation (memories, summary, what fits)."""
        self.memories = context.memories
        """The users' long-term memories."""
        self.quotas = quotas
        """The ``[quotas]`` checked before conversations and messages are stored."""
        self.max_tool_rounds = max_tool_rounds
        self._spawn = spawn

    async def start(self) -> None:
        """Listen for cancel requests (from this process and, with a shared event log, every
        other)."""
        await self._replies.start()

    async def health(self) -> Health:
        return Health(detail=f"{len(self._replies)} replies running here")

    async def aclose(self) -> None:
        """Stop the replies still running here (``shutdown``: their partial text is stored)
        and stop listening for cancel requests."""
        await self._replies.aclose()

    async def interrupt_all(self, reason: InterruptReason = "shutdown") -> None:
        """Stop every reply this process is writing, each keeping its partial text marked
        ``reason``, and return once they have ended (a server draining for shutdown calls this
        when it stops waiting for replies to finish)."""
        await self._replies.interrupt_all(reason)

    async def reply_began(self, conversation_id: str) -> int | None:
        """When the reply being written to the conversation began (Unix milliseconds), in
        this process or another sharing the cache; ``None`` when none is, or when the cache
        cannot say (logged). A stream that joins the reply late replays the conversation's
        events from then. Check ownership first (:meth:`get`)."""
        try:
            return await self.leases.began(conversation_id)
        except Exception as exc:  # a stream opens without catching up rather than not at all
            logger.warning(
                "cannot tell whether a reply runs in %s: %s",
                conversation_id,
                exc,
                extra={"conversation_id": conversation_id},
            )
            return None

    # -- conversations -----------------------------------------------------------------------

    async def create(
        self,
        owner: Principal,
        *,
        title: str = "",
        model: str | None = None,
        expires_at: float | None = None,
        tools: Sequence[str] | None = None,
    ) -> Conversation:
        """Start a conversation owned by ``owner``; with ``expires_at`` (Unix seconds, in the
        future) the sweeper deletes it then; with ``tools`` (names or patterns) its replies
        may use only those of the owner's tools."""
        if model is not None:
            self.llm.resolve(model)
        _expiry(expires_at)
        allowed = _tools(tools)
        async with self.quotas.writing(owner.id):
            await self.quotas.check_conversation(owner.id)
            conversation = await self.memory.create_conversation(
                Conversation(
                    owner=owner.id,
                    title=_title(title),
                    model=model,
                    expires_at=expires_at,
                    tools=allowed,
                )
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
        expires_at: float | None = None,
        tools: Sequence[str] | None = None,
    ) -> Conversation:
        """Rename a conversation, change its model, when it expires or the tools its replies
        may use (``["*"]``: all the owner may)."""
        allowed = _tools(tools)
        conversation = await self.get(owner, conversation_id)
        if allowed is not None:
            conversation.tools = allowed
        if expires_at is not None:
            conversation.expires_at = _expiry(expires_at)
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
        first, on whichever process writes it (it publishes an ``error`` event with code
        ``conversation_deleted``); the ``conversation.updated`` event (change ``deleted``)
        comes last."""
        await self.get(owner, conversation_id)
        deleting = await self._replies.reserve_for_deletion(conversation_id, owner.id)
        try:
            await self.get(owner, conversation_id)  # a concurrent delete may have won
            await self.memory.delete_conversation(conversation_id)
        finally:
            await self._replies.release(deleting)
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
        async with self.quotas.writing(owner.id):
            await self.quotas.check_message(owner.id, content)
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
        ``(message, reply)``; a reply stopped early comes back marked ``interrupted``, and if
        the caller goes away the reply stops as ``disconnected``). One reply at a time per
        conversation, across processes: while one runs, this raises :class:`ConflictError` and
        stores nothing."""
        if model is not None:
            self.llm.resolve(model)
        current = await self.get(owner, conversation_id)  # another's: 404, busy or not
        check_model(owner, model or current.model or self.llm.default_model)  # a key's models
        record = await self._replies.reserve(conversation_id, owner.id)
        try:
            conversation = await self.get(owner, conversation_id)
            message = await self._store_user_message(owner, conversation, content)
        except BaseException:
            await self._replies.release(record)
            raise
        reply = self._write(
            owner, record, conversation=conversation, model=model, request_id=request_id
        )
        if wait:
            return message, await self._replies.await_reply(record, reply)
        if self._spawn is None:
            reply.close()
            await self._replies.release(record)
            raise RuntimeError("this engine cannot reply in the background: give it spawn=")
        self._replies.release_when_done(self._spawn(reply, f"reply {conversation_id}"), record)
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

        Errors are published as an ``error`` event and re-raised. A reply stopped early returns
        its stored partial message (``interrupted`` set). :class:`ConflictError` if a reply to
        this conversation is running (here or in another process sharing the cache);
        :class:`NotFoundError` if the conversation is not ``owner``'s (busy or not) or is
        deleted while the reply is written.
        """
        current = await self.get(owner, conversation_id)
        check_model(owner, model or current.model or self.llm.default_model)  # a key's models
        record = await self._replies.reserve(conversation_id, owner.id)
        reply = self._write(owner, record, model=model, request_id=request_id)
        return await self._replies.await_reply(record, reply)

    async def cancel(self, owner: Principal, conversation_id: str) -> bool:
        """Stop the reply being written to ``owner``'s conversation, whichever process writes
        it: publishes :class:`~hubbub.events.CancelRequested` naming that reply, and that
        process stores the partial reply marked ``interrupted="cancelled"`` and ends it with
        ``message.completed``. Returns whether a reply was running (``False``: nothing to stop,
        nothing published). :class:`NotFoundError` for a conversation that is not ``owner``'s."""
        await self.get(owner, conversation_id)
        return await self._replies.cancel(conversation_id, owner.id)

    async def _write(
        self,
        owner: Principal,
        record: RunningReply,
        *,
        conversation: Conversation | None = None,
        model: str | None,
        request_id: str | None,
    ) -> Message:
        """Write the reply ``record`` reserved, to its end; the conversation is released
        however it ends."""
        record.task = asyncio.current_task()
        try:
            if record.deleted:  # deleted before this reply started: nothing to say
                raise asyncio.CancelledError
            if conversation is None:
                conversation = await self.get(owner, record.conversation_id)
            model_id = model or conversation.model or self.llm.default_model
            writer = ReplyWriter(
                memory=self.memory,
                llm=self.llm,
                tools=self.tools.for_caller(owner, conversation=conversation),
                owner=owner,
                conversation=conversation,
                model_id=model_id,
                request_id=request_id,
                publish=Publisher(self.events, conversation.id, owner.id),
                max_tool_rounds=self.max_tool_rounds,
                parallel_calls=self.tools.config.parallel_calls,
                context=self.context,
            )
            with log_context(conversation_id=conversation.id, model=model_id):
                return await write_to_end(record, writer, lambda: self._replies.release(record))
        finally:
            await self._replies.release(record)


def _title(title: str) -> str:
    title = " ".join(title.split())
    if len(title) > MAX_TITLE:
        raise InvalidRequestError(f"title is longer than {MAX_TITLE} characters", field="title")
    return title


def _tools(tools: Sequence[str] | None) -> list[str] | None:
    """``tools`` checked (names or patterns of tools), sorted; ``None`` stays ``None``."""
    return None if tools is None else sorted(check_tools(tools))


def _expiry(expires_at: float | None) -> float | None:
    return checked_expiry(expires_at, now())
