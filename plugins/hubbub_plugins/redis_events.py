"""Event log ``redis``: one Redis stream shared by every server process.

``[events] backend = "redis"`` with ``[redis] url``. Publishing appends to a local buffer and
returns; a writer task sends the buffer to the stream (``XADD``, pipelined, trimmed to
``[events] retention_events`` and, every few seconds, to ``retention_seconds``). Redis assigns
the ids, so they order events across processes. One reader task per process tails the stream
(``XREAD BLOCK``) and hands every event, this process's own included, to the bus: every process
sees the same order, and a client resumes on any of them (``XRANGE`` after its
``Last-Event-ID``).

When Redis is unreachable, or a write takes longer than ``[plugins.redis_events]
write_timeout`` (a Redis that hangs), events still reach this process's streams at once (with
ids made here, after the last one read from Redis); they wait in a bounded buffer (``[events]
publish_buffer``, the oldest dropped past it, counted and logged) and are written when Redis
is back, for the other processes. Every entry carries its process's sequence number, so a
process never delivers one of its events twice, and no process delivers an entry written twice
(a write that timed out but went through, then retried) more than once. Health says
``degraded`` with the reason meanwhile; the tasks reconnect by themselves.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from hubbub import hookimpl
from hubbub.events import Event, IdClock, decode_event, format_id, parse_id, select_after
from hubbub.models import Health
from hubbub.redis import shared_redis
from hubbub.resilience import RetryPolicy

if TYPE_CHECKING:
    import redis.asyncio

    from hubbub.registry import ComponentContext, Registrar
    from hubbub.services import Tasks

__all__ = ["RedisEventLog", "RedisEventsSettings"]

_encode = msgspec.json.Encoder().encode
_BATCH = 500
_ORIGINS = 10_000  # processes whose newest sequence number is remembered
_TRIM_EVERY = 5.0
_BACKOFF = RetryPolicy(attempts=1_000_000, base_delay=0.05, max_delay=2.0)


class RedisEventsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``redis_events`` plugin (``[plugins.redis_events]``)."""

    stream: str = "hubbub:events"
    """Key of the Redis stream: processes that share it share their events (give each
    deployment sharing one Redis database its own)."""
    write_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    """Seconds a write of events to Redis may take (more than 0, at most 60); past it, this
    process's streams get its events directly while Redis catches up (a hung Redis)."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisEventLog:
    """A :class:`hubbub.contracts.EventLog` on a Redis stream."""

    def __init__(
        self,
        connect: Callable[[], Any],
        tasks: Tasks,
        *,
        origin: str,
        stream: str = "hubbub:events",
        retention_events: int = 10_000,
        retention_seconds: float = 1800,
        buffer_size: int = 100_000,
        block_seconds: float = 1.0,
        write_timeout: float = 1.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self._connect = connect
        self._tasks = tasks
        self.origin = origin
        self.stream = stream
        self.retention_events = retention_events
        self.retention_seconds = retention_seconds
        self.buffer_size = buffer_size
        self.block_seconds = block_seconds
        self.write_timeout = write_timeout
        self.logger = logger or logging.getLogger("hubbub.plugins.redis_events")
        self.client: redis.asyncio.Redis | None = None
        self._deliver: Callable[[Event], object] | None = None
        # Events to write, with this process's sequence number; those of them (by number)
        # already delivered here; and the newest number read of every process, so that an
        # entry written twice is delivered once.
        self._outbox: collections.deque[tuple[Event, int]] = collections.deque()
        self._sequence = itertools.count()
        self._delivered_here: dict[int, None] = {}
        self._newest: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._clock = IdClock()
        self._position = "0-0"
        self._last_delivered: str | None = None
        self.write_error: str | None = None
        """Why the last write failed, while writes fail (``None`` when they work)."""
        self.read_error: str | None = None
        """Why the last read failed, while reads fail."""
        self.lost = 0
        """Events dropped from a full buffer while Redis was unreachable (other processes
        never got them)."""
        self.written = 0
        """Events written to the stream."""
        self.unwritable = 0
        """Events skipped because they cannot be encoded (a lone surrogate in a text, a tool
        result that is not JSON): logged, and never holding back the events behind them."""

    # -- the contract -------------------------------------------------------------------------

    def attach(self, deliver: Callable[[Event], object]) -> None:
        """Hand the stream's events to ``deliver`` (the bus)."""
        self._deliver = deliver

    def append(self, event: Event) -> None:
        """Buffer ``event`` for the writer; while Redis is unreachable, deliver it here at once
        too. Never blocks."""
        number = next(self._sequence)
        if self.write_error is not None:
            self._deliver_locally(event, number)
        if len(self._outbox) >= self.buffer_size:
            dropped, dropped_number = self._outbox.popleft()
            if dropped_number in self._delivered_here:  # never to be read back
                del self._delivered_here[dropped_number]
            else:  # it reached nobody yet: this process's streams get it at least
                self._hand_over(self._stamped_here(dropped))
            self.lost += 1
            if self.lost == 1 or self.lost % 1000 == 0:
                self.logger.warning(
                    "the event buffer is full (%d events) while Redis is unreachable: "
                    "%d events lost for the other processes",
                    self.buffer_size,
                    self.lost,
                    extra={"lost": self.lost},
                )
        self._outbox.append((event, number))
        self._wake.set()

    async def read_after(
        self,
        event_id: str,
        *,
        owner: str | None = None,
        conversation_id: str | None = None,
        limit: int = 10_000,
    ) -> list[Event] | None:
        """The stream's events after ``event_id`` (``XRANGE``), or ``None`` when the stream no
        longer has what followed it (or Redis cannot be asked)."""
        after = parse_id(event_id)
        if after is None or self.client is None:
            return None
        import redis.exceptions

        try:
            if not await self._still_has(after):
                return None
            found = await self._range_after(event_id, owner, conversation_id, limit)
            # Checked again after reading: trimming only removes the oldest entries, so if
            # nothing after ``after`` is gone now, nothing was gone while it was read.
            return found if await self._still_has(after) else None
        except (redis.exceptions.RedisError, OSError) as exc:
            self.logger.warning("cannot read events after %s from Redis: %s", event_id, exc)
            return None

    @property
    def last_id(self) -> str | None:
        """The id of the newest event this process knows of (read from the stream, or made
        here while Redis was away): resuming after it misses nothing that follows."""
        return self._last_delivered or self._position

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (a Redis that does not answer fails the start, naming the URL), find the
        stream's end, and start the writer and reader tasks."""
        self.client = await self._connect()
        info = await self._info()
        self._position = _text(info.get("last-generated-id", b"0-0")) if info else "0-0"
        pair = parse_id(self._position)
        if pair is not None:
            self._clock.observe(pair)
        self._tasks.start("writer", self._write_forever, restart=True)
        self._tasks.start("reader", self._read_forever, restart=True)

    async def health(self) -> Health:
        """``degraded`` while Redis cannot be written or read (local streams still work)."""
        problems = [p for p in (self.write_error, self.read_error) if p]
        detail = f"stream {self.stream}: {self.written} written"
        if self._outbox:
            detail += f", {len(self._outbox)} waiting"
        if self.lost:
            detail += f", {self.lost} lost"
        if self.unwritable:
            detail += f", {self.unwritable} not encodable"
        if problems:
            return Health(status="degraded", detail=f"Redis unreachable ({problems[0]}); {detail}")
        return Health(status="ok", detail=detail)

    async def aclose(self) -> None:
        """Write what is still buffered (for at most a second), then stop."""
        if self.client is not None and self._outbox and self.write_error is None:
            try:
                await asyncio.wait_for(self._flush(), timeout=1.0)
            except Exception as exc:
                self.logger.warning(
                    "%d events not written to Redis at stop: %s", len(self._outbox), exc
                )
        self.client = None

    # -- writing ------------------------------------------------------------------------------

    async def _write_forever(self) -> None:
        import redis.exceptions

        failures = 0
        next_trim = time.monotonic()
        while not self._tasks.closed:  # also when a cancellation was lost in the client
            if not self._outbox:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=_TRIM_EVERY)
            try:
                await self._flush()
                if time.monotonic() >= next_trim:
                    await self._trim()
                    next_trim = time.monotonic() + _TRIM_EVERY
            except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
                _raise_if_cancelled()
                failures += 1
                self._writes_failed(exc)
                await asyncio.sleep(_BACKOFF.delay_for(min(failures, 30)))
                continue
            if self.write_error is not None:
                self.logger.info("Redis is writable again; buffered events written")
                self.write_error = None
            failures = 0

    async def _flush(self) -> None:
        assert self.client is not None
        while self._outbox:
            taken = [self._outbox.popleft() for _ in range(min(_BATCH, len(self._outbox)))]
            batch = [(item, fields) for item in taken if (fields := self._encoded(*item))]
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for _item, fields in batch:
                        pipe.xadd(
                            self.stream, fields, maxlen=self.retention_events, approximate=True
                        )
                    await asyncio.wait_for(pipe.execute(), self.write_timeout)
            except BaseException:
                # Kept, in order, for the next try (without what cannot be encoded).
                self._outbox.extendleft(reversed([item for item, _fields in batch]))
                raise
            self.written += len(batch)

    def _encoded(self, event: Event, number: int) -> dict[Any, Any] | None:
        """The stream fields of ``event``; ``None`` (logged and counted) when it cannot be
        encoded, so that it never holds back the events behind it."""
        try:
            return _fields(event, number)
        except (msgspec.EncodeError, TypeError, ValueError) as exc:
            self.unwritable += 1
            self.logger.error(
                "event %s (conversation %s) cannot be encoded and is not written to Redis: %s",
                event.type,
                event.conversation_id,
                exc,
                extra={"conversation_id": event.conversation_id, "unwritable": self.unwritable},
            )
            return None

    def _writes_failed(self, exc: BaseException) -> None:
        if self.write_error is None:
            self.logger.warning(
                "cannot write events to Redis (%s): delivering them in this process only "
                "until it is back",
                exc,
            )
        self.write_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        # What waits has reached nobody yet: this process's streams get it now.
        for event, number in self._outbox:
            if number not in self._delivered_here:
                self._deliver_locally(event, number)

    async def _trim(self) -> None:
        # By Redis's clock (the newest id read), never this host's: a host ahead of Redis by
        # more than the retention would trim everything.
        assert self.client is not None
        newest = parse_id(self._position)
        if newest is None or newest == (0, 0):
            return
        horizon = newest[0] - int(self.retention_seconds * 1000)
        if horizon > 0:
            await self.client.xtrim(self.stream, minid=f"{horizon}-0", approximate=True)

    def _deliver_locally(self, event: Event, number: int) -> None:
        self._delivered_here[number] = None
        self._hand_over(self._stamped_here(event))

    def _stamped_here(self, event: Event) -> Event:
        pair = self._clock.next(event.ts or time.time())
        return msgspec.structs.replace(event, id=format_id(pair))

    def _hand_over(self, event: Event) -> None:
        self._last_delivered = event.id
        if self._deliver is not None:
            self._deliver(event)

    # -- reading ------------------------------------------------------------------------------

    async def _read_forever(self) -> None:
        import redis.exceptions

        failures = 0
        block = max(1, int(self.block_seconds * 1000))
        while not self._tasks.closed:  # also when a cancellation was lost in the client
            assert self.client is not None
            try:
                reply: Any = await self.client.xread(
                    {self.stream: self._position}, count=_BATCH, block=block
                )
            except (redis.exceptions.RedisError, OSError) as exc:
                _raise_if_cancelled()
                failures += 1
                if self.read_error is None:
                    self.logger.warning("cannot read events from Redis (%s); retrying", exc)
                self.read_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(_BACKOFF.delay_for(min(failures, 30)))
                continue
            if self.read_error is not None:
                self.logger.info("reading events from Redis again after %s", self._position)
                self.read_error = None
            failures = 0
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    self._receive(_text(entry_id), fields)

    def _receive(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        self._position = entry_id
        pair = parse_id(entry_id)
        if pair is not None:
            self._clock.observe(pair)
        if not self._first_time(fields):
            return  # written twice, or delivered here while Redis was away
        try:
            event = decode_event(fields[b"e"])
        except (KeyError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.logger.warning("skipping event %s of an unknown form: %s", entry_id, exc)
            return
        self._hand_over(msgspec.structs.replace(event, id=entry_id))

    def _first_time(self, fields: dict[bytes, bytes]) -> bool:
        """Whether the entry with ``fields`` is one this process has not delivered yet."""
        origin, number = _text(fields.get(b"o", b"")), _number(fields)
        if number is None:
            return True  # written by something else than this log: nothing to go by
        if number <= self._newest.get(origin, -1):
            return False  # a process writes its events in order: this one came before
        self._newest[origin] = number
        if len(self._newest) > _ORIGINS:
            del self._newest[next(iter(self._newest))]  # the longest-known process
        if origin == self.origin and number in self._delivered_here:
            del self._delivered_here[number]
            return False
        return True

    async def _info(self) -> dict[str, Any] | None:
        import redis.exceptions

        assert self.client is not None
        try:
            info: dict[Any, Any] = await self.client.xinfo_stream(self.stream)
        except redis.exceptions.ResponseError:
            return None  # no stream yet
        return {_text(k): v for k, v in info.items()}

    async def _still_has(self, after: tuple[int, int]) -> bool:
        """Whether every event after ``after`` is still in the stream."""
        info = await self._info()
        newest = parse_id(_text(info["last-generated-id"])) if info else (0, 0)
        if newest is None or after > newest:
            return False  # an id this stream never gave (another deployment, a flushed Redis)
        if info is None or info["length"] == 0:
            return after == newest  # everything after it is gone, if anything came
        first = info["first-entry"]
        oldest = parse_id(_text(first[0])) if first else None
        return oldest is not None and after >= oldest

    async def _range_after(
        self, event_id: str, owner: str | None, conversation_id: str | None, limit: int
    ) -> list[Event]:
        assert self.client is not None
        found: list[Event] = []
        newest: dict[bytes, int] = {}  # per process: an entry written twice is replayed once
        start = f"({event_id}"
        while len(found) < limit:
            entries: Any = await self.client.xrange(self.stream, min=start, max="+", count=_BATCH)
            for entry_id, fields in entries:
                if owner is not None and fields.get(b"w") != owner.encode():
                    continue
                origin, number = fields.get(b"o", b""), _number(fields)
                if number is not None:
                    if number <= newest.get(origin, -1):
                        continue
                    newest[origin] = number
                conversation = fields.get(b"c")
                if conversation_id is not None and conversation not in (
                    None,
                    conversation_id.encode(),
                ):
                    continue
                try:
                    event = decode_event(fields[b"e"])
                except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
                    continue
                found.append(msgspec.structs.replace(event, id=_text(entry_id)))
            if len(entries) < _BATCH:
                break
            start = f"({_text(entries[-1][0])}"
        return select_after(found, owner, conversation_id, limit)


def _raise_if_cancelled() -> None:
    """redis-py may turn a cancellation into a connection error: stop anyway."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _number(fields: dict[bytes, bytes]) -> int | None:
    value = fields.get(b"n")
    return int(value) if value is not None and value.isdigit() else None


def _fields(event: Event, number: int) -> dict[Any, Any]:
    fields: dict[Any, Any] = {"e": _encode(event), "o": event.origin, "n": number}
    if event.owner is not None:
        fields["w"] = event.owner
    if event.conversation_id is not None:
        fields["c"] = event.conversation_id
    return fields


@hookimpl
def register_event_logs(register: Registrar) -> None:
    def build(context: ComponentContext[RedisEventsSettings]) -> RedisEventLog:
        config = context.config
        events = config.events
        settings = context.settings

        async def connect() -> Any:
            client = await shared_redis(context.resources, config, needed_by="events.backend")
            try:
                await client.ping()
            except Exception as exc:
                from hubbub.redis import redacted_url, redis_url

                url = redacted_url(redis_url(config, "events.backend"))
                raise ConnectionError(f"Redis at {url} does not answer: {exc}") from exc
            return client

        return RedisEventLog(
            connect,
            context.tasks,
            origin=context.events.origin,
            stream=settings.stream,
            retention_events=events.retention_events,
            retention_seconds=events.retention_seconds,
            buffer_size=events.publish_buffer,
            block_seconds=min(1.0, config.redis.timeout / 2),
            write_timeout=min(settings.write_timeout, config.redis.timeout),
            logger=context.logger,
        )

    register(
        "redis",
        build,
        settings=RedisEventsSettings,
        description="events shared by every process through a Redis stream",
    )
