"""Which stored messages a model is shown: the filters shared by the context builder and the
summarizer."""

from __future__ import annotations

from collections.abc import Sequence

from hubbub.models import Message, Summary

__all__ = ["after_summary", "drop_orphans", "nothing_said"]


def nothing_said(message: Message) -> bool:
    """An interrupted reply that produced nothing: kept in the conversation, not shown to
    models (some refuse empty assistant messages)."""
    return (
        message.role == "assistant"
        and message.interrupted is not None
        and not message.content
        and not message.tool_calls
    )


def after_summary(messages: Sequence[Message], summary: Summary | None) -> list[Message]:
    """The messages a summary does not cover (all of them when it covers none shown)."""
    if summary is not None:
        for index, message in enumerate(messages):
            if message.id == summary.through_message_id:
                return list(messages[index + 1 :])
    return list(messages)


def drop_orphans(messages: list[Message]) -> list[Message]:
    """``messages`` without the tool results at their start whose call is not among them
    (models refuse a tool result that answers no call)."""
    start = 0
    while start < len(messages) and messages[start].role == "tool":
        start += 1
    return messages[start:]
