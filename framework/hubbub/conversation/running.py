"""What the engine knows about a reply running in this process: the task writing it, its lease,
why it is being stopped, and what it has produced that is not stored yet (so that an interrupted
reply keeps its partial text)."""

from __future__ import annotations

import asyncio
from typing import Any, Final, Literal

from hubbub.conversation.lease import Lease
from hubbub.models import Message, ToolCall, new_id

__all__ = ["INTERRUPT_REASONS", "InterruptReason", "Progress", "RunningReply", "interrupt_reason"]

InterruptReason = Literal["cancelled", "shutdown", "disconnected", "error"]
"""Why a reply stopped before its end (:attr:`hubbub.models.Message.interrupted`)."""

INTERRUPT_REASONS: Final = ("cancelled", "shutdown", "disconnected", "error")
"""Every :data:`InterruptReason`."""


def interrupt_reason(reason: str) -> InterruptReason:
    """``reason`` if it is an :data:`InterruptReason`, else ``cancelled`` (a cancel request
    from a newer version, say)."""
    for known in INTERRUPT_REASONS:
        if reason == known:
            return known
    return "cancelled"


class RunningReply:
    """A reply being written to one conversation by this process (or the conversation being
    deleted)."""

    __slots__ = (
        "conversation_id",
        "deleted",
        "done",
        "id",
        "lease",
        "owner",
        "reason",
        "released",
        "task",
    )

    def __init__(self, conversation_id: str, owner: str) -> None:
        self.conversation_id = conversation_id
        """The conversation replied to."""
        self.owner = owner
        """Who the conversation belongs to."""
        self.id = new_id("reply_")
        """The reply's id, under which it holds the conversation's lease: a cancel request
        naming another reply leaves this one alone."""
        self.task: asyncio.Task[Any] | None = None
        """The task writing the reply, once it has started."""
        self.lease: Lease | None = None
        """The reply lease this process holds for the conversation."""
        self.deleted = False
        """The conversation is being deleted: the reply stops, and no new one starts."""
        self.reason: InterruptReason | None = None
        """Why the reply is being stopped early, once someone asked."""
        self.released = False
        """The lease has been (or is being) given back."""
        self.done = asyncio.Event()
        """Set when the reply has ended (or never started) and the conversation is free."""

    def stop(self, reason: InterruptReason) -> None:
        """Stop the reply: it keeps what it produced, marked ``reason`` (the first reason
        given wins). A reply that has not started stops as it starts."""
        if self.reason is None and not self.deleted:
            self.reason = reason
            self._cancel()

    def stop_for_deletion(self) -> None:
        """Mark the conversation deleted and cancel the reply's task (not the caller's own)."""
        self.deleted = True
        self._cancel()

    def _cancel(self) -> None:
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()


class Progress:
    """What a reply has produced and not stored yet."""

    __slots__ = ("last", "message", "open_calls", "parts")

    def __init__(self) -> None:
        self.message: Message | None = None
        """The assistant message being streamed (announced with ``message.created``, not
        stored yet)."""
        self.parts: list[str] = []
        """Its text so far."""
        self.open_calls: list[ToolCall] = []
        """Tool calls of a stored assistant message that have no stored result yet."""
        self.last: Message | None = None
        """The last assistant message stored."""

    @property
    def finished(self) -> bool:
        """Whether the reply's last message is stored whole (a stop came too late)."""
        return (
            self.message is None
            and not self.open_calls
            and self.last is not None
            and not self.last.tool_calls
        )

    def streaming(self, message: Message) -> list[str]:
        """Start a new assistant message; return the list its text pieces go into."""
        self.message, self.parts = message, []
        return self.parts

    def stored(self, message: Message) -> None:
        """The streamed message is stored: its tool calls are open until their results are."""
        self.message, self.parts, self.last = None, [], message
        self.open_calls = list(message.tool_calls or ())

    def answered(self, call: ToolCall) -> None:
        """``call``'s result is stored."""
        self.open_calls = [c for c in self.open_calls if c.id != call.id]
