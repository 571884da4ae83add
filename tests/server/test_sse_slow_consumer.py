"""An SSE stream that falls a whole queue behind ends with a resumable ``slow_consumer`` event
instead of silently losing events mid-reply; resuming from its id replays what followed."""

from __future__ import annotations

import asyncio
import json

from hubbub.events import EventBus, MessageDelta
from hubbub.testing import principal
from hubbub_server.routes.events import _frames, _Stream


async def test_a_stream_too_far_behind_ends_with_the_id_to_resume_from() -> None:
    bus = EventBus(queue_size=4)
    ada = principal("ada")
    frames = _frames(_Stream(bus, ada, "c1"), asyncio.Event(), None)
    # The response starts (and subscribes) on its first frame; the reader then stalls.
    first = asyncio.ensure_future(anext(frames))
    await asyncio.sleep(0)
    published = [
        bus.publish(MessageDelta(message_id="m", delta=f"{n} "), owner="ada", conversation_id="c1")
        for n in range(10)
    ]
    got = [await first] + [frame async for frame in frames]
    ids = [frame.id for frame in got]
    assert ids[:4] == [event.id for event in published[:4]]  # what was queued, in order
    last = got[-1]
    assert last.event == "error"
    assert json.loads(last.data)["code"] == "slow_consumer"
    assert last.id == published[3].id  # the last event sent: Last-Event-ID to resume with
    assert bus.subscriber_count == 0

    resumed = _frames(_Stream(bus, ada, "c1"), asyncio.Event(), last.id)
    replay = [await anext(resumed) for _ in range(6)]
    assert [frame.id for frame in replay] == [event.id for event in published[4:]]
    await resumed.aclose()
