"""The ``chat`` MCP tool: one turn of a conversation of the caller.

Arguments: ``message`` (the user's message), optional ``conversation_id`` (continue that
conversation, which must be the caller's: anyone else's does not exist for them), optional
``model`` (for this reply). Without ``conversation_id`` a new conversation is started. The
result's text is the reply; its structured content names the conversation, so the next call can
continue it. Every rule of the conversation API applies: quotas, budgets, a key's models, one
reply at a time per conversation.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import mcp_types as types
import msgspec

from hubbub.auth.scopes import check_model
from hubbub.conversation.engine import ConversationEngine
from hubbub.errors import HubbubError
from hubbub.models import Principal
from hubbub.redaction import public_message

__all__ = ["CHAT_TOOL", "ChatArguments", "run_chat"]

logger = logging.getLogger("hubbub.mcp.server")

CHAT_TOOL = "chat"
"""The name of the chat tool."""

_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "minLength": 1, "description": "What the user says."},
        "conversation_id": {
            "type": "string",
            "description": "Continue this conversation (one of yours, as a previous call "
            "returned it); a new conversation is started when it is absent.",
        },
        "model": {"type": "string", "minLength": 1, "description": "Model for this reply."},
    },
    "required": ["message"],
    "additionalProperties": False,
}

_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "conversation_id": {"type": "string"},
        "message_id": {"type": "string"},
        "model": {"type": "string"},
        "interrupted": {"type": "string"},
    },
    "required": ["conversation_id", "message_id"],
}


class ChatArguments(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The ``chat`` tool's arguments."""

    message: Annotated[str, msgspec.Meta(min_length=1)]
    """What the user says."""
    conversation_id: str | None = None
    """The conversation to continue; ``None``: a new one."""
    model: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    """The model for this reply; ``None``: the conversation's, else the default."""


class ChatOutput(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The ``chat`` tool's structured content."""

    conversation_id: str
    """The conversation the turn was in: pass it back to continue."""
    message_id: str
    """The stored reply's id."""
    model: str | None = None
    """The model that wrote the reply."""
    interrupted: str | None = None
    """Why the reply stopped early, when it did (its text is what was written until then)."""


def chat_tool() -> types.Tool:
    """The ``chat`` tool as MCP lists it."""
    return types.Tool(
        name=CHAT_TOOL,
        description="Send a message in one of your hubbub conversations and get the reply. "
        "Without conversation_id a new conversation is started; pass the conversation_id of "
        "the result to continue it.",
        input_schema=_INPUT_SCHEMA,
        output_schema=_OUTPUT_SCHEMA,
    )


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"error: {text}")], is_error=True
    )


async def _discard(engine: ConversationEngine, principal: Principal, conversation_id: str) -> None:
    """Delete the conversation made for a turn that failed before it began (so each failure
    does not leave an empty conversation behind)."""
    try:
        await engine.delete(principal, conversation_id)
    except HubbubError as exc:  # the failure reported is the turn's, not this one
        logger.warning(
            "could not delete the conversation %s of a failed chat turn: %s",
            conversation_id,
            public_message(exc),
        )


async def run_chat(
    engine: ConversationEngine,
    principal: Principal,
    arguments: dict[str, Any] | None,
    *,
    request_id: str | None = None,
) -> types.CallToolResult:
    """Run one turn for ``principal`` and answer with the reply's text (and the conversation
    in the structured content). Expected failures (invalid arguments, another's or unknown
    conversation, a busy conversation, quotas, an unknown model) are tool errors
    (``isError``) with a clear message, never protocol errors."""
    try:
        args = msgspec.convert(arguments or {}, ChatArguments)
    except msgspec.ValidationError as exc:
        return _error(f"invalid arguments: {exc}")
    conversation_id = args.conversation_id
    created = False
    try:
        if conversation_id is None:
            # what would fail the turn, checked before a conversation is made for it
            if args.model is not None:
                engine.llm.resolve(args.model)
            check_model(principal, args.model or engine.llm.default_model)
            conversation_id = (await engine.create(principal)).id
            created = True
        _, reply = await engine.post_message(
            principal,
            conversation_id,
            args.message,
            model=args.model,
            wait=True,
            request_id=request_id,
        )
    except HubbubError as exc:
        if created and conversation_id is not None:
            await _discard(engine, principal, conversation_id)
        return _error(public_message(exc))
    if reply is None:  # pragma: no cover - wait=True always returns the reply
        return _error("the reply did not complete")
    output = ChatOutput(
        conversation_id=conversation_id,
        message_id=reply.id,
        model=reply.model,
        interrupted=reply.interrupted,
    )
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=reply.content)],
        structured_content=msgspec.to_builtins(output),
        is_error=reply.interrupted is not None,
    )
