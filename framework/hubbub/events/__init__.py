"""Events: the typed events hubbub publishes (:mod:`hubbub.events.types`) and the in-process bus
that delivers them (:mod:`hubbub.events.bus`); :mod:`hubbub.events.sinks` runs event sinks."""

from __future__ import annotations

from hubbub.events.bus import EventBus, Predicate, Subscription
from hubbub.events.types import (
    AnyEvent,
    ConversationUpdated,
    ErrorEvent,
    Event,
    MessageCompleted,
    MessageCreated,
    MessageDelta,
    SessionRevoked,
    Status,
    ToolFinished,
    ToolStarted,
    Typing,
    UsageRecorded,
    decode_event,
)

__all__ = [
    "AnyEvent",
    "ConversationUpdated",
    "ErrorEvent",
    "Event",
    "EventBus",
    "MessageCompleted",
    "MessageCreated",
    "MessageDelta",
    "Predicate",
    "SessionRevoked",
    "Status",
    "Subscription",
    "ToolFinished",
    "ToolStarted",
    "Typing",
    "UsageRecorded",
    "decode_event",
]
