"""The responses that carry server-sent event streams, counted while open.

:func:`sse_response` is Litestar's streaming response (a task listening for the client's
disconnect beside the one sending): for short streams that must stop the moment their client
leaves, such as a streamed completion.

:func:`event_stream_response` is for the long-lived, mostly idle event streams a process holds
by the tens of thousands: one coroutine per stream (the request's own), no task group, no
listener task, no timer, and nothing allocated while idle. The app's one
:class:`~hubbub_server.heartbeat.Heartbeat` writes each idle stream's heartbeat comment itself,
without waking the stream's task (:meth:`_EventStreamApp.tick`), and :class:`ClientWatch`
notices a client that leaves without a task of its own; the stream then ends at once, giving
back its place in the stream limits and its subscription.

Both step an ASGI call by hand, as a task steps a coroutine: a call that completes without
waiting is done there and then; one that would wait is either watched (``receive``) or dropped
(a heartbeat to a client that does not read, skipped).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Coroutine,
    Iterable,
)
from typing import Any, Protocol

from litestar import Request
from litestar.response import ServerSentEvent
from litestar.response.base import ASGIResponse
from litestar.response.sse import ServerSentEventMessage
from litestar.types import Message, Receive, Scope, Send

from hubbub_server.heartbeat import Heartbeat
from hubbub_server.metrics import Metrics
from hubbub_server.streams import StreamLimits, StreamSlot

__all__ = [
    "HEARTBEAT",
    "STALLED_TICKS",
    "TRANSPORT",
    "ClientWatch",
    "EventStream",
    "StreamControl",
    "event_stream_response",
    "sse_response",
]

TRANSPORT = "hubbub.transport"
"""The ``scope["extensions"]`` key under which the server's connection protocol puts the
connection's transport, which a stream closes when its client stops reading."""

STALLED_TICKS = 2
"""Heartbeat ticks a frame may stay unsent (the client reads nothing) before the stream's
connection is closed: between one and two ``[server] heartbeat_interval``."""

logger = logging.getLogger("hubbub.server.sse")

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

HEARTBEAT = ServerSentEventMessage(data=None, comment="heartbeat").encode()
"""The heartbeat comment, as sent."""

_START_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
)
_ASKS = 4  # messages ClientWatch reads at a time (a server may have the request's end ready)


async def _served(frames: AsyncIterator[Any], state: Any) -> AsyncIterator[Any]:
    metrics: Metrics = state.metrics
    metrics.streams.inc()
    try:
        async for frame in frames:
            yield frame
    finally:
        metrics.streams.dec()


def sse_response(frames: AsyncIterator[Any], state: Any) -> ServerSentEvent:
    """An ``text/event-stream`` response over ``frames`` for the app whose ``state`` is given,
    counted in ``hubbub_active_streams``; the frames stop as soon as the client leaves."""
    return ServerSentEvent(_served(frames, state), headers=HEADERS)


class StreamControl(Protocol):
    """How an event stream's response ends the frames it sends."""

    def end(self) -> None:
        """The server is draining: end after what is queued, with a final event."""

    def stop(self) -> None:
        """The client has gone: end now, quietly."""

    def tick(self) -> None:
        """Called at every heartbeat, before it is written (must not block): a stream may
        look at whether its credential still holds."""


class ClientWatch:
    """Notices when the client of a streamed response leaves, without a task of its own.

    The ASGI ``receive`` of a request whose body has been read answers ``http.disconnect`` once
    the client has gone. Rather than a task awaiting it for each stream, the call is stepped by
    hand (as a task would) up to the future it waits on; when that future completes, its
    callback steps the call on and reads the answer, and stops ``stream`` if it is the
    disconnect (else it watches again). A ``receive`` that waits on something else than a
    future cannot be watched: it is closed, and asked again at each :meth:`left`.
    """

    __slots__ = ("_asked", "_receive", "_stream", "_waiting", "gone")

    def __init__(self, receive: Receive, stream: StreamControl) -> None:
        self._receive = receive
        self._stream = stream
        self._asked: Coroutine[Any, Any, Any] | None = None
        self._waiting: asyncio.Future[Any] | None = None
        self.gone = False
        """Whether the client has gone."""

    def left(self) -> bool:
        """Whether the client has gone (reads what ``receive`` has ready, never waits)."""
        if self.gone:
            return True
        if self._asked is None:
            asked = self._receive()
            if isinstance(asked, Coroutine):
                self._step(asked)
        elif self._waiting is None or self._waiting.done():
            self._step(self._asked)
        return self.gone

    def close(self) -> None:
        """Drop the pending ``receive`` (the response has ended)."""
        asked, waiting = self._asked, self._waiting
        self._asked = self._waiting = None
        if waiting is not None:
            waiting.remove_done_callback(self._ready)
        if asked is not None:
            asked.close()

    def _step(self, asked: Coroutine[Any, Any, Any]) -> None:
        for _ in range(_ASKS):
            self._asked = self._waiting = None
            try:
                waiting = asked.send(None)
            except StopIteration as answered:
                message: Any = answered.value
                if message.get("type") == "http.disconnect":
                    self.gone = True
                    return
                again = self._receive()  # the request's (empty) body: ask again
                if not isinstance(again, Coroutine):  # pragma: no cover - every server here
                    return
                asked = again
                continue
            except (Exception, asyncio.CancelledError):
                logger.debug("receive() failed: the client is taken to have gone", exc_info=True)
                self.gone = True
                return
            if asyncio.isfuture(waiting):
                waiting._asyncio_future_blocking = False  # what a task does with what it awaits
                waiting.add_done_callback(self._ready)
                self._asked, self._waiting = asked, waiting
            else:  # cannot be watched: asked again at the next left()
                asked.close()
            return
        asked.close()  # answered _ASKS times without waiting: asked again at the next left()

    def _ready(self, _: object) -> None:
        if self.left():
            self._stream.stop()


def _step_once(call: Awaitable[Any]) -> bool:
    """Run ``call`` (an ASGI ``send``) if it completes without waiting; else drop it. Whether
    it was done."""
    if not isinstance(call, Coroutine):  # pragma: no cover - every server here
        return False
    try:
        call.send(None)
    except StopIteration:
        return True
    except Exception:
        logger.debug("a heartbeat could not be sent", exc_info=True)
        return False
    call.close()  # it would wait for the client to read: skip this heartbeat
    return False


class _EventStreamApp(ASGIResponse):
    """The ASGI side of :class:`EventStream`: sends the frames, one coroutine per stream, and
    takes the heartbeat's ticks (:meth:`tick`) and the drain (:meth:`end`)."""

    __slots__ = (
        "_busy",
        "_client",
        "_frames",
        "_headers",
        "_heartbeat",
        "_live",
        "_metrics",
        "_quiet",
        "_send",
        "_slot",
        "_stalled",
        "_stream",
        "_transport",
    )

    def __init__(  # the base's attributes are not used: nothing else is kept per stream
        self,
        frames: AsyncGenerator[ServerSentEventMessage, None],
        headers: list[tuple[bytes, bytes]],
        stream: StreamControl,
        heartbeat: Heartbeat | None,
        metrics: Metrics,
        slot: StreamSlot | None,
    ) -> None:
        self._frames = frames
        self._headers: list[tuple[bytes, bytes]] | None = headers
        self._stream = stream
        self._heartbeat = heartbeat
        self._metrics = metrics
        self._slot = slot
        self._send: Send | None = None
        self._client: ClientWatch | None = None
        self._live = False  # the headers are sent and the final chunk is not
        self._busy = False  # in a send() of its own
        self._quiet = True  # nothing sent since the last tick
        self._stalled = 0  # ticks in a row that found it in a send() of its own
        self._transport: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        frames, heartbeat = self._frames, self._heartbeat
        headers, self._headers = self._headers or [], None
        self._metrics.streams.inc()
        self._send = send
        self._transport = (scope.get("extensions") or {}).get(TRANSPORT)
        self._client = client = ClientWatch(receive, self._stream)
        if heartbeat is not None:
            heartbeat.watch(self)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            client.left()  # reads the request's end, then watches for the client leaving
            # No await between here and the frames' first step, which subscribes: a heartbeat
            # (what clients take as "the stream is live") never comes before the subscription.
            self._live = True
            async for frame in frames:
                self._busy = True
                self._quiet = False
                await send(_body(frame.encode()))
                self._busy = False
                if client.gone:
                    return
            self._live = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self._live = False
            client.close()
            try:
                await frames.aclose()
            finally:
                if heartbeat is not None:
                    heartbeat.unwatch(self)
                self._metrics.streams.dec()
                self._send = self._client = self._transport = None
                self._release()

    def tick(self) -> None:
        """The heartbeat: write the comment if nothing was sent since the last tick (without
        waking the stream's task: nothing is allocated per idle stream between ticks), after
        checking the client is still there."""
        self._stream.tick()
        client = self._client
        if client is not None and client.left():
            self._stream.stop()
            return
        if self._busy:  # a send() of its own has not finished: is the client still reading?
            self._stalled += 1
            if self._stalled >= STALLED_TICKS and self._transport is not None:
                logger.info("an event stream's client stopped reading; its connection is closed")
                self._transport.abort()  # the blocked send() returns; the stream ends
            return
        self._stalled = 0
        if not self._live or self._send is None:
            return
        if not self._quiet:
            self._quiet = True
            return
        _step_once(self._send(_body(HEARTBEAT)))

    def end(self) -> None:
        """The server is draining: the stream ends after what is queued."""
        self._stream.end()

    def _release(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()

    def __del__(self) -> None:  # never started: the stream's place is given back all the same
        self._release()


def _body(chunk: bytes) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


class EventStream(ServerSentEvent):
    """A ``text/event-stream`` response over ``frames`` (:class:`ServerSentEventMessage`
    objects), with heartbeats from ``heartbeat``, counted in ``hubbub_active_streams``, giving
    ``slot`` back when it ends. ``stream`` ends the frames: ``end()`` when the server drains,
    ``stop()`` when the client leaves."""

    def __init__(
        self,
        frames: AsyncGenerator[ServerSentEventMessage, None],
        *,
        stream: StreamControl,
        heartbeat: Heartbeat | None,
        metrics: Metrics,
        slot: StreamSlot | None = None,
    ) -> None:
        # Litestar's Stream without content (the ServerSentEvent wrapping of frames is skipped):
        # the ASGI response sends the frames.
        super(ServerSentEvent, self).__init__((), media_type="text/event-stream", headers=HEADERS)
        self.frames = frames
        """The frames to send."""
        self.stream = stream
        """What ends the frames."""
        self.heartbeat = heartbeat
        """The app's heartbeat (``None``: no heartbeats, and the stream ends on draining only
        if ``frames`` see to it)."""
        self.metrics = metrics
        """Where open streams are counted."""
        self.slot = slot
        """The stream's place in the stream limits (given back when the stream ends, or when
        a response that never started is collected)."""

    def to_asgi_response(
        self,
        app: Any,
        request: Request[Any, Any, Any],
        *,
        headers: dict[str, str] | None = None,
        **_: Any,
    ) -> ASGIResponse:
        """The ASGI response (headers set on the route, if any, are added; cookies are not
        supported on event streams)."""
        encoded = list(_START_HEADERS)
        encoded += _encoded(headers.items() if headers else ())
        slot, self.slot = self.slot, None  # the ASGI response gives it back from now on
        return _EventStreamApp(
            self.frames, encoded, self.stream, self.heartbeat, self.metrics, slot
        )

    def __del__(self) -> None:  # never sent: the stream's place is given back all the same
        if self.slot is not None:
            self.slot.release()


def _encoded(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def event_stream_response(
    frames: AsyncGenerator[ServerSentEventMessage, None],
    state: Any,
    *,
    owner: str,
    stream: StreamControl,
) -> EventStream:
    """An :class:`EventStream` over ``frames`` for the app whose ``state`` is given, with its
    heartbeat (``state.heartbeat``), held against the stream limits of ``owner``
    (:class:`~hubbub.errors.TooManyRequestsError` past them, before anything is sent)."""
    limits: StreamLimits | None = getattr(state, "streams", None)
    slot = limits.reserve(owner) if limits is not None else None
    return EventStream(
        frames,
        stream=stream,
        heartbeat=getattr(state, "heartbeat", None),
        metrics=state.metrics,
        slot=slot,
    )
