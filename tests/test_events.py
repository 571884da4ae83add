"""The event bus: filtered delivery, bounded queues that drop the oldest, disconnection, and
events that survive a JSON round trip."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from hubbub.events import (
    AnyEvent,
    CancelRequested,
    ConversationUpdated,
    ErrorEvent,
    Event,
    EventBus,
    IdClock,
    MemoryEventLog,
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
    format_id,
    parse_id,
)
from hubbub.models import Conversation, Message, ToolCall, ToolResult, Usage


async def received(subscription: object) -> list[Event]:
    subscription.close()  # type: ignore[attr-defined]
    return [event async for event in subscription]  # type: ignore[attr-defined]


async def test_subscribers_receive_what_their_filter_accepts() -> None:
    bus = EventBus()
    everything = bus.subscribe()
    only_c1 = bus.subscribe(lambda e: e.conversation_id == "c1")
    only_typing = bus.subscribe(lambda e: isinstance(e, Typing))
    events = [
        Typing(active=True, conversation_id="c1"),
        Status(state="thinking", conversation_id="c2"),
        MessageDelta(message_id="m", delta="hi", conversation_id="c1"),
    ]
    published = [bus.publish(event) for event in events]
    # Events are frozen: the bus stamps a copy and leaves what it was given alone.
    assert [event.id for event in events] == ["", "", ""]
    # The log gives increasing ids, ordered as (milliseconds, sequence) pairs.
    pairs = [parse_id(event.id) for event in published]
    assert None not in pairs
    assert pairs == sorted(set(pairs))
    events = published
    assert await received(everything) == events
    assert await received(only_c1) == [events[0], events[2]]
    assert await received(only_typing) == [events[0]]
    assert bus.published == 3


async def test_publish_stamps_ordered_ids_and_times() -> None:
    bus = EventBus()
    before = time.time()
    stamped = [bus.publish(Status(state=str(n))) for n in range(5)]
    pairs = [parse_id(event.id) for event in stamped]
    assert pairs == sorted(set(pairs))  # type: ignore[type-var]
    assert all(before <= event.ts <= time.time() for event in stamped)
    assert all(int(event.id.split("-")[0]) >= int(before * 1000) for event in stamped)


async def test_waiting_reader_is_woken_by_publish() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    reader = asyncio.ensure_future(subscription.get())
    await asyncio.sleep(0)
    assert not reader.done()
    bus.publish(Status(state="go"))
    event = await asyncio.wait_for(reader, 1)
    assert isinstance(event, Status)
    assert event.state == "go"


async def test_slow_subscriber_drops_the_oldest_without_blocking_the_publisher() -> None:
    bus = EventBus(queue_size=100)
    slow = bus.subscribe(maxsize=3)
    fast = bus.subscribe()
    began = time.perf_counter()
    for n in range(50):
        bus.publish(Status(state=str(n)))
    assert time.perf_counter() - began < 1.0
    assert slow.dropped == 47
    kept = [await slow.get() for _ in range(3)]
    assert [e.state for e in kept] == ["47", "48", "49"]  # type: ignore[union-attr]
    assert fast.dropped == 0
    assert len(await received(fast)) == 50
    health = await bus.health()
    assert health.status == "ok"


async def test_bus_queue_size_is_the_default_bound() -> None:
    bus = EventBus(queue_size=2)
    subscription = bus.subscribe()
    for n in range(5):
        bus.publish(Status(state=str(n)))
    assert subscription.dropped == 3
    assert "3 dropped by slow subscribers" in (await bus.health()).detail


async def test_closing_disconnects() -> None:
    bus = EventBus()
    first = bus.subscribe()
    with bus.subscribe() as second:
        assert bus.subscriber_count == 2
    assert bus.subscriber_count == 1
    assert second.closed
    bus.publish(Status(state="after"))
    assert await received(second) == []
    first.close()
    first.close()  # twice is fine
    assert bus.subscriber_count == 0
    assert [e.state for e in await received(first)] == ["after"]  # type: ignore[attr-defined]
    assert await first.get() is None


async def test_close_keeps_every_queued_event() -> None:
    bus = EventBus()
    subscription = bus.subscribe(maxsize=3)
    for n in range(3):
        bus.publish(Status(state=str(n)))
    assert [e.state for e in await received(subscription)] == ["0", "1", "2"]  # type: ignore[attr-defined]


async def test_close_ends_a_waiting_iteration() -> None:
    bus = EventBus()
    subscription = bus.subscribe()

    async def read_all() -> list[Event]:
        return [event async for event in subscription]

    reader = asyncio.ensure_future(read_all())
    bus.publish(Status(state="one"))
    await asyncio.sleep(0.01)
    subscription.close()
    events = await asyncio.wait_for(reader, 1)
    assert [e.state for e in events] == ["one"]  # type: ignore[attr-defined]


async def test_bus_aclose_closes_every_subscription() -> None:
    bus = EventBus()
    subscriptions = [bus.subscribe() for _ in range(3)]
    await bus.aclose()
    assert bus.subscriber_count == 0
    assert all(s.closed for s in subscriptions)


async def test_subscriptions_of_one_bus_do_not_see_another_bus() -> None:
    first, second = EventBus(), EventBus()
    on_second = second.subscribe()
    first.publish(Status(state="elsewhere"))
    assert await received(on_second) == []


EXAMPLES: list[Event] = [
    MessageCreated(message=Message(role="user", content="hi", conversation_id="c")),
    MessageDelta(message_id="m1", delta=" there"),
    MessageCompleted(
        message=Message(role="assistant", content="done", usage=Usage(total_tokens=3))
    ),
    Typing(active=False, who="assistant"),
    Status(state="calling_tool", detail="calculator"),
    ToolStarted(call=ToolCall(id="c1", name="calculator", arguments='{"expression": "2"}')),
    ToolFinished(
        result=ToolResult(call_id="c1", name="calculator", content="2", data={"v": 2}),
        duration_ms=1.5,
    ),
    ConversationUpdated(change="created", conversation=Conversation(owner="ada", title="t")),
    UsageRecorded(
        model="offline/echo",
        usage=Usage(prompt_tokens=1, cost=Decimal("0.000135")),
        provider="offline",
        key_id="key_1",
        request_id="req_1",
    ),
    ErrorEvent(code="provider_error", message="the model failed"),
    SessionRevoked(session_id="s1", principal_id="ada"),
    CancelRequested(reason="cancelled"),
    Reset(reason="gone", last_event_id="1-1"),
    Shutdown(retry_after=2.0),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.type)
async def test_events_round_trip_through_json(event: Event) -> None:
    event = EventBus().publish(event)
    event = msgspec.structs.replace(
        event, conversation_id=event.conversation_id or "conv_1", owner="ada"
    )
    data = msgspec.json.encode(event)
    assert msgspec.json.decode(data)["type"] == event.type
    decoded = decode_event(data)
    assert type(decoded) is type(event)
    assert decoded == event
    assert decode_event(data.decode()) == event


def test_every_event_type_is_decodable_and_distinct() -> None:
    types = [cls.__struct_config__.tag for cls in AnyEvent.__args__]  # type: ignore[attr-defined]
    assert len(set(types)) == len(types)
    assert {e.type for e in EXAMPLES} == set(types)


def test_decode_rejects_unknown_types() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"type": "mystery", "id": "1"}')


async def test_events_from_another_process_keep_their_identity() -> None:
    """What a Redis fan-out does: publish on one bus, deliver the JSON on another."""
    here, there = EventBus(), EventBus()
    with there.subscribe() as subscription:
        sent = here.publish(Status(state="thinking", conversation_id="c1", owner="ada"))
        assert sent.origin == here.origin
        received = there.deliver(decode_event(msgspec.json.encode(sent)))
        got = await subscription.get()
    assert got is received
    assert (got.id, got.ts, got.origin) == (sent.id, sent.ts, here.origin)
    assert got.origin != there.origin  # a forwarding sink on `there` would not send it back
    # Publishing again is a new event of the log: a new id, the origin kept.
    republished = there.publish(Status(state="idle", id="1-1", origin="bus_x"))
    assert republished.origin == "bus_x"
    assert republished.id not in ("", "1-1")


async def test_the_log_returns_what_followed_an_event_and_forgets_old_ones() -> None:
    bus = EventBus(log=MemoryEventLog(retention_events=3))
    events = [bus.publish(Status(state=str(n), owner="ada" if n % 2 else "bo")) for n in range(5)]
    assert await bus.read_after(events[2].id) == events[3:]
    assert await bus.read_after(events[2].id, owner="ada") == [events[3]]
    assert await bus.read_after(events[4].id) == []
    # Events 0 and 1 are forgotten: after 0, event 1 is missing; after 1, nothing is.
    assert await bus.read_after(events[0].id) is None
    assert await bus.read_after(events[1].id) == events[2:]
    # An id this log never gave (later than its newest, or not an id at all) cannot resume.
    assert await bus.read_after("99999999999999-0") is None
    assert await bus.read_after("not-an-id") is None
    # A new log resumes from where it started, and knows nothing from before.
    fresh = EventBus()
    assert fresh.last_id is not None
    assert await fresh.read_after(fresh.last_id) == []
    assert await fresh.read_after("0-0") is None


def test_ids_order_as_pairs_not_as_text() -> None:
    clock = IdClock()
    first, second = clock.next(1.0), clock.next(1.0)
    assert (first, second) == ((1000, 0), (1000, 1))
    assert clock.next(0.5) == (1000, 2)  # a clock that went back still gives a later id
    assert parse_id("9-0") < parse_id("10-0")  # type: ignore[operator]
    assert format_id((10, 3)) == "10-3"
    assert parse_id("10-3") == (10, 3)
    assert parse_id("10") is None
    assert parse_id("-1-2") is None


# -- indexed subscriptions and overflow -------------------------------------------------------


async def test_an_event_reaches_only_the_subscriptions_that_may_see_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hubbub.events import bus as bus_module

    calls = 0
    receive = bus_module.Subscription._receive

    def counting(self: Any, sender: Any, *, event: Event) -> None:
        nonlocal calls
        calls += 1
        receive(self, sender, event=event)

    monkeypatch.setattr(bus_module.Subscription, "_receive", counting)
    bus = EventBus()
    idle = [bus.subscribe(owner="bob") for _ in range(2000)]  # another user's open streams
    idle += [bus.subscribe(owner="bob", conversation_id="c-bob") for _ in range(2000)]
    alice = bus.subscribe(owner="alice")
    alice_c1 = bus.subscribe(owner="alice", conversation_id="c1")
    for n in range(500):
        bus.publish(MessageDelta(message_id="m", delta=str(n)), owner="alice", conversation_id="c1")
    # 500 events, each handed to alice's two streams: the 4,000 idle streams cost nothing.
    assert calls == 1000
    assert alice.pending == alice_c1.pending == 500
    assert all(s.pending == 0 for s in idle)


async def test_a_conversation_subscription_checks_the_owner() -> None:
    bus = EventBus()
    mine = bus.subscribe(owner="alice", conversation_id="c1")
    bus.publish(Typing(active=True), owner="mallory", conversation_id="c1")  # a forged id
    bus.publish(Typing(active=True), owner="alice", conversation_id="c2")
    bus.publish(Typing(active=True), owner="alice", conversation_id="c1")
    assert mine.pending == 1
    with pytest.raises(ValueError, match="with their owner"):
        bus.subscribe(conversation_id="c1")


async def test_a_stream_subscription_that_falls_behind_ends_instead_of_losing_events() -> None:
    bus = EventBus()
    stream = bus.subscribe(owner="alice", maxsize=5, overflow="close")
    sink = bus.subscribe(maxsize=5)  # drop_oldest: counted
    published = [bus.publish(Status(state=str(n)), owner="alice") for n in range(8)]
    received = [event async for event in stream]
    assert received == published[:5]  # what was queued is delivered, in order, then it ends
    assert stream.overflowed
    assert bus.subscriber_count == 1  # the stream disconnected itself
    assert sink.dropped == 3
    assert not sink.overflowed


async def test_trace_logs_each_delivery_with_its_context(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from hubbub.log import log_context
    from hubbub.testing import config_for, runtime_for

    caplog.set_level("DEBUG", logger="hubbub.events.trace")
    config = config_for(tmp_path, "[events]\ntrace = true\nsinks = []\n")
    async with runtime_for(config) as runtime:
        others = runtime.events.subscriber_count  # the runtime's own (the engine's)
        mine = runtime.events.subscribe(owner="ada", conversation_id="c1")
        with log_context(request_id="req-1"):
            event = runtime.events.publish(Typing(active=True), owner="ada", conversation_id="c1")
        mine.close()
    (record,) = [r for r in caplog.records if r.name == "hubbub.events.trace"]
    assert record.getMessage() == f"event typing {event.id} to {others + 1} subscriptions"
    assert (record.event_id, record.conversation_id, record.owner) == (event.id, "c1", "ada")
    quiet = EventBus()
    caplog.clear()
    quiet.publish(Typing(active=True))
    assert not [r for r in caplog.records if r.name == "hubbub.events.trace"]
