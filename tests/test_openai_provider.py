"""The ``openai`` provider against a real HTTP server speaking the OpenAI API
(``tests/openai_upstream.py``): what it sends, what it makes of replies, streams, tool calls and
usage, the upstream's failures as hubbub's errors (retryable or not), keep-alive, cancellation
that reaches the upstream, Azure OpenAI, embeddings, and its configuration."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from openai_upstream import REPLY, OpenAIUpstream, embedding, pieces

from hubbub.config import Secret
from hubbub.errors import (
    ConfigError,
    ContextWindowExceededError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
    TooManyRequestsError,
    UnknownModelError,
)
from hubbub.models import ChatChunk, ChatRequest, Message, ToolCall, ToolSpec
from hubbub.runtime import Runtime
from hubbub_plugins.openai_provider import OpenAIModel, OpenAIProvider, OpenAISettings
from hubbub_plugins.openai_provider.failures import retry_after
from hubbub_plugins.openai_provider.sse import SSEParser

CALCULATOR = ToolSpec(
    name="calculator",
    description="Evaluate an arithmetic expression.",
    parameters={"type": "object", "properties": {"expression": {"type": "string"}}},
)


def ask(model: str = "up", text: str = "hello there", **fields: Any) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message(role="user", content=text)], **fields)


@asynccontextmanager
async def serving(
    *models: OpenAIModel,
    upstream_timeout: float = 10.0,
    max_connections: int = 100,
    max_waiters: int = 1000,
) -> AsyncIterator[OpenAIProvider]:
    settings = OpenAISettings(
        models=list(models),
        timeout=upstream_timeout,
        max_connections=max_connections,
        max_waiters=max_waiters,
    )
    provider = OpenAIProvider("openai", settings)
    await provider.start()
    try:
        yield provider
    finally:
        await provider.aclose()


def model(upstream: OpenAIUpstream, name: str = "up", **fields: Any) -> OpenAIModel:
    fields.setdefault("model", "gpt-4o-mini")
    return OpenAIModel(name=name, api_base=upstream.url, **fields)


async def read_into(received: list[ChatChunk], stream: AsyncIterator[ChatChunk]) -> None:
    async for chunk in stream:
        received.append(chunk)


async def collect(provider: OpenAIProvider, request: ChatRequest) -> list[ChatChunk]:
    return [chunk async for chunk in provider.stream(request)]


# -- SSE -----------------------------------------------------------------------------------

EVENTS = (
    b'data: {"a":1}\n\n'
    b": keep-alive comment\n\n"
    b'event: message\nid: 7\ndata: {"b":\n'
    b"data: 2}\n\n"
    b"retry: 100\n\n"
    b'data:{"c":3}\n\n'
    b"data: [DONE]\n\n"
)
EXPECTED = [b'{"a":1}', b'{"b":\n2}', b'{"c":3}', b"[DONE]"]


def test_sse_whole_events_in_one_piece() -> None:
    assert SSEParser().feed(EVENTS) == EXPECTED


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"])
def test_sse_events_cut_anywhere_give_the_same_data(ending: bytes) -> None:
    text = EVENTS.replace(b"\n", ending)
    for size in (1, 2, 3, 5, 7, 64):
        parser = SSEParser()
        found = []
        for start in range(0, len(text), size):
            found.extend(parser.feed(text[start : start + size]))
        found.extend(parser.finish())  # the body ended (a last lone \r ends a line)
        assert found == EXPECTED, (ending, size)
        assert not parser.pending


def test_sse_an_unfinished_event_waits() -> None:
    parser = SSEParser()
    assert parser.feed(b'data: {"a":1}\n\ndata: {"b"') == [b'{"a":1}']
    assert parser.pending
    assert parser.feed(b":2}\n\n") == [b'{"b":2}']


def _feed_all(parser: SSEParser, pieces: list[bytes]) -> tuple[list[bytes], float]:
    began = time.perf_counter()
    found = []
    for piece in pieces:
        found.extend(parser.feed(piece))
    return found, time.perf_counter() - began


def test_sse_an_event_in_many_small_pieces_parses_in_linear_time() -> None:
    # the same number of feeds, of the same size: whole small events (the baseline), then one
    # event of 10,000 pieces; a parser that re-scans or re-copies what it holds for every piece
    # does quadratic work on the second (about 5 GB of copying here), a linear one the same
    count, size = 10_000, 100
    small = b"data: " + b"x" * (size - 8) + b"\n\n"
    baseline_found, baseline = _feed_all(SSEParser(), [small] * count)
    assert len(baseline_found) == count
    body = [b"data: "] + [b"y" * size] * count + [b"\n\n"]
    found, elapsed = _feed_all(SSEParser(), body)
    assert found == [b"y" * (size * count)]
    assert elapsed < 20 * baseline + 0.05, (elapsed, baseline)


def _feed_lines(parser: SSEParser, line: bytes, times: int) -> int:
    for _ in range(times):
        parser.feed(line)
    return times


@pytest.mark.parametrize("ending", [b"\n\n", b"\r\n\r\n", b"\r\r"])
def test_sse_an_event_larger_than_the_limit_fails_cleanly(ending: bytes) -> None:
    parser = SSEParser(max_event_bytes=1000)
    assert parser.feed(b"data: " + b"a" * 900 + ending) == [b"a" * 900]
    fed = 0
    with pytest.raises(ValueError, match="larger than 1000 bytes"):  # never ended
        fed = _feed_lines(parser, b"data: " + b"b" * 50 + ending[:1], 100)
    assert fed == 0  # refused once past the limit, not held on to
    assert not parser.pending  # what it held is dropped
    with pytest.raises(ValueError, match="larger than 1000 bytes"):  # whole, in one piece
        SSEParser(max_event_bytes=1000).feed(b"data: " + b"c" * 2000 + ending + b"data: 1")


async def test_a_stream_event_over_the_limit_is_a_clear_final_error(
    openai_upstream: OpenAIUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubbub_plugins.openai_provider import provider as module

    monkeypatch.setattr(module, "MAX_EVENT", 20)  # every event of the reply is longer
    async with serving(model(openai_upstream)) as provider:
        with pytest.raises(ProviderError) as caught:
            await collect(provider, ask())
    assert "the upstream sent an event larger than 20 bytes" in str(caught.value)
    assert caught.value.retryable is False


# -- what is sent --------------------------------------------------------------------------


async def test_the_body_and_headers_sent_upstream(
    openai_upstream: OpenAIUpstream,
) -> None:
    entry = model(
        openai_upstream,
        api_key=Secret("sk-upstream"),
        organization="org-1",
        headers={"X-Tenant": Secret("blue"), "X-Token": Secret("tok", "env:T")},
        options={"top_p": 0.5, "seed": 7, "temperature": 0.1, "max_tokens": 99},
    )
    history = [
        Message(role="system", content="Be brief."),
        Message(role="user", content="add"),
        Message(
            role="assistant",
            content="",
            tool_calls=[ToolCall(id="c1", name="calculator", arguments='{"expression":"1+1"}')],
        ),
        Message(role="tool", content="2", tool_call_id="c1", name="calculator"),
    ]
    request = ChatRequest(
        model="up",
        messages=history,
        tools=[CALCULATOR],
        tool_choice="auto",
        temperature=0.7,  # the request's own value wins over options
        stop=["END"],
        user="user-1",
        metadata={"conversation_id": "conv_1"},  # never sent
    )
    async with serving(entry) as provider:
        await provider.complete(request)
    (seen,) = openai_upstream.chat_requests()
    assert seen.path == "/v1/chat/completions"
    assert seen.body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "add"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "c1",
                        "function": {"name": "calculator", "arguments": '{"expression":"1+1"}'},
                        "type": "function",
                    }
                ],
            },
            {"role": "tool", "content": "2", "name": "calculator", "tool_call_id": "c1"},
        ],
        "tools": [
            {
                "function": {
                    "name": "calculator",
                    "parameters": CALCULATOR.parameters,
                    "description": CALCULATOR.description,
                },
                "type": "function",
            }
        ],
        "tool_choice": "auto",
        "temperature": 0.7,
        "max_tokens": 99,
        "stop": ["END"],
        "top_p": 0.5,
        "seed": 7,
    }
    assert seen.headers["authorization"] == "Bearer sk-upstream"
    assert seen.headers["openai-organization"] == "org-1"
    assert seen.headers["x-tenant"] == "blue"
    assert seen.headers["x-token"] == "tok"
    assert seen.headers["content-type"] == "application/json"


async def test_a_models_headers_replace_the_providers(openai_upstream: OpenAIUpstream) -> None:
    entry = model(
        openai_upstream,
        api_key=Secret("sk-upstream"),
        headers={"Authorization": Secret("Token other"), "User-Agent": Secret("mine/1")},
    )
    async with serving(entry) as provider:
        await provider.complete(ask())
    (seen,) = openai_upstream.chat_requests()
    assert seen.headers["authorization"] == "Token other"  # one header, not two
    assert seen.headers["user-agent"] == "mine/1"


async def test_the_user_is_not_sent_unless_asked_and_then_only_hashed(
    openai_upstream: OpenAIUpstream,
) -> None:
    quiet = model(openai_upstream, name="quiet")
    told = model(openai_upstream, name="told", send_user=True)
    async with serving(quiet, told) as provider:
        await provider.complete(ask("quiet", user="alice"))
        await provider.complete(ask("told", user="alice"))
        await collect(provider, ask("told", user="alice"))
        await provider.complete(ask("told"))  # no principal: nothing to send
    first, second, third, fourth = openai_upstream.chat_requests()
    assert "user" not in first.body
    digest = hashlib.sha256(b"alice").hexdigest()[:32]
    assert second.body["user"] == digest
    assert third.body["user"] == digest  # stable: the same for every request of the principal
    assert "alice" not in second.raw.decode()
    assert "user" not in fourth.body


async def test_a_stream_asks_for_usage_and_tools_stay_home_when_unsupported(
    openai_upstream: OpenAIUpstream,
) -> None:
    async with serving(model(openai_upstream, supports_tools=False)) as provider:
        await collect(provider, ask(tools=[CALCULATOR], tool_choice="required"))
    (seen,) = openai_upstream.chat_requests()
    assert seen.body["stream"] is True
    assert seen.body["stream_options"] == {"include_usage": True}
    assert "tools" not in seen.body
    assert "tool_choice" not in seen.body
    assert seen.headers["accept"] == "text/event-stream"


# -- replies -------------------------------------------------------------------------------


async def test_complete_returns_text_usage_and_finish(openai_upstream: OpenAIUpstream) -> None:
    async with serving(model(openai_upstream)) as provider:
        response = await provider.complete(ask(text="one two three"))
    assert response.model == "up"
    assert response.message.role == "assistant"
    assert response.message.content == REPLY
    assert response.finish_reason == "stop"
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, len(pieces(REPLY)))
    assert usage.total_tokens == 3 + len(pieces(REPLY))
    assert usage.cost is None  # the LLM client prices replies, never the provider


async def test_stream_yields_text_then_finish_with_usage(openai_upstream: OpenAIUpstream) -> None:
    async with serving(model(openai_upstream)) as provider:
        chunks = await collect(provider, ask(text="one two three"))
    texts = [c.delta for c in chunks if c.delta]
    assert texts == pieces(REPLY)  # one chunk per upstream event, as they came
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, len(pieces(REPLY)))


async def test_tool_calls_whole_and_assembled_from_stream_pieces(
    openai_upstream: OpenAIUpstream,
) -> None:
    request = ask("tools", 'call calculator {"expression": "2+3"}', tools=[CALCULATOR])
    expected = ToolCall(id="call_4", name="calculator", arguments='{"expression": "2+3"}')
    async with serving(model(openai_upstream, "tools", model="gpt-tools")) as provider:
        response = await provider.complete(request)
        chunks = await collect(provider, request)
    assert response.message.tool_calls == [expected]
    assert response.finish_reason == "tool_calls"
    assert [c.tool_calls for c in chunks if c.tool_calls] == [[expected]]
    assert chunks[-1].finish_reason == "tool_calls"
    assert not "".join(c.delta for c in chunks)


async def test_unknown_model_is_refused(openai_upstream: OpenAIUpstream) -> None:
    async with serving(model(openai_upstream)) as provider:
        with pytest.raises(UnknownModelError):
            await provider.complete(ask("nope"))
    assert openai_upstream.requests == []


# -- failures ------------------------------------------------------------------------------


async def test_429_is_rate_limited_with_the_upstreams_retry_after(
    openai_upstream: OpenAIUpstream,
) -> None:
    openai_upstream.script("status:429:retry_after=2", "status:429:retry_after=3")
    async with serving(model(openai_upstream)) as provider:
        with pytest.raises(ProviderRateLimitedError) as whole:
            await provider.complete(ask())
        with pytest.raises(ProviderRateLimitedError) as streamed:
            await collect(provider, ask())
    assert whole.value.retry_after == 2
    assert streamed.value.retry_after == 3
    assert whole.value.retryable is True
    assert whole.value.upstream_status == 429
    assert "rate limiting" in str(whole.value)


def test_retry_after_in_milliseconds_seconds_or_a_date() -> None:
    assert retry_after("1500", "9") == 1.5
    assert retry_after(None, "4") == 4
    assert retry_after(None, "Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10
    assert retry_after(None, "Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0
    assert retry_after(None, "soon") is None
    assert retry_after(None, None) is None


@pytest.mark.parametrize(
    ("behaviour", "retryable"),
    [("status:500", True), ("status:503", True), ("status:404", False), ("status:400", False)],
)
async def test_5xx_is_retryable_and_other_4xx_is_not(
    openai_upstream: OpenAIUpstream, behaviour: str, retryable: bool
) -> None:
    status = int(behaviour.split(":")[1])
    openai_upstream.script(behaviour, behaviour)
    async with serving(model(openai_upstream)) as provider:
        with pytest.raises(ProviderError) as whole:
            await provider.complete(ask())
        with pytest.raises(ProviderError) as streamed:
            await collect(provider, ask())
    for caught in (whole.value, streamed.value):
        assert type(caught) is ProviderError
        assert caught.retryable is retryable
        assert caught.upstream_status == status
        assert f"HTTP {status}" in str(caught)
        assert "scripted" in str(caught)  # the upstream's error.message
        assert openai_upstream.url not in str(caught)


async def test_context_overflow_is_its_own_error(openai_upstream: OpenAIUpstream) -> None:
    openai_upstream.script("context_overflow", "context_overflow")
    async with serving(model(openai_upstream)) as provider:
        with pytest.raises(ContextWindowExceededError) as whole:
            await provider.complete(ask())
        with pytest.raises(ContextWindowExceededError):
            await collect(provider, ask())
    assert whole.value.retryable is False
    assert whole.value.status == 400
    assert "maximum context length" in str(whole.value)


async def test_a_refused_key_is_not_retryable_and_never_shown() -> None:
    with OpenAIUpstream(api_key="sk-right-key") as upstream:
        entry = model(upstream, api_key=Secret("sk-wrong-key-123456"))
        async with serving(entry) as provider:
            with pytest.raises(ProviderError) as caught:
                await provider.complete(ask())
    message = str(caught.value)
    assert caught.value.retryable is False
    assert caught.value.upstream_status == 401
    assert "refused the key" in message
    assert "sk-" not in message  # the upstream's 401 message quotes part of the key
    assert "wrong" not in message


async def test_the_right_key_is_accepted() -> None:
    with OpenAIUpstream(api_key="sk-right-key") as upstream:
        async with serving(model(upstream, api_key=Secret("sk-right-key"))) as provider:
            response = await provider.complete(ask())
    assert response.message.content == REPLY


async def test_an_unreachable_upstream_is_retryable_and_names_no_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        entry = OpenAIModel(name="down", api_base=f"http://127.0.0.1:{port}/v1")
        async with serving(entry) as provider:
            with pytest.raises(ProviderError) as caught:
                await provider.complete(ask("down"))
            with pytest.raises(ProviderError):
                await collect(provider, ask("down"))
    assert caught.value.retryable is True
    assert "could not connect" in str(caught.value)
    assert str(port) not in str(caught.value)


async def test_an_upstream_that_hangs_times_out_and_sees_the_client_leave(
    openai_upstream: OpenAIUpstream,
) -> None:
    openai_upstream.script("hang", "hang")
    async with serving(model(openai_upstream), upstream_timeout=0.3) as provider:
        with pytest.raises(ProviderTimeoutError) as caught:
            await provider.complete(ask())
        with pytest.raises(ProviderTimeoutError):
            await collect(provider, ask())
    assert caught.value.retryable is True
    await openai_upstream.await_until(
        lambda: all(r.disconnected_at for r in openai_upstream.chat_requests()), within=5
    )
    for seen in openai_upstream.chat_requests():
        assert seen.disconnected_at is not None
        assert seen.disconnected_at >= seen.received_at


async def test_a_stream_cut_midway_fails_after_its_first_chunks(
    openai_upstream: OpenAIUpstream,
) -> None:
    openai_upstream.script("drop_after:4")
    received: list[ChatChunk] = []
    async with serving(model(openai_upstream)) as provider:
        stream = provider.stream(ask())
        with pytest.raises(ProviderError) as caught:
            await read_into(received, stream)
    assert [c.delta for c in received] == pieces(REPLY)[:3]  # event 0 carries the role only
    assert caught.value.retryable is True
    assert "closed the connection" in str(caught.value)


async def test_a_whole_answer_cut_short_is_retryable(openai_upstream: OpenAIUpstream) -> None:
    openai_upstream.script("drop_after:10")  # the head and 10 bytes of the body, then FIN
    async with serving(model(openai_upstream)) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(ask())
        response = await provider.complete(ask())  # a fresh connection serves the next one
    assert caught.value.retryable is True
    assert "closed the connection" in str(caught.value)
    assert response.message.content == REPLY
    assert len(openai_upstream.connections) == 2


async def test_an_answer_that_is_not_openai_is_an_error(openai_upstream: OpenAIUpstream) -> None:
    openai_upstream.script("garbage")
    async with serving(model(openai_upstream)) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(ask())
    assert caught.value.retryable is False
    assert "not an OpenAI chat completion" in str(caught.value)


# -- connections ---------------------------------------------------------------------------


async def test_requests_reuse_one_kept_alive_connection(openai_upstream: OpenAIUpstream) -> None:
    async with serving(model(openai_upstream)) as provider:
        for _ in range(10):
            await provider.complete(ask())
            await collect(provider, ask())
    assert len(openai_upstream.chat_requests()) == 20
    assert len(openai_upstream.connections) == 1


async def test_models_on_one_api_base_share_a_pool(openai_upstream: OpenAIUpstream) -> None:
    with OpenAIUpstream() as other:
        entries = [
            model(openai_upstream, "a"),
            model(openai_upstream, "b", model="gpt-4.1"),
            model(other, "c"),
        ]
        async with serving(*entries) as provider:
            assert len(provider.clients) == 2
            assert provider.routes["a"].client is provider.routes["b"].client
            for name in ("a", "b", "a", "b"):
                await provider.complete(ask(name))
            await provider.complete(ask("c"))
        assert len(other.chat_requests()) == 1
    assert [r.body["model"] for r in openai_upstream.chat_requests()] == [
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4o-mini",
        "gpt-4.1",
    ]
    assert len(openai_upstream.connections) == 1


async def test_leaving_a_stream_early_reaches_the_upstream_at_once(
    openai_upstream: OpenAIUpstream,
) -> None:
    openai_upstream.script("slow:200")  # an event every 0.2 s: the whole reply takes ~3 s
    async with serving(model(openai_upstream)) as provider:
        stream = provider.stream(ask())
        first = await anext(aiter(stream))
        assert first.delta
        left = time.monotonic()
        await stream.aclose()  # type: ignore[attr-defined]
        await openai_upstream.await_until(
            lambda: openai_upstream.chat_requests()[0].disconnected_at, within=5
        )
    (seen,) = openai_upstream.chat_requests()
    assert seen.completed_at is None
    assert seen.disconnected_at is not None
    assert seen.disconnected_at - left < 1.0


async def test_a_full_pool_is_a_local_429_not_the_upstreams_failure(
    openai_upstream: OpenAIUpstream,
) -> None:
    openai_upstream.script("hang", "hang", "hang")
    async with serving(model(openai_upstream), max_connections=1, max_waiters=1) as provider:
        holding = asyncio.create_task(provider.complete(ask()))  # the one connection, hung
        await openai_upstream.await_until(lambda: openai_upstream.chat_requests(), within=5)
        waiting = asyncio.create_task(provider.complete(ask()))  # the one waiter
        client = next(iter(provider.clients.values()))
        await asyncio.sleep(0)  # its first step reaches the queue
        assert client.stats.waiting == 1
        with pytest.raises(TooManyRequestsError) as caught:
            await provider.complete(ask())
        with pytest.raises(TooManyRequestsError):
            await collect(provider, ask())
        for task in (holding, waiting):
            task.cancel()
        await asyncio.gather(holding, waiting, return_exceptions=True)
    assert not isinstance(caught.value, ProviderError)  # no retry, no fallback, no breaker
    assert caught.value.status == 429
    assert caught.value.retry_after == 1
    assert "waiting for a connection to the upstream" in str(caught.value)
    assert len(openai_upstream.chat_requests()) == 1  # the refused ones never left


def test_max_waiters_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_waiters"):
        OpenAISettings(max_waiters=-1)


async def test_a_cancelled_request_reaches_the_upstream(openai_upstream: OpenAIUpstream) -> None:
    openai_upstream.script("hang")
    async with serving(model(openai_upstream)) as provider:
        task = asyncio.create_task(provider.complete(ask()))
        await openai_upstream.await_until(lambda: openai_upstream.chat_requests(), within=5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await openai_upstream.await_until(
            lambda: openai_upstream.chat_requests()[0].disconnected_at, within=1
        )


# -- Azure OpenAI and embeddings -----------------------------------------------------------


async def test_azure_paths_version_and_key_header(openai_upstream: OpenAIUpstream) -> None:
    entry = OpenAIModel(
        name="az",
        model="my-deployment",
        api_base=openai_upstream.origin,
        azure=True,
        api_version="2024-10-21",
        api_key=Secret("azure-key"),
    )
    async with serving(entry) as provider:
        response = await provider.complete(ask("az"))
        chunks = await collect(provider, ask("az"))
        vectors = await provider.embed("az", ["x"])
    assert response.message.content == REPLY
    assert "".join(c.delta for c in chunks) == REPLY
    assert vectors == [embedding("x")]
    paths = [(r.path, r.query) for r in openai_upstream.requests]
    assert paths == [
        ("/openai/deployments/my-deployment/chat/completions", "api-version=2024-10-21"),
        ("/openai/deployments/my-deployment/chat/completions", "api-version=2024-10-21"),
        ("/openai/deployments/my-deployment/embeddings", "api-version=2024-10-21"),
    ]
    for seen in openai_upstream.requests:
        assert seen.headers["api-key"] == "azure-key"
        assert "authorization" not in seen.headers


async def test_embeddings_come_back_in_input_order(openai_upstream: OpenAIUpstream) -> None:
    texts = ["first text", "second", "third one here"]
    async with serving(model(openai_upstream, "emb", model="text-embedding-3-small")) as provider:
        vectors = await provider.embed("emb", texts)
    assert vectors == [embedding(t) for t in texts]
    (seen,) = openai_upstream.requests
    assert seen.path == "/v1/embeddings"
    assert seen.body == {
        "model": "text-embedding-3-small",
        "input": texts,
        "encoding_format": "float",
    }


# -- configuration and the runtime ---------------------------------------------------------


async def test_models_are_listed_with_limits_and_prices(openai_upstream: OpenAIUpstream) -> None:
    entry = model(
        openai_upstream,
        description="through the upstream",
        context_window=4096,
        max_output_tokens=512,
        input_cost_per_token=Decimal("0.00000015"),
        output_cost_per_token=Decimal("0.0000006"),
    )
    async with serving(entry) as provider:
        (info,) = await provider.list_models()
        health = await provider.health()
    assert info.id == "up"
    assert info.provider == "openai"
    assert info.upstream_model == "gpt-4o-mini"
    assert (info.context_window, info.max_output_tokens) == (4096, 512)
    assert info.input_cost_per_token == Decimal("0.00000015")
    assert info.output_cost_per_token == Decimal("0.0000006")
    assert info.supports_tools is True
    assert health.status == "ok"


async def test_a_models_window_defaults_to_the_price_tables(
    openai_upstream: OpenAIUpstream,
) -> None:
    entries = [model(openai_upstream), model(openai_upstream, "unknown", model="my-own-llm")]
    async with serving(*entries) as provider:
        windows = {m.id: m.context_window for m in await provider.list_models()}
    assert windows == {"up": 128_000, "unknown": None}  # gpt-4o-mini reads 128,000 tokens


def runtime_toml(upstream: OpenAIUpstream, extra: str = "") -> str:
    return f"""
        [llm]
        providers = ["openai"]
        default_model = "up-gpt"

        [[plugins.openai_provider.models]]
        name = "up-gpt"
        model = "gpt-4o-mini"
        api_base = "{upstream.url}"
        api_key = {{ env = "UPSTREAM_KEY" }}
        input_cost_per_token = "0.000001"
        output_cost_per_token = "0.000002"
        {extra}
        """


async def test_through_the_runtime_with_a_key_from_the_environment(
    make_config: Callable[..., Any],
) -> None:
    from hubbub.plugins import load_plugins

    with OpenAIUpstream(api_key="sk-from-env") as upstream:
        config = make_config(runtime_toml(upstream), env={"UPSTREAM_KEY": "sk-from-env"})
        async with Runtime.from_config(config, plugins=load_plugins(env={})) as runtime:
            response = await runtime.llm.complete(ask("up-gpt"))
            chunks = [c async for c in runtime.llm.stream(ask("up-gpt"))]
            models = {m.id: m for m in runtime.llm.models()}
    assert response.message.content == REPLY
    assert "".join(c.delta for c in chunks) == REPLY
    assert models["up-gpt"].provider == "openai"
    assert [r.headers["authorization"] for r in upstream.chat_requests()] == [
        "Bearer sk-from-env"
    ] * 2


async def test_a_full_pool_through_the_runtime_is_refused_at_once_and_blames_no_upstream(
    make_config: Callable[..., Any], openai_upstream: OpenAIUpstream
) -> None:
    from hubbub.plugins import load_plugins

    openai_upstream.script("hang", "hang", "hang", "hang")
    toml = "[plugins.openai_provider]\nmax_connections = 1\nmax_waiters = 1\n" + runtime_toml(
        openai_upstream
    )
    config = make_config(toml, env={"UPSTREAM_KEY": "k"})
    async with Runtime.from_config(config, plugins=load_plugins(env={})) as runtime:
        holding = asyncio.create_task(runtime.llm.complete(ask("up-gpt")))
        await openai_upstream.await_until(lambda: openai_upstream.chat_requests(), within=5)
        waiting = asyncio.create_task(runtime.llm.complete(ask("up-gpt")))
        provider = runtime.llm.providers["openai"]
        client = next(iter(provider.clients.values()))  # type: ignore[attr-defined]
        for _ in range(100):  # the router's steps before the provider queues it
            if client.stats.waiting:
                break
            await asyncio.sleep(0)
        assert client.stats.waiting == 1
        with pytest.raises(TooManyRequestsError):
            await runtime.llm.complete(ask("up-gpt"))
        breaker = runtime.llm.router.breakers["up-gpt"]
        assert breaker.failures == 0  # the upstream is not blamed for hubbub's own queue
        for task in (holding, waiting):
            task.cancel()
        await asyncio.gather(holding, waiting, return_exceptions=True)
    assert len(openai_upstream.chat_requests()) == 1  # not retried: refused at once


@pytest.mark.parametrize(
    ("extra", "path", "words"),
    [
        ("options = { stream = true }", "models", "options may not set stream"),
        ("azure = true", "models", "api_version"),
        ('headers = { "X-A" = 3 }', "headers", "expected a string"),
        ('headers = { "Host" = "h" }', "models", "not a header that can be set"),
        ("timeoutt = 3", "timeoutt", "unknown key"),
    ],
)
def test_configuration_mistakes_are_errors_with_their_path(
    make_config: Callable[..., Any],
    openai_upstream: OpenAIUpstream,
    extra: str,
    path: str,
    words: str,
) -> None:
    from hubbub.plugins import load_plugins

    config = make_config(runtime_toml(openai_upstream, extra), env={"UPSTREAM_KEY": "k"})
    with pytest.raises(ConfigError) as caught:
        Runtime.from_config(config, plugins=load_plugins(env={}))
    text = str(caught.value)
    assert "plugins.openai_provider" in text
    assert path in text
    assert words in text


@pytest.mark.parametrize(
    "api_base",
    [
        "ftp://example.com/v1",
        "127.0.0.1:8000/v1",
        "http:///v1",
        "http://h/v1?key=1",
        "http://u:p@h/v1",
    ],
)
def test_a_bad_api_base_is_refused(api_base: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="api_base"):
        msgspec.convert(
            {"models": [{"name": "x", "api_base": api_base}]},
            OpenAISettings,
            dec_hook=lambda t, o: Secret(o),
        )
