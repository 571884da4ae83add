"""The native conversation API under ``/api/conversations``.

Every conversation belongs to its creator; for anyone else it does not exist (404).
``POST .../messages`` stores the user's message and starts the reply in the background (202):
follow it on ``.../events`` (SSE), or send ``"wait": true`` to get the reply in the response (a
client that leaves before it stops the reply, which keeps its text marked ``disconnected``).
``POST .../cancel`` stops the reply in progress, whichever process writes it.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, Parameter
from litestar.response import ServerSentEvent

from hubbub.auth.scopes import MAX_SCOPES
from hubbub.config.schema import TOOL_PATTERN
from hubbub.events import format_id
from hubbub.log import current_context
from hubbub.models import Conversation, Message, Page
from hubbub_server.disconnect import until_disconnected
from hubbub_server.problems import PROBLEM_RESPONSES
from hubbub_server.routes.events import LastEventId, event_stream
from hubbub_server.security import Caller, RuntimeDep

__all__ = ["ConversationsController"]

CATCH_UP_MARGIN_MS = 100
"""A stream that joins a reply late replays from this long before the reply began: the
replying host's clock and the event log's (Redis's) may differ a little (keep them in sync
with NTP)."""

Limit = Annotated[int, Parameter(ge=1, le=200, description="Page size.")]
Cursor = Annotated[str | None, Parameter(description="next_cursor of the previous page.")]
ModelId = Annotated[str, msgspec.Meta(min_length=1, description="A model id `/v1/models` lists.")]
Expiry = Annotated[float, msgspec.Meta(gt=0, description="Unix seconds, in the future.")]


ToolName = Annotated[str, msgspec.Meta(pattern=TOOL_PATTERN)]
"""A tool's name or a pattern of names (``time.*``)."""


class CreateConversation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/conversations``."""

    title: str = ""
    model: ModelId | None = None
    """Model for replies; the server's default model when unset."""
    expires_at: Expiry | None = None
    """When the conversation is deleted with its messages (Unix seconds, in the future); kept
    until deleted (or ``[retention] conversation_idle_days``) when unset."""
    tools: Annotated[list[ToolName], msgspec.Meta(max_length=MAX_SCOPES)] | None = None
    """The tools its replies may use, by name or pattern (``["basic.*"]``), among those you may
    use (``GET /api/tools``); all of those when unset, none when ``[]``."""


class UpdateConversation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``PATCH /api/conversations/{id}``: the fields to change."""

    title: str | None = None
    model: ModelId | None = None
    expires_at: Expiry | None = None
    """A new expiry (Unix seconds, in the future)."""
    tools: Annotated[list[ToolName], msgspec.Meta(max_length=MAX_SCOPES)] | None = None
    """The tools its replies may use from now on, by name or pattern (``["*"]``: all you may
    use; ``[]``: none)."""


class SendMessage(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/conversations/{id}/messages``."""

    content: Annotated[str, msgspec.Meta(min_length=1)]
    model: ModelId | None = None
    """Model for this reply only."""
    wait: bool = False
    """Answer when the reply is complete (200, with ``reply``) instead of at once (202)."""


class SentMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The stored user message, and the reply when ``wait`` was set."""

    message: Message
    reply: Message | None = None


class CancelResult(msgspec.Struct, kw_only=True):
    """Body of ``POST /api/conversations/{id}/cancel``'s answer."""

    reply_running: bool
    """Whether a reply was being written (on any process): it is being stopped, and ends with
    ``message.completed`` of its partial text, marked ``interrupted: "cancelled"``. ``false``:
    there was nothing to stop."""


class ConversationsController(Controller):
    path = "/api/conversations"
    tags = ["conversations"]

    @post("/", summary="Start a conversation", responses=PROBLEM_RESPONSES)
    async def create_conversation(
        self, runtime: RuntimeDep, principal: Caller, data: JSONBody[CreateConversation]
    ) -> Conversation:
        return await runtime.conversations.create(
            principal,
            title=data.title,
            model=data.model,
            expires_at=data.expires_at,
            tools=data.tools,
        )

    @get(
        "/",
        summary="List your conversations, most recently active first",
        responses=PROBLEM_RESPONSES,
    )
    async def list_conversations(
        self, runtime: RuntimeDep, principal: Caller, limit: Limit = 50, cursor: Cursor = None
    ) -> Page[Conversation]:
        return await runtime.conversations.list_conversations(principal, limit=limit, cursor=cursor)

    @get("/{conversation_id:str}", summary="Get a conversation", responses=PROBLEM_RESPONSES)
    async def get_conversation(
        self, runtime: RuntimeDep, principal: Caller, conversation_id: FromPath[str]
    ) -> Conversation:
        return await runtime.conversations.get(principal, conversation_id)

    @patch(
        "/{conversation_id:str}",
        summary="Rename a conversation or change its model",
        responses=PROBLEM_RESPONSES,
    )
    async def update_conversation(
        self,
        runtime: RuntimeDep,
        principal: Caller,
        conversation_id: FromPath[str],
        data: JSONBody[UpdateConversation],
    ) -> Conversation:
        return await runtime.conversations.update(
            principal,
            conversation_id,
            title=data.title,
            model=data.model,
            expires_at=data.expires_at,
            tools=data.tools,
        )

    @delete(
        "/{conversation_id:str}",
        summary="Delete a conversation and its messages",
        responses=PROBLEM_RESPONSES,
    )
    async def delete_conversation(
        self, runtime: RuntimeDep, principal: Caller, conversation_id: FromPath[str]
    ) -> None:
        await runtime.conversations.delete(principal, conversation_id)

    @post(
        "/{conversation_id:str}/messages",
        summary="Send a message; the reply follows",
        description="202 at once (follow the reply on the events stream), or 200 with the "
        "reply when `wait` is true. 409 while a reply to this conversation is being written.",
        status_code=202,
        responses={
            200: ResponseSpec(SentMessage, description="With `wait`: the message and the reply"),
            **PROBLEM_RESPONSES,
        },
    )
    async def send_message(
        self,
        request: Request[Any, Any, Any],
        runtime: RuntimeDep,
        principal: Caller,
        conversation_id: FromPath[str],
        data: JSONBody[SendMessage],
    ) -> Response[SentMessage]:
        posting = runtime.conversations.post_message(
            principal,
            conversation_id,
            data.content,
            model=data.model,
            wait=data.wait,
            request_id=current_context().get("request_id"),
        )
        if not data.wait:
            message, _ = await posting
            return Response(SentMessage(message=message), status_code=202)
        # A client that leaves stops the reply (its text kept, marked "disconnected").
        message, reply = await until_disconnected(request, posting)
        return Response(SentMessage(message=message, reply=reply), status_code=200)

    @post(
        "/{conversation_id:str}/cancel",
        summary="Stop the reply being written",
        description="Stops the reply in progress in this conversation, whichever server "
        'process writes it. 202 `{"reply_running": true}`: it is being stopped; its text so '
        'far is stored as the assistant message with `interrupted: "cancelled"` and '
        'announced by a `message.completed` event. 200 `{"reply_running": false}`: no reply '
        "was running, nothing changed. 404 for a conversation that is not yours.",
        status_code=202,
        responses={
            200: ResponseSpec(CancelResult, description="No reply was running"),
            **PROBLEM_RESPONSES,
        },
    )
    async def cancel_reply(
        self, runtime: RuntimeDep, principal: Caller, conversation_id: FromPath[str]
    ) -> Response[CancelResult]:
        running = await runtime.conversations.cancel(principal, conversation_id)
        return Response(CancelResult(reply_running=running), status_code=202 if running else 200)

    @get(
        "/{conversation_id:str}/messages",
        summary="List a conversation's messages",
        responses=PROBLEM_RESPONSES,
    )
    async def list_messages(
        self,
        runtime: RuntimeDep,
        principal: Caller,
        conversation_id: FromPath[str],
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
        cursor: Cursor = None,
    ) -> Page[Message]:
        return await runtime.conversations.messages(
            principal, conversation_id, limit=limit, cursor=cursor
        )

    @get(
        "/{conversation_id:str}/events",
        summary="Server-sent events of one conversation",
        responses=PROBLEM_RESPONSES,
    )
    async def conversation_events(
        self,
        request: Request[Any, Any, Any],
        runtime: RuntimeDep,
        principal: Caller,
        conversation_id: FromPath[str],
        last_event_id: LastEventId = None,
    ) -> ServerSentEvent:
        await runtime.conversations.get(principal, conversation_id)

        async def catch_up() -> str | None:
            began = await runtime.conversations.reply_began(conversation_id)
            return None if began is None else format_id((began - CATCH_UP_MARGIN_MS, 0))

        return event_stream(
            request, runtime, principal, conversation_id, last_event_id, catch_up=catch_up
        )
