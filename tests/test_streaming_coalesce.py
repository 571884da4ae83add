"""A long reply streamed word by word neither freezes the event loop nor floods readers: the LLM
client yields to the loop however fast a provider streams, the engine publishes merged
``message.delta`` events (in order, nothing lost), and :func:`coalesce` merges what a pulling
reader (the OpenAI route) has not read yet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from hubbub.events import Event, MessageCompleted, MessageDelta
from hubbub.llm import LLMClient
from hubbub.llm.coalesce import TextBuffer, coalesce
from hubbub.models import ChatChunk, ChatRequest, Health, Message, ModelInfo, Principal, Usage
from hubbub.runtime import Runtime

WORDS = 20_000


class Firehose:
    """A provider (model ``fire/hose``) that streams ``words`` words and never waits."""

    def __init__(self, words: int = WORDS) -> None:
        self.words = words

    async def start(self) -> None:
        pass

    async def health(self) -> Health:
        return Health()

    async def aclose(self) -> None:
        pass

    async def list_models(self) -> Sequence[ModelInfo]:
        return [ModelInfo(id="fire/hose", provider="fire")]

    async def complete(self, request: ChatRequest) -> object:
        raise NotImplementedError

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        for number in range(self.words):
            yield ChatChunk(delta=f" w{number}")
        yield ChatChunk(finish_reason="stop", usage=Usage(completion_tokens=self.words))


class Ticker:
    """Counts turns of the event loop while it runs."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0)
            self.ticks += 1

    def __enter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def expected_text(words: int = WORDS) -> str:
    return "".join(f" w{n}" for n in range(words))


async def chunks_of(items: Sequence[ChatChunk], *, delay: float = 0.0) -> AsyncIterator[ChatChunk]:
    for item in items:
        if delay:
            await asyncio.sleep(delay)
        yield item


# -- the LLM client yields to the loop --------------------------------------------------------


async def test_the_client_lets_the_loop_run_while_a_provider_never_waits() -> None:
    client = LLMClient({"fire": Firehose()}, default_model="fire/hose", timeout=5)
    await client.start()
    request = ChatRequest(model="fire/hose", messages=[Message(role="user", content="go")])
    with Ticker() as ticker:
        seen_while_streaming = []
        async for chunk in client.stream(request):
            if chunk.delta:
                seen_while_streaming.append(ticker.ticks)
    # Other tasks ran during the stream, all along it, not only once it was over.
    assert seen_while_streaming[-1] > 100
    assert seen_while_streaming[len(seen_while_streaming) // 2] > 50


# -- the engine publishes merged deltas, in order -------------------------------------------


async def test_a_long_reply_is_a_few_delta_events_with_the_exact_text(
    make_runtime: Callable[..., Runtime], principal: Principal
) -> None:
    async with make_runtime() as runtime:
        conversation = await runtime.conversations.create(principal)
        seen = runtime.events.subscribe(
            lambda e: e.conversation_id == conversation.id, maxsize=100_000
        )
        words = " ".join(f"word{n}" for n in range(WORDS))
        with Ticker() as ticker:
            _, reply = await runtime.conversations.post_message(
                principal, conversation.id, words, wait=True
            )
            ticks = ticker.ticks
    assert reply is not None
    events: list[Event] = []
    while (event := await seen.get()) is not None:  # closed when the runtime stopped
        events.append(event)
    replies = [e for e in events if isinstance(e, MessageDelta)]
    assert "".join(e.delta for e in replies) == reply.content
    assert reply.content == f"[offline echo] You said: {words}"
    assert len(replies) < WORDS // 50  # merged: far fewer events than words
    assert ticks > 100  # and the loop kept turning while the reply streamed
    # The deltas come before the reply's usage and its completion, as before.
    types = [e.type for e in events]
    last_delta = max(i for i, t in enumerate(types) if t == "message.delta")
    usage = types.index("usage")
    completed = [i for i, e in enumerate(events) if isinstance(e, MessageCompleted)][-1]
    assert last_delta < usage < completed


# -- TextBuffer ---------------------------------------------------------------------------


async def test_text_buffer_hands_on_by_size_by_time_and_when_flushed() -> None:
    out: list[str] = []
    buffer = TextBuffer(out.append, max_chars=10, max_delay=0.05)
    buffer.add("abc")
    buffer.add("def")
    assert out == []  # neither big enough nor old enough
    buffer.add("ghij")
    assert out == ["abcdefghij"]  # ten characters: handed on at once
    buffer.add("k")
    await asyncio.sleep(0.2)
    assert out == ["abcdefghij", "k"]  # handed on by its timer
    buffer.add("l")
    buffer.flush()
    buffer.flush()
    assert out == ["abcdefghij", "k", "l"]
    await asyncio.sleep(0.1)
    assert out == ["abcdefghij", "k", "l"]  # the timer was cancelled by the flush


# -- coalesce (pulling readers) --------------------------------------------------------------


async def test_coalesce_merges_text_and_keeps_other_chunks_in_place() -> None:
    calls = ChatChunk(tool_calls=[])
    items = [
        ChatChunk(delta="a"),
        ChatChunk(delta="b"),
        calls,
        ChatChunk(delta="c"),
        ChatChunk(delta="d"),
        ChatChunk(finish_reason="stop", usage=Usage(completion_tokens=4)),
    ]
    merged = [chunk async for chunk in coalesce(chunks_of(items))]
    assert merged == [
        ChatChunk(delta="ab"),
        calls,
        ChatChunk(delta="cd"),
        ChatChunk(finish_reason="stop", usage=Usage(completion_tokens=4)),
    ]


async def test_coalesce_turns_a_firehose_into_a_few_big_pieces_and_lets_the_loop_run() -> None:
    client = LLMClient({"fire": Firehose()}, default_model="fire/hose", timeout=5)
    await client.start()
    request = ChatRequest(model="fire/hose", messages=[Message(role="user", content="go")])
    with Ticker() as ticker:
        merged = [chunk async for chunk in coalesce(await client.open_stream(request))]
        assert ticker.ticks > 100
    texts = [chunk.delta for chunk in merged if chunk.delta]
    assert "".join(texts) == expected_text()
    assert len(texts) < WORDS // 50
    assert max(len(text) for text in texts) <= 4096 + 16
    assert merged[-1].finish_reason == "stop"


async def test_coalesce_hands_a_slow_stream_on_as_it_comes() -> None:
    items = [ChatChunk(delta=word) for word in ("one", " two", " three")]
    merged = [chunk async for chunk in coalesce(chunks_of(items, delay=0.05), max_delay=0.005)]
    assert [chunk.delta for chunk in merged] == ["one", " two", " three"]


async def test_coalesce_raises_the_stream_error_after_the_text_before_it() -> None:
    async def failing() -> AsyncIterator[ChatChunk]:
        yield ChatChunk(delta="partial ")
        yield ChatChunk(delta="text")
        raise RuntimeError("the provider fell over")

    stream = coalesce(failing())
    assert (await anext(stream)).delta == "partial text"
    with pytest.raises(RuntimeError, match="fell over"):
        await anext(stream)


async def test_closing_a_coalesced_stream_stops_and_closes_the_source() -> None:
    closed = asyncio.Event()
    produced = 0

    async def endless() -> AsyncIterator[ChatChunk]:
        nonlocal produced
        try:
            while True:
                produced += 1
                yield ChatChunk(delta="x")
                await asyncio.sleep(0.001)
        finally:
            closed.set()

    stream = coalesce(endless())
    first = await anext(stream)
    assert first.delta.startswith("x")
    await stream.aclose()  # type: ignore[attr-defined]
    assert closed.is_set()
    count = produced
    await asyncio.sleep(0.05)
    assert produced == count  # nothing reads it any more
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
