"""Events: the typed events hubbub publishes (:mod:`hubbub.events.types`), the bus that delivers
them (:mod:`hubbub.events.bus`), their ids (:mod:`hubbub.events.ids`), the in-process event log
(:mod:`hubbub.events.memory`); :mod:`hubbub.events.sinks` runs event sinks."""

from __future__ import annotations

from hubbub.events.bus import EventBus, Predicate, Subscription
from hubbub.events.ids import IdClock, format_id, parse_id
from hubbub.events.memory import MemoryEventLog, select_after
from hubbub.events.types import (
    AnyEvent,
    CancelRequested,
    ConversationUpdated,
    ErrorEvent,
    Event,
    MessageCompleted,
    MessageCreated,
    MessageDelta,
    Reset,
    SessionRevoked,
    Shutdown,
    Status,
    ToolFinished,
    ToolStarted,
    Typing,
    UsageRecorded,
    decode_event,
)

__all__ = [
    "AnyEvent",
    "CancelRequested",
    "ConversationUpdated",
    "ErrorEvent",
    "Event",
    "EventBus",
    "IdClock",
    "MemoryEventLog",
    "MessageCompleted",
    "MessageCreated",
    "MessageDelta",
    "Predicate",
    "Reset",
    "SessionRevoked",
    "Shutdown",
    "Status",
    "Subscription",
    "ToolFinished",
    "ToolStarted",
    "Typing",
    "UsageRecorded",
    "decode_event",
    "format_id",
    "parse_id",
    "select_after",
]
