"""Server-sent events: ``GET /api/events`` (everything the caller may see) and the
per-conversation stream.

Each frame has ``id:`` (the event id), ``event:`` (its type) and ``data:`` (its JSON); a comment
heartbeat keeps idle connections open (the app's one :class:`~hubbub_server.heartbeat.Heartbeat`
writes it: no timer or watcher task per stream, see :mod:`hubbub_server.sse`). A client
that reconnects with ``Last-Event-ID`` (or ``?last_event_id=``) first gets the events it missed,
read from the event log (with the Redis log, on any process), or a ``reset`` event when the log
no longer has them (its ``id`` is the newest event, so resuming from it misses nothing after
it). A stream ends with a final event: ``conversation.updated`` (its conversation was deleted),
``session.revoked`` (the credential it was opened with was revoked), ``shutdown`` (the process
is stopping: reconnect with its id) or an ``error`` with code ``slow_consumer`` (the client fell
too far behind: reconnect with its id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import QueryParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage

from hubbub.auth import Authenticator
from hubbub.errors import InvalidRequestError
from hubbub.events import (
    ConversationUpdated,
    ErrorEvent,
    Event,
    EventBus,
    Reset,
    SessionRevoked,
    Shutdown,
    Subscription,
    parse_id,
)
from hubbub.models import Principal
from hubbub.runtime import Runtime
from hubbub_server.problems import PROBLEM_RESPONSES
from hubbub_server.security import Caller, RuntimeDep
from hubbub_server.sse import event_stream_response

logger = logging.getLogger("hubbub.server.events")

__all__ = [
    "EventsController",
    "LastEventId",
    "event_stream",
]

_encode = msgspec.json.Encoder().encode


def _frame(event: Event) -> ServerSentEventMessage:
    return ServerSentEventMessage(id=event.id, event=event.type, data=_encode(event).decode())


class _Stream:
    """One client's stream: who it is for, what it has sent, and its final events (stamped as
    the bus stamps events, for this stream's reader alone: they are not published). Its
    response ends it when the server drains (:meth:`end`) or the client leaves (:meth:`stop`)."""

    __slots__ = (
        "_authenticator",
        "_checking",
        "_credentials",
        "bus",
        "conversation_id",
        "ended",
        "principal",
        "sent",
        "subscription",
    )

    def __init__(
        self,
        bus: EventBus,
        principal: Principal,
        conversation_id: str | None,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.bus = bus
        self.principal = principal
        self.conversation_id = conversation_id
        self.sent: str | None = None
        self.subscription: Subscription | None = None
        self.ended = False
        self._credentials = tuple({principal.credential_id, principal.session_id} - {None})
        self._authenticator = authenticator if self._credentials else None
        self._checking: asyncio.Task[bool] | None = None

    def tick(self) -> None:
        """At every heartbeat, a stream opened with a credential that can end (a login
        session, an API key) looks (in the background) whether it still holds: one that ended
        without a revocation event (it expired, the event was lost, or it was revoked from a
        process that shares no event log) ends its streams all the same."""
        if self._authenticator is None or (
            self._checking is not None and not self._checking.done()
        ):
            return
        self._checking = asyncio.get_running_loop().create_task(self.check())

    async def check(self) -> bool:
        """Whether the stream's credential still holds; when it does not, publish its
        revocation (every stream it opened, on every process, ends with it)."""
        authenticator = self._authenticator
        if authenticator is None:
            return True
        try:
            if await authenticator.still_valid(self.principal):
                return True
        except Exception as exc:  # the store failed: look again at the next heartbeat
            logger.warning("cannot check the credential of an event stream: %s", exc)
            return True
        ended = self.principal.session_id or self.principal.credential_id
        if ended is not None:
            self.bus.publish(
                SessionRevoked(session_id=ended, principal_id=self.principal.id),
                owner=self.principal.id,
            )
        return False

    def end(self) -> None:
        """End the stream after what is queued, with a final ``shutdown`` event."""
        self.ended = True
        if self.subscription is not None:
            self.subscription.close()

    def stop(self) -> None:
        """End the stream now (its client has gone): nothing more is read."""
        if self.subscription is not None:
            self.subscription.close()

    def _stamped(self, event: Event, event_id: str | None) -> Event:
        return msgspec.structs.replace(
            event,
            id=event_id or self.bus.last_id or "0-0",
            ts=time.time(),
            conversation_id=self.conversation_id,
            owner=self.principal.id,
            origin=self.bus.origin,
        )

    def reset(self, last_event_id: str) -> Event:
        """The first event of a stream resumed after an id the log no longer has."""
        return self._stamped(
            Reset(
                reason=f"events after {last_event_id} are no longer available; reload what "
                "you show and carry on from this event",
                last_event_id=last_event_id,
            ),
            None,
        )

    def slow_consumer(self) -> Event:
        """The last event of a stream whose reader fell a whole queue behind: its ``id`` is the
        last event sent, so reconnecting with it as ``Last-Event-ID`` replays what followed."""
        return self._stamped(
            ErrorEvent(
                code="slow_consumer",
                message="this stream fell too far behind and was closed; reconnect with the "
                "Last-Event-ID it carries to receive what followed",
            ),
            self.sent,
        )

    def shutdown(self) -> Event:
        """The last event of a stream of a stopping process: resume from it elsewhere."""
        return self._stamped(Shutdown(retry_after=1.0), self.sent)

    def shows(self, event: Event) -> bool:
        """Whether the stream sends ``event``: a conversation's stream sends that conversation's
        events, and of the owner's other events only the revocation of its own credential."""
        if self.conversation_id is None or event.conversation_id == self.conversation_id:
            return True
        return event.conversation_id is None and self.ends_with(event)

    def ends_with(self, event: Event) -> bool:
        """Whether ``event`` is the stream's last: its conversation deleted, or its credential
        revoked."""
        if isinstance(event, SessionRevoked):
            return event.session_id in self._credentials
        return (
            self.conversation_id is not None
            and isinstance(event, ConversationUpdated)
            and event.change == "deleted"
            and event.conversation_id == self.conversation_id
        )


CatchUp = Callable[[], Awaitable[str | None]]
"""Where a stream opened without ``Last-Event-ID`` replays from: an id just before the reply in
progress began, or ``None``."""


async def _frames(
    stream: _Stream,
    drain: asyncio.Event,
    last_event_id: str | None,
    catch_up: CatchUp | None = None,
) -> AsyncGenerator[ServerSentEventMessage, None]:
    # Subscribed here, when the response starts: a response never sent holds no subscription.
    # Indexed by owner (and conversation): other users' events never reach this stream's code.
    # A reader that falls a whole queue behind is ended with a resumable slow_consumer event.
    # Idle, the stream waits on its subscription alone (its heartbeats are written without it).
    bus = stream.bus
    subscribed = bus.subscribe(
        owner=stream.principal.id, conversation_id=stream.conversation_id, overflow="close"
    )
    stream.sent = last_event_id
    with subscribed as subscription:
        stream.subscription = subscription
        if stream.ended or drain.is_set():
            subscription.close()  # draining already: replay, then the final shutdown event
        # The session was checked before the subscription: revoked in between, its event
        # may have gone by. Looked at once more now (its revocation arrives then).
        await stream.check()
        try:
            replayed = None
            # Subscribed first, so nothing falls between replay and live. Without a
            # Last-Event-ID, a stream that joins a reply in progress catches up from its start
            # (when the log no longer has it, the stream just goes on live).
            after = last_event_id or (await catch_up() if catch_up is not None else None)
            if after:
                missed = await bus.read_after(
                    after, owner=stream.principal.id, conversation_id=stream.conversation_id
                )
                if missed is None and last_event_id:
                    yield _frame(stream.reset(last_event_id))
                if missed is not None:  # live events up to here are in the log: not twice
                    replayed = parse_id(after)
                for old in missed or ():
                    if not stream.shows(old):
                        continue
                    stream.sent, replayed = old.id, parse_id(old.id)
                    yield _frame(old)
                    if stream.ends_with(old):
                        return
            while True:
                live = await subscription.get()
                if live is None:
                    if subscription.overflowed:
                        yield _frame(stream.slow_consumer())
                    elif stream.ended or drain.is_set():
                        yield _frame(stream.shutdown())
                    return
                if not stream.shows(live):
                    continue
                if replayed is not None:
                    pair = parse_id(live.id)
                    if pair is not None and pair <= replayed:
                        continue  # already sent from the log
                    replayed = None  # live events are past the replayed ones now
                stream.sent = live.id
                yield _frame(live)
                if stream.ends_with(live):
                    return
        finally:
            stream.subscription = None


MAX_EVENT_ID = 200
"""The longest ``Last-Event-ID`` (header or query) accepted; longer ones get 422."""

LastEventId = Annotated[
    str | None,
    QueryParameter(
        name="last_event_id",
        required=False,
        max_length=MAX_EVENT_ID,
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
    *,
    catch_up: CatchUp | None = None,
) -> ServerSentEvent:
    """An SSE response of the events ``principal`` may see (of one conversation, if given),
    resuming after ``Last-Event-ID`` (the header) or ``last_event_id`` (the query), or, without
    either, after what ``catch_up()`` says (just before a reply in progress began)."""
    state = request.app.state
    header = _header(request, b"last-event-id")
    if header is not None and len(header) > MAX_EVENT_ID:
        raise InvalidRequestError(
            f"Last-Event-ID is longer than {MAX_EVENT_ID} characters", field="Last-Event-ID"
        )
    last_event_id = header or last_event_id
    stream = _Stream(runtime.events, principal, conversation_id, runtime.auth)
    frames = _frames(stream, state.drain, last_event_id, catch_up)
    return event_stream_response(frames, state, owner=principal.id, stream=stream)


def _header(request: Request[Any, Any, Any], name: bytes) -> str | None:
    # Read from the raw headers: request.headers would build (and keep, for as long as the
    # stream is open) a parsed copy of them all.
    for key, value in request.scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


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
