"""Server-sent events: ``GET /api/events`` (everything the caller may see) and the
per-conversation stream.

Each frame has ``id:`` (the event id), ``event:`` (its type) and ``data:`` (its JSON); a comment
heartbeat keeps idle connections open. Streams end when the server drains for shutdown.
A client that reconnects with ``Last-Event-ID`` first gets the events it missed (from the last
``[events] history_size`` events of this process), or an ``error`` event with code
``resume_unavailable`` when they are gone (stamped like every event: its ``id`` is the newest
event this process remembers, so resuming from it misses nothing). Resuming on another process
arrives with the Redis event fan-out. A conversation's stream ends after the
``conversation.updated`` event that says the conversation was deleted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import QueryParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from hubbub.events import ConversationUpdated, ErrorEvent, Event, EventBus, Subscription
from hubbub.models import Principal
from hubbub.runtime import Runtime
from hubbub_server.problems import PROBLEM_RESPONSES
from hubbub_server.security import Caller, RuntimeDep
from hubbub_server.sse import sse_response

__all__ = [
    "EventsController",
    "LastEventId",
    "event_stream",
]

_encode = msgspec.json.Encoder().encode


def _frame(event: Event) -> ServerSentEventMessage:
    return ServerSentEventMessage(id=event.id, event=event.type, data=_encode(event).decode())


async def _close_on(drain: asyncio.Event, subscription: Subscription) -> None:
    await drain.wait()
    subscription.close()  # ends the stream once what is queued has been sent


def _resume_unavailable(
    bus: EventBus, last_event_id: str, principal: Principal, conversation_id: str | None
) -> ErrorEvent:
    """The ``error`` event that starts a stream whose ``Last-Event-ID`` is forgotten, stamped
    as the bus stamps events, for this stream's reader alone (it is not published)."""
    now = time.time()
    return ErrorEvent(
        code="resume_unavailable",
        message=f"events after {last_event_id} are no longer available; reload the conversation",
        id=bus.last_id or f"{int(now * 1000)}-0",
        ts=now,
        conversation_id=conversation_id,
        owner=principal.id,
        origin=bus.origin,
    )


def _slow_consumer(
    bus: EventBus, sent: str | None, principal: Principal, conversation_id: str | None
) -> ErrorEvent:
    """The last event of a stream whose reader fell a whole queue behind: its ``id`` is the
    last event sent, so reconnecting with it as ``Last-Event-ID`` replays what followed."""
    now = time.time()
    return ErrorEvent(
        code="slow_consumer",
        message="this stream fell too far behind and was closed; reconnect with the "
        "Last-Event-ID it carries to receive what followed",
        id=sent or bus.last_id or f"{int(now * 1000)}-0",
        ts=now,
        conversation_id=conversation_id,
        owner=principal.id,
        origin=bus.origin,
    )


def _ends(event: Event, conversation_id: str | None) -> bool:
    """Whether ``event`` is the last of the stream of ``conversation_id``: its deletion."""
    return (
        conversation_id is not None
        and isinstance(event, ConversationUpdated)
        and event.change == "deleted"
        and event.conversation_id == conversation_id
    )


async def _frames(
    bus: EventBus,
    visible: Callable[[Event], bool],
    drain: asyncio.Event,
    last_event_id: str | None,
    heartbeat: float,
    principal: Principal,
    conversation_id: str | None,
) -> AsyncIterator[ServerSentEventMessage]:
    # Subscribed here, when the response starts: a response never sent holds no subscription.
    # Indexed by owner (and conversation): other users' events never reach this stream's code.
    # A reader that falls a whole queue behind is ended with a resumable slow_consumer event.
    subscribed = bus.subscribe(
        owner=principal.id, conversation_id=conversation_id, overflow="close"
    )
    sent: str | None = last_event_id
    with subscribed as subscription:
        watcher = asyncio.ensure_future(_close_on(drain, subscription))  # one task per stream
        try:
            replayed: set[str] = set()
            if last_event_id:  # subscribed first, so nothing falls between replay and live
                missed = bus.since(last_event_id, visible)
                if missed is None:
                    yield _frame(
                        _resume_unavailable(bus, last_event_id, principal, conversation_id)
                    )
                for old in missed or ():
                    replayed.add(old.id)
                    sent = old.id
                    yield _frame(old)
                    if _ends(old, conversation_id):
                        return
            while True:
                try:
                    async with asyncio.timeout(heartbeat):
                        live = await subscription.get()
                except TimeoutError:
                    yield ServerSentEventMessage(data=None, comment="heartbeat")
                    continue
                if live is None:
                    if subscription.overflowed:
                        yield _frame(_slow_consumer(bus, sent, principal, conversation_id))
                    return
                if replayed and live.id in replayed:
                    continue
                replayed.clear()  # live events are past the replayed ones now
                sent = live.id
                yield _frame(live)
                if _ends(live, conversation_id):
                    return
        finally:
            watcher.cancel()


LastEventId = Annotated[
    str | None,
    QueryParameter(
        name="last_event_id",
        required=False,
        max_length=200,
        description="Resume after this event id, for clients that cannot send the "
        "Last-Event-ID header (the header wins when both are sent).",
    ),
]
"""The ``last_event_id`` query parameter of the event streams."""


def event_stream(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    principal: Principal,
    conversation_id: str | None = None,
    last_event_id: str | None = None,
) -> ServerSentEvent:
    """An SSE response of the events ``principal`` may see (of one conversation, if given),
    resuming after ``Last-Event-ID`` (the header) or ``last_event_id`` (the query)."""

    def visible(event: Event) -> bool:
        return event.owner == principal.id and (
            conversation_id is None or event.conversation_id == conversation_id
        )

    state = request.app.state
    last_event_id = request.headers.get("last-event-id") or last_event_id
    frames = _frames(
        runtime.events,
        visible,
        state.drain,
        last_event_id,
        runtime.config.server.heartbeat_interval,
        principal,
        conversation_id,
    )
    return sse_response(frames, state, owner=principal.id)


class EventsController(Controller):
    path = "/api/events"
    tags = ["events"]

    @get("/", summary="Server-sent events of everything you may see", responses=PROBLEM_RESPONSES)
    async def events(
        self,
        request: Request[Any, Any, Any],
        runtime: RuntimeDep,
        principal: Caller,
        last_event_id: LastEventId = None,
    ) -> ServerSentEvent:
        return event_stream(request, runtime, principal, last_event_id=last_event_id)
