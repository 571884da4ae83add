"""The LLM client's router: retries, fallbacks, breakers and deadlines, with scripted providers
in process (the same behaviours against a real HTTP upstream: tests/test_llm_resilience_http.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal

import pytest

from hubbub.errors import (
    ConfigError,
    ContextWindowExceededError,
    InvalidRequestError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderRequestError,
    ProviderTimeoutError,
)
from hubbub.events import EventBus, Status, Subscription
from hubbub.llm import LLMClient
from hubbub.llm.routing import RoutePolicy
from hubbub.models import ChatChunk, ChatRequest, ChatResponse, Health, Message, ModelInfo, Usage
from hubbub.resilience import CircuitOpenError

pytestmark = pytest.mark.asyncio

Step = BaseException | str  # an error to raise, "hang", or the text to answer


class Script:
    """An LLM provider serving the models it is given, each answering from its own script of
    steps (consumed in order; the last one repeats)."""

    def __init__(self, scripts: dict[str, list[Step]]) -> None:
        self.scripts = scripts
        self.calls: list[str] = []

    async def start(self) -> None:
        pass

    async def health(self) -> Health:
        return Health()

    async def aclose(self) -> None:
        pass

    async def list_models(self) -> Sequence[ModelInfo]:
        return [ModelInfo(id=name, provider="script") for name in self.scripts]

    async def _step(self, model: str) -> str:
        self.calls.append(model)
        steps = self.scripts[model]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, BaseException):
            raise step
        if step == "hang":
            await asyncio.sleep(3600)
        return step

    async def complete(self, request: ChatRequest) -> ChatResponse:
        text = await self._step(request.model)
        return ChatResponse.of(request.model, text, None, Usage(completion_tokens=1))

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        text = await self._step(request.model)
        for word in text.split(" "):
            if word == "BREAK":
                raise ProviderError("the upstream dropped the stream", retryable=True)
            yield ChatChunk(delta=word + " ")
        yield ChatChunk(finish_reason="stop")


def client_for(
    provider: Script,
    *,
    fallbacks: dict[str, list[str]] | None = None,
    events: EventBus | None = None,
    **policy: float,
) -> LLMClient:
    settings = {"attempt_timeout": 5.0, "deadline": 10.0, "retry_delay": 0.01, **policy}
    return LLMClient(
        {"script": provider},
        default_model=next(iter(provider.scripts)),
        timeout=settings["attempt_timeout"],
        events=events,
        policy=RoutePolicy(**settings),  # type: ignore[arg-type]
        fallbacks=fallbacks,
    )


def ask(model: str) -> ChatRequest:
    return ChatRequest(model=model, messages=[Message(role="user", content="hi")], user="usr_1")


async def answer(client: LLMClient, model: str, mode: str) -> str:
    if mode == "complete":
        return (await client.complete(ask(model))).message.content
    return "".join([chunk.delta async for chunk in client.stream(ask(model))]).strip()


def upstream(status: int) -> ProviderError:
    return ProviderError(
        f"upstream answered {status}", retryable=status >= 500, upstream_status=status
    )


MODES = pytest.mark.parametrize("mode", ["complete", "stream"])


@MODES
async def test_a_5xx_is_retried_until_it_succeeds(mode: str) -> None:
    provider = Script({"a": [upstream(500), upstream(503), "fine"]})
    bus = EventBus()
    client = client_for(provider, events=bus)
    await client.start()
    with bus.subscribe(lambda e: isinstance(e, Status)) as seen:
        assert await answer(client, "a", mode) == "fine"
        events = [e async for e in _pending(seen)]
    assert provider.calls == ["a", "a", "a"]
    assert [e.state for e in events] == ["retrying", "retrying"]
    assert all(e.owner == "usr_1" for e in events)
    assert "try 2 of 3" in events[0].detail


@MODES
async def test_a_client_error_is_not_retried(mode: str) -> None:
    provider = Script({"a": [upstream(400), "never"]})
    client = client_for(provider)
    await client.start()
    with pytest.raises(ProviderError, match="answered 400"):
        await answer(client, "a", mode)
    assert provider.calls == ["a"]


@MODES
async def test_retries_are_bounded_then_the_last_error_is_raised(mode: str) -> None:
    provider = Script({"a": [upstream(502)]})
    client = client_for(provider, retries=2)
    await client.start()
    with pytest.raises(ProviderError, match="answered 502"):
        await answer(client, "a", mode)
    assert provider.calls == ["a"] * 3


async def test_retry_after_is_honoured_and_a_long_one_is_not_waited_for() -> None:
    waits: list[float] = []
    provider = Script({"a": [ProviderRateLimitedError("slow down", retry_after=0.2), "ok"]})
    client = client_for(provider)
    await client.start()
    real_sleep = client.router._sleep

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(0)

    client.router._sleep = sleep
    assert await answer(client, "a", "complete") == "ok"
    assert waits == [0.2]
    # An upstream asking for longer than retry_max_delay is not waited for.
    provider.scripts["a"] = [ProviderRateLimitedError("slow down", retry_after=60), "ok"]
    provider.calls.clear()
    with pytest.raises(ProviderRateLimitedError):
        await answer(client, "a", "complete")
    assert provider.calls == ["a"]
    assert waits == [0.2]


@MODES
async def test_the_chain_falls_back_and_says_so(mode: str) -> None:
    provider = Script({"a": [upstream(500)], "b": [upstream(500)], "c": ["from c"]})
    bus = EventBus()
    client = client_for(provider, fallbacks={"a": ["b", "c"]}, events=bus, retries=1)
    await client.start()
    with bus.subscribe(lambda e: isinstance(e, Status)) as seen:
        assert await answer(client, "a", mode) == "from c"
        events = [e async for e in _pending(seen)]
    assert provider.calls == ["a", "a", "b", "b", "c"]
    assert [e.state for e in events] == ["retrying", "fallback", "retrying", "fallback"]
    assert "trying b" in events[1].detail
    assert "trying c" in events[3].detail


async def test_the_reply_names_the_model_that_answered() -> None:
    provider = Script({"a": [upstream(500)], "b": ["from b"]})
    client = client_for(provider, fallbacks={"a": ["b"]}, retries=0)
    await client.start()
    response = await client.complete(ask("a"))
    assert response.model == "b"
    assert response.message.content == "from b"


@MODES
async def test_a_context_overflow_falls_back_without_retrying(mode: str) -> None:
    overflow = ContextWindowExceededError("too long", upstream_status=400)
    provider = Script({"small": [overflow], "large": ["fits"]})
    client = client_for(provider, fallbacks={"small": ["large"]})
    await client.start()
    assert await answer(client, "small", mode) == "fits"
    assert provider.calls == ["small", "large"]


@MODES
async def test_a_refusal_is_not_a_provider_failure(mode: str) -> None:
    provider = Script({"a": [InvalidRequestError("bad tools")], "b": ["never"]})
    client = client_for(provider, fallbacks={"a": ["b"]})
    await client.start()
    with pytest.raises(InvalidRequestError):
        await answer(client, "a", mode)
    assert provider.calls == ["a"]
    assert client.router.breakers["a"].failures == 0


@MODES
async def test_a_hanging_upstream_times_out_and_falls_back_within_the_deadline(mode: str) -> None:
    provider = Script({"a": [upstream(500), "hang"], "b": ["rescued"]})
    client = client_for(provider, fallbacks={"a": ["b"]}, attempt_timeout=0.2, retries=1)
    await client.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await answer(client, "a", mode) == "rescued"
    assert loop.time() - started < 5  # one 0.2 s attempt timeout and a short back-off
    assert provider.calls == ["a", "a", "b"]


@MODES
async def test_the_deadline_bounds_the_whole_chain(mode: str) -> None:
    provider = Script({"a": ["hang"], "b": ["hang"]})
    client = client_for(provider, fallbacks={"a": ["b"]}, attempt_timeout=5, deadline=0.3)
    await client.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ProviderTimeoutError, match="deadline"):
        await answer(client, "a", mode)
    assert loop.time() - started < 3
    assert provider.calls == ["a"]  # the first attempt used the whole deadline


@MODES
async def test_an_open_breaker_skips_its_model_and_shows_in_health(mode: str) -> None:
    provider = Script({"a": [upstream(503)], "b": ["from b"]})
    client = client_for(
        provider, fallbacks={"a": ["b"]}, retries=0, breaker_failures=2, breaker_reset=60
    )
    await client.start()
    assert (await client.health()).status == "ok"
    for _ in range(2):
        assert await answer(client, "a", mode) == "from b"
    assert provider.calls == ["a", "b", "a", "b"]
    health = await client.health()
    assert health.status == "degraded"
    assert "a (" in health.detail
    provider.calls.clear()
    assert await answer(client, "a", mode) == "from b"
    assert provider.calls == ["b"]  # "a" was not called while its breaker is open


async def test_an_open_breaker_without_fallback_fails_fast() -> None:
    provider = Script({"a": [upstream(503)]})
    client = client_for(provider, retries=0, breaker_failures=1, breaker_reset=60)
    await client.start()
    with pytest.raises(ProviderError):
        await answer(client, "a", "complete")
    with pytest.raises(CircuitOpenError) as caught:
        await answer(client, "a", "complete")
    assert caught.value.status == 503
    assert caught.value.retry_after
    assert provider.calls == ["a"]


async def test_a_stream_that_fails_after_its_first_chunk_is_not_replayed() -> None:
    provider = Script({"a": ["one two BREAK three"], "b": ["never"]})
    client = client_for(provider, fallbacks={"a": ["b"]})
    await client.start()
    received: list[str] = []

    async def read() -> None:
        async for chunk in client.stream(ask("a")):
            received.append(chunk.delta)

    with pytest.raises(ProviderError, match="dropped"):
        await read()
    assert received == ["one ", "two "]  # what was sent stays sent; no second model starts
    assert provider.calls == ["a"]
    assert client.router.breakers["a"].failures == 1


async def test_a_fallback_to_an_unknown_model_is_a_config_error() -> None:
    client = client_for(Script({"a": ["x"]}), fallbacks={"a": ["nope"]})
    with pytest.raises(ConfigError, match=r"llm\.fallbacks\.a") as caught:
        await client.start()
    assert "nope" in str(caught.value)


async def test_a_cancelled_request_stops_the_attempt_and_is_not_a_failure() -> None:
    provider = Script({"a": ["hang"]})
    client = client_for(provider, breaker_failures=1)
    await client.start()
    task = asyncio.ensure_future(client.complete(ask("a")))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.router.breakers["a"].state == "closed"
    assert provider.calls == ["a"]


async def _pending(subscription: Subscription) -> AsyncIterator[Status]:
    subscription.close()
    async for event in subscription:
        if isinstance(event, Status):
            yield event


@MODES
async def test_a_request_the_upstream_refuses_as_such_is_a_400_without_fallback(mode: str) -> None:
    provider = Script({"a": [upstream(400)], "b": ["never"]})
    client = client_for(provider, fallbacks={"a": ["b"]}, breaker_failures=1)
    await client.start()
    for _ in range(3):
        with pytest.raises(ProviderRequestError) as caught:
            await answer(client, "a", mode)
        assert caught.value.status == 400
        assert caught.value.upstream_status == 400
    assert provider.calls == ["a"] * 3  # never retried, never sent to the fallback
    assert client.router.breaker_state("a") == "closed"  # the upstream answered: not its fault


async def test_a_streamed_reply_is_priced_at_the_model_that_answered() -> None:
    class Priced(Script):
        async def list_models(self) -> Sequence[ModelInfo]:
            return [
                ModelInfo(
                    id=name,
                    provider="script",
                    input_cost_per_token=Decimal(price),
                    output_cost_per_token=Decimal(price),
                )
                for name, price in (("cheap", "0.000001"), ("dear", "0.0001"))
            ]

        async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
            await self._step(request.model)
            yield ChatChunk(delta="hello")
            yield ChatChunk(
                finish_reason="stop", usage=Usage(prompt_tokens=10, completion_tokens=5)
            )

    provider = Priced({"cheap": [upstream(500)], "dear": ["ok"]})
    client = client_for(provider, fallbacks={"cheap": ["dear"]}, retries=0)
    await client.start()
    chunks = [chunk async for chunk in client.stream(ask("cheap"))]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.cost == Decimal("0.0015")  # 15 tokens at dear's price, exactly


async def test_models_on_one_upstream_share_a_breaker() -> None:
    class Shared(Script):
        async def list_models(self) -> Sequence[ModelInfo]:
            hosts = {"a": "http://one", "b": "http://one", "c": "http://two"}
            return [ModelInfo(id=n, provider="script", upstream=hosts[n]) for n in self.scripts]

    provider = Shared({"a": [upstream(503)], "b": ["never"], "c": ["from c"]})
    client = client_for(
        provider, fallbacks={"b": ["c"]}, retries=0, breaker_failures=2, breaker_reset=60
    )
    await client.start()
    for _ in range(2):
        with pytest.raises(ProviderError):
            await answer(client, "a", "complete")
    # "b" never failed, but its upstream did: it is skipped, and its fallback on another
    # upstream answers.
    assert await answer(client, "b", "complete") == "from c"
    assert provider.calls == ["a", "a", "c"]
    health = await client.health()
    assert health.status == "degraded"
    assert "a, b (" in health.detail
    assert client.router.breaker_state("c") == "closed"
