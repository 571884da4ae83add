"""How a reply ends, whatever happens: its last events, and the text of a reply stopped early.

Every reply starts with ``typing`` on and ends with ``typing`` off and ``status`` idle, after the
``message.completed`` of its last message and, if it failed, an ``error`` event. These last events
are published once the conversation is free again (:func:`write_to_end` releases it first), so
whoever reacts to them can post the next message at once.

A reply stopped early (cancelled, its waiting caller gone, the runtime stopping) or failing after
some text keeps what it produced: its text so far is stored as the assistant message, marked
``interrupted`` with the reason; a reply stopped before any text stores an empty interrupted
message, so every stopped reply ends the same way. Tool calls left without a result get an
interrupted error result, so the history stays well-formed. A reply stopped because its
conversation is being deleted stores nothing and ends with an ``error`` event
(``conversation_deleted``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec

from hubbub.conversation.running import InterruptReason, RunningReply
from hubbub.conversation.writer import ReplyWriter
from hubbub.errors import HubbubError
from hubbub.events import ErrorEvent, Event, MessageCompleted, MessageCreated, Status, Typing
from hubbub.models import Message, now

__all__ = ["write_to_end"]

logger = logging.getLogger("hubbub.conversation")


async def write_to_end(
    record: RunningReply, writer: ReplyWriter, release: Callable[[], Awaitable[None]]
) -> Message:
    """Write the reply with ``writer``, then ``release`` the conversation and publish the
    reply's last events. Returns the reply's last message (stored partial, marked
    ``interrupted``, if the reply was stopped); raises what made it fail, and
    :class:`asyncio.CancelledError` if it was cancelled unasked (the runtime stopping) or for
    its conversation's deletion."""
    last: list[Event] = []
    try:
        return await _write(record, writer, last)
    finally:
        try:
            await release()
        finally:
            for event in last:
                writer.publish(event)


async def _write(record: RunningReply, writer: ReplyWriter, last: list[Event]) -> Message:
    """The reply, its errors and interruptions; the events that end it go to ``last``."""
    writer.publish(Typing(active=True))
    try:
        if record.reason is not None:  # stopped before it started
            raise asyncio.CancelledError
        message = await writer.write()
        last.append(MessageCompleted(message=message))
        return message
    except HubbubError as exc:
        await _keep_if_any(writer, last)
        last.append(ErrorEvent(code=exc.code, message=str(exc)))
        raise
    except asyncio.CancelledError:
        if record.deleted:
            last.append(
                ErrorEvent(
                    code="conversation_deleted",
                    message="the conversation was deleted: its reply was stopped",
                )
            )
            raise
        reason = record.reason or "shutdown"  # unasked: the runtime is stopping
        kept = await _keep(writer, reason)
        last.append(MessageCompleted(message=kept))
        if reason == "shutdown" and kept.interrupted:
            last.append(
                ErrorEvent(
                    code="interrupted", message="the reply was interrupted: the server is stopping"
                )
            )
        if record.reason is None:  # cancelled from outside: the task ends cancelled
            raise
        return kept
    except Exception as exc:
        logger.exception("reply failed")
        await _keep_if_any(writer, last)
        last.append(
            ErrorEvent(code="internal_error", message=f"the reply failed: {type(exc).__name__}")
        )
        raise
    finally:
        last += [Typing(active=False), Status(state="idle")]


async def _keep_if_any(writer: ReplyWriter, last: list[Event]) -> None:
    """A failed reply keeps the text it produced, if any (``interrupted="error"``)."""
    if writer.progress.parts:
        last.append(MessageCompleted(message=await _keep(writer, "error")))


async def _keep(writer: ReplyWriter, reason: InterruptReason) -> Message:
    """Store what an interrupted reply produced (shielded: a second cancellation does not
    lose it); its ``message.completed`` is the caller's to publish."""
    return await asyncio.shield(_store_interrupted(writer, reason))


async def _store_interrupted(writer: ReplyWriter, reason: InterruptReason) -> Message:
    progress, conversation_id = writer.progress, writer.conversation.id
    if progress.finished and progress.last is not None:  # the stop came too late
        return progress.last
    for call in progress.open_calls:  # answered, so that the history stays well-formed
        result = await writer.memory.append_message(
            Message(
                role="tool",
                content=f"the tool call was not finished: the reply was {reason}",
                name=call.name,
                tool_call_id=call.id,
                conversation_id=conversation_id,
                metadata={"is_error": True},
                interrupted=reason,
            )
        )
        writer.publish(MessageCreated(message=result))
    progress.open_calls = []
    message = progress.message
    if message is None:  # stopped between messages: the reply still ends with one
        message = Message(role="assistant", conversation_id=conversation_id, model=writer.model_id)
        writer.publish(MessageCreated(message=msgspec.structs.replace(message)))
    message.content = "".join(progress.parts)
    message.tool_calls = None  # unfinished calls are not run: not offered as made
    message.interrupted = reason
    message.created_at = now()
    stored = await writer.memory.append_message(message)
    progress.stored(stored)
    logger.info(
        "reply %s after %d characters",
        reason,
        len(stored.content),
        extra={"interrupted": reason, "message_id": stored.id},
    )
    return stored
