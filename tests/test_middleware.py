"""Middleware around LLM requests and tool calls: order by priority on the way in and out, for
whole and streamed replies; changing, refusing and failing requests; streams closed early; the
pluggy hooks as one middleware; tool middleware."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
import pytest

from hubbub.config import ToolsConfig
from hubbub.contracts import CompleteNext, LLMMiddleware, StreamNext, ToolContext, ToolNext
from hubbub.errors import (
    PermissionDeniedError,
    ProviderError,
    ProviderTimeoutError,
    UnknownModelError,
)
from hubbub.events import EventBus, Subscription, UsageRecorded
from hubbub.llm import LLMClient
from hubbub.llm.streams import prime
from hubbub.middleware import (
    LLMCallbacks,
    LLMMiddlewareBase,
    ToolMiddlewareBase,
    chain_complete,
    chain_stream,
    chain_tool,
)
from hubbub.models import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Health,
    Message,
    ModelInfo,
    ToolCall,
    ToolResult,
    Usage,
)
from hubbub.runtime.hooks import HookMiddleware
from hubbub.tools import ToolRegistry, function_tools
from hubbub_plugins.offline_provider import OfflineProvider, OfflineSettings

MODES = ["complete", "stream"]


# -- helpers -----------------------------------------------------------------------------------


class Scripted:
    """An LLM provider (model ``test/words``) that answers ``words`` one chunk each, and fails
    with ``RuntimeError`` after ``fail_after`` chunks when told to."""

    def __init__(self, words: Sequence[str] = ("one ", "two ", "three"), fail_after: int = -1):
        self.words = list(words)
        self.fail_after = fail_after
        self.calls: list[str] = []
        self.log: list[str] | None = None

    async def start(self) -> None:
        pass

    async def health(self) -> Health:
        return Health()

    async def aclose(self) -> None:
        pass

    async def list_models(self) -> Sequence[ModelInfo]:
        return [ModelInfo(id="test/words", provider="test")]

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls.append(request.model)
        if self.fail_after >= 0:
            raise RuntimeError("the model fell over")
        return ChatResponse.of(request.model, "".join(self.words), None, Usage(total_tokens=3))

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        self.calls.append(request.model)
        try:
            for index, word in enumerate(self.words):
                if index == self.fail_after:
                    raise RuntimeError("the model fell over")
                yield ChatChunk(delta=word)
            yield ChatChunk(finish_reason="stop", usage=Usage(total_tokens=3))
        finally:
            if self.log is not None:
                self.log.append("provider closed")


class Recorder(LLMMiddlewareBase):
    """Appends ``enter``, ``error`` and ``exit`` events, with its name, to ``log``."""

    def __init__(self, name: str, log: list[str], priority: int = 0) -> None:
        self.name = name
        self.log = log
        self.priority = priority

    async def complete(self, request: ChatRequest, call_next: CompleteNext) -> ChatResponse:
        self.log.append(f"enter {self.name}")
        try:
            return await call_next(request)
        except Exception as exc:
            self.log.append(f"error {self.name} {type(exc).__name__}")
            raise
        finally:
            self.log.append(f"exit {self.name}")

    async def stream(self, request: ChatRequest, call_next: StreamNext) -> AsyncIterator[ChatChunk]:
        self.log.append(f"enter {self.name}")
        try:
            async for chunk in call_next(request):
                yield chunk
        except Exception as exc:
            self.log.append(f"error {self.name} {type(exc).__name__}")
            raise
        finally:
            self.log.append(f"exit {self.name}")


async def make_client(
    *middleware: LLMMiddleware, provider: Scripted | None = None, events: EventBus | None = None
) -> LLMClient:
    client = LLMClient(
        {"offline": OfflineProvider("offline", OfflineSettings()), "test": provider or Scripted()},
        default_model="offline/echo",
        timeout=5,
        middleware=middleware,
        events=events,
    )
    await client.start()
    return client


def ask(text: str = "hi", model: str = "offline/echo") -> ChatRequest:
    return ChatRequest(model=model, messages=[Message(role="user", content=text)])


async def reply(client: LLMClient, request: ChatRequest, mode: str) -> str:
    """The reply's text, whole or streamed."""
    if mode == "complete":
        return (await client.complete(request)).message.content
    return "".join([chunk.delta async for chunk in client.stream(request)])


def usages(bus: EventBus) -> Subscription:
    """A subscription to the bus's ``usage`` events."""
    return bus.subscribe(lambda event: isinstance(event, UsageRecorded))


async def drain(subscription: Subscription) -> list[UsageRecorded]:
    """Every ``usage`` event received so far."""
    subscription.close()
    return [event async for event in subscription if isinstance(event, UsageRecorded)]


# -- chains ------------------------------------------------------------------------------------


async def test_without_middleware_the_chains_are_the_handlers_themselves() -> None:
    async def complete(request: ChatRequest) -> ChatResponse:
        raise AssertionError

    async def stream(request: ChatRequest) -> AsyncIterator[ChatChunk]:
        yield ChatChunk()

    async def tool(call: ToolCall, context: ToolContext) -> ToolResult:
        raise AssertionError

    assert chain_complete([], complete) is complete
    assert chain_stream([], stream) is stream
    assert chain_tool([], tool) is tool

    class OnlyComplete(LLMMiddlewareBase):
        async def complete(self, request: ChatRequest, call_next: CompleteNext) -> ChatResponse:
            return await call_next(request)

    # A method left as the base class's pass-through adds no layer.
    assert chain_stream([OnlyComplete(), LLMMiddlewareBase()], stream) is stream
    assert chain_complete([LLMMiddlewareBase()], complete) is complete
    assert chain_complete([OnlyComplete()], complete) is not complete
    assert chain_tool([ToolMiddlewareBase()], tool) is tool


def test_a_stream_method_written_as_a_coroutine_is_refused_when_the_chain_is_built() -> None:
    class Mistaken(LLMMiddlewareBase):
        async def stream(  # type: ignore[override]
            self, request: ChatRequest, call_next: StreamNext
        ) -> ChatChunk:
            raise AssertionError  # pragma: no cover

    async def handler(request: ChatRequest) -> AsyncIterator[ChatChunk]:
        yield ChatChunk()  # pragma: no cover

    with pytest.raises(TypeError, match=r"Mistaken\.stream is a coroutine function"):
        chain_stream([Mistaken()], handler)  # type: ignore[list-item]


@pytest.mark.parametrize("mode", MODES)
async def test_lower_priority_is_outer_on_the_way_in_and_out(mode: str) -> None:
    log: list[str] = []
    client = await make_client(
        Recorder("10", log, priority=10), Recorder("0", log), Recorder("-5", log, priority=-5)
    )
    assert await reply(client, ask("hi"), mode) == "[offline echo] You said: hi"
    assert log == ["enter -5", "enter 0", "enter 10", "exit 10", "exit 0", "exit -5"]


@pytest.mark.parametrize("mode", MODES)
async def test_equal_priorities_keep_registration_order(mode: str) -> None:
    log: list[str] = []
    client = await make_client(
        Recorder("b", log), Recorder("a", log), Recorder("c", log), Recorder("z", log, priority=-1)
    )
    await reply(client, ask(), mode)
    assert log == [
        "enter z",
        "enter b",
        "enter a",
        "enter c",
        "exit c",
        "exit a",
        "exit b",
        "exit z",
    ]


class Reroute(LLMMiddlewareBase):
    """Sends every request to ``offline/tools``: in place for whole replies, as a new request
    for streams."""

    async def complete(self, request: ChatRequest, call_next: CompleteNext) -> ChatResponse:
        request.model = "offline/tools"
        return await call_next(request)

    async def stream(self, request: ChatRequest, call_next: StreamNext) -> AsyncIterator[ChatChunk]:
        async for chunk in call_next(msgspec.structs.replace(request, model="offline/tools")):
            yield chunk


@pytest.mark.parametrize("mode", MODES)
async def test_routing_follows_a_model_changed_by_middleware(mode: str) -> None:
    bus = EventBus()
    seen = usages(bus)
    client = await make_client(Reroute(), events=bus)
    text = await reply(client, ask("hi", model="offline/echo"), mode)
    assert text.startswith("[offline tools]")
    assert [event.model for event in await drain(seen)] == [
        "offline/tools"
    ]  # what the provider served


@pytest.mark.parametrize("mode", MODES)
async def test_an_empty_model_is_the_default_before_the_middleware_see_it(mode: str) -> None:
    models: list[str] = []

    class Look(LLMCallbacks):
        async def before(self, request: ChatRequest) -> None:
            models.append(request.model)

    client = await make_client(Look())
    assert await reply(client, ask("hi", model=""), mode) == "[offline echo] You said: hi"
    assert models == ["offline/echo"]


class Refuse(LLMCallbacks):
    priority = 5

    async def before(self, request: ChatRequest) -> None:
        raise PermissionDeniedError("not today")


async def test_a_refusal_is_raised_before_the_provider_is_called() -> None:
    provider, bus = Scripted(), EventBus()
    seen = usages(bus)
    log: list[str] = []
    client = await make_client(Recorder("outer", log), Refuse(), provider=provider, events=bus)
    with pytest.raises(PermissionDeniedError, match="not today"):
        await client.complete(ask(model="test/words"))
    with pytest.raises(PermissionDeniedError, match="not today"):
        await client.open_stream(ask(model="test/words"))
    assert provider.calls == []
    assert await drain(seen) == []  # no provider call, no usage
    assert log == ["enter outer", "error outer PermissionDeniedError", "exit outer"] * 2


@pytest.mark.parametrize(
    ("provider", "model", "error"),
    [
        (Scripted(), "nope/none", UnknownModelError),
        (Scripted(fail_after=0), "test/words", ProviderError),
    ],
)
async def test_open_stream_raises_before_returning_the_stream(
    provider: Scripted, model: str, error: type[Exception]
) -> None:
    log: list[str] = []
    client = await make_client(Recorder("m", log), provider=provider)
    with pytest.raises(error):
        await client.open_stream(ask(model=model))
    assert log == ["enter m", f"error m {error.__name__}", "exit m"]


async def test_open_stream_has_waited_for_the_first_chunk() -> None:
    provider = Scripted()
    client = await make_client(provider=provider)
    chunks = await client.open_stream(ask(model="test/words"))
    assert provider.calls == ["test/words"]  # the provider already answered
    assert [chunk.delta async for chunk in chunks] == ["one ", "two ", "three", ""]


async def test_a_stream_that_yields_nothing_primes_to_an_empty_stream() -> None:
    async def nothing() -> AsyncIterator[ChatChunk]:
        return
        yield ChatChunk()  # pragma: no cover

    assert [chunk async for chunk in await prime(nothing())] == []


@pytest.mark.parametrize("mode", MODES)
async def test_provider_failures_pass_through_every_except_in_order(mode: str) -> None:
    log: list[str] = []
    provider = Scripted(fail_after=1)  # a stream fails after its first chunk
    client = await make_client(
        Recorder("10", log, priority=10),
        Recorder("0", log),
        Recorder("-5", log, priority=-5),
        provider=provider,
    )
    with pytest.raises(ProviderError, match="the model fell over"):
        await reply(client, ask(model="test/words"), mode)
    assert log == [
        "enter -5",
        "enter 0",
        "enter 10",
        "error 10 ProviderError",
        "exit 10",
        "error 0 ProviderError",
        "exit 0",
        "error -5 ProviderError",
        "exit -5",
    ]


async def test_a_slow_provider_is_a_timeout_the_middleware_see() -> None:
    class Slow(Scripted):
        async def complete(self, request: ChatRequest) -> ChatResponse:
            await asyncio.sleep(1)
            raise AssertionError  # pragma: no cover

    log: list[str] = []
    client = await make_client(Recorder("m", log), provider=Slow())
    client.timeout = 0.01
    with pytest.raises(ProviderTimeoutError):
        await client.complete(ask(model="test/words"))
    assert log == ["enter m", "error m ProviderTimeoutError", "exit m"]


async def test_leaving_a_stream_early_closes_every_layer_innermost_first() -> None:
    log: list[str] = []
    provider = Scripted()
    provider.log = log
    bus = EventBus()
    seen = usages(bus)
    client = await make_client(
        Recorder("10", log, priority=10),
        Recorder("0", log),
        Recorder("-5", log, priority=-5),
        provider=provider,
        events=bus,
    )
    stream = client.stream(ask(model="test/words"))
    assert (await anext(stream)).delta == "one "
    log.append("reader leaves")
    await stream.aclose()  # what a client disconnecting does
    assert log == [
        "enter -5",
        "enter 0",
        "enter 10",
        "reader leaves",
        "provider closed",
        "exit 10",
        "exit 0",
        "exit -5",
    ]
    # Cut short, but still recorded: the provider reported nothing, so the client counted the
    # prompt ("hi": 1 token and a message's overhead of 4) and the reply so far ("one ").
    assert [event.usage for event in await drain(seen)] == [
        Usage(prompt_tokens=5, completion_tokens=2, total_tokens=7)
    ]


async def test_a_stream_dropped_without_closing_is_still_closed_in_order() -> None:
    log: list[str] = []
    provider = Scripted()
    provider.log = log
    client = await make_client(
        Recorder("outer", log), Recorder("inner", log, priority=1), provider=provider
    )
    chunks = await client.open_stream(ask(model="test/words"))
    assert (await anext(chunks)).delta == "one "
    del chunks  # a reader that forgets to close: the event loop finalizes the chain
    for _ in range(500):  # finalizing counts the reply's tokens: the loop turns a few times
        if "exit outer" in log:
            break
        await asyncio.sleep(0.01)
    assert log == ["enter outer", "enter inner", "provider closed", "exit inner", "exit outer"]


async def test_a_layer_that_stops_reading_early_closes_the_layers_inside_it() -> None:
    log: list[str] = []
    provider = Scripted()
    provider.log = log

    class FirstWordOnly(LLMMiddlewareBase):
        async def stream(
            self, request: ChatRequest, call_next: StreamNext
        ) -> AsyncIterator[ChatChunk]:
            async for chunk in call_next(request):
                yield chunk
                break  # no ``aclosing`` here: the chain closes what is left inside
            log.append("first word only done")

    client = await make_client(
        FirstWordOnly(), Recorder("inner", log, priority=1), provider=provider
    )
    chunks = [chunk.delta async for chunk in client.stream(ask(model="test/words"))]
    assert chunks == ["one "]
    assert log == ["enter inner", "first word only done", "provider closed", "exit inner"]


async def test_a_middleware_can_retry_with_a_fallback_model() -> None:
    class Fallback(LLMMiddlewareBase):
        async def stream(
            self, request: ChatRequest, call_next: StreamNext
        ) -> AsyncIterator[ChatChunk]:
            try:
                async for chunk in call_next(request):
                    yield chunk
            except ProviderError:
                async for chunk in call_next(
                    msgspec.structs.replace(request, model="offline/echo")
                ):
                    yield chunk

    bus = EventBus()
    seen = usages(bus)
    client = await make_client(Fallback(), provider=Scripted(fail_after=0), events=bus)
    text = await reply(client, ask("hi", model="test/words"), "stream")
    assert text == "[offline echo] You said: hi"
    # Only the model that produced a reply used tokens: the one that failed before its first
    # chunk (after the client's own retries) produced none.
    assert [event.model for event in await drain(seen)] == ["offline/echo"]


# -- callbacks and the pluggy hooks --------------------------------------------------------------


class Callbacks(LLMCallbacks):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def before(self, request: ChatRequest) -> None:
        self.seen.append(("before", request.model))

    async def after(self, request: ChatRequest, response: ChatResponse) -> None:
        self.seen.append(("after", f"{response.finish_reason}: {response.message.content}"))

    async def on_error(self, request: ChatRequest, exc: BaseException) -> None:
        self.seen.append(("on_error", type(exc).__name__))


@pytest.mark.parametrize("mode", MODES)
async def test_callbacks_pair_before_with_after(mode: str) -> None:
    callbacks = Callbacks()
    client = await make_client(callbacks)
    await reply(client, ask(model="test/words"), mode)
    assert callbacks.seen == [("before", "test/words"), ("after", "stop: one two three")]


@pytest.mark.parametrize("mode", MODES)
async def test_callbacks_pair_before_with_on_error(mode: str) -> None:
    callbacks = Callbacks()
    client = await make_client(callbacks, provider=Scripted(fail_after=1))
    with pytest.raises(ProviderError):
        await reply(client, ask(model="test/words"), mode)
    assert callbacks.seen == [("before", "test/words"), ("on_error", "ProviderError")]


async def test_callbacks_see_a_stream_the_reader_left_as_cancelled() -> None:
    callbacks = Callbacks()
    client = await make_client(callbacks)
    stream = client.stream(ask(model="test/words"))
    await anext(stream)
    await stream.aclose()
    assert callbacks.seen == [("before", "test/words"), ("after", "cancelled: one ")]


@pytest.mark.parametrize("mode", MODES)
async def test_a_cancelled_reader_is_seen_by_every_layer(mode: str) -> None:
    log: list[str] = []

    class Stuck(Scripted):
        async def complete(self, request: ChatRequest) -> ChatResponse:
            await asyncio.Event().wait()
            raise AssertionError  # pragma: no cover

        async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
            yield ChatChunk(delta="one ")
            await asyncio.Event().wait()

    callbacks = Callbacks()
    client = await make_client(Recorder("outer", log), callbacks, provider=Stuck())
    task = asyncio.create_task(reply(client, ask(model="test/words"), mode))
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["enter outer", "exit outer"]
    if mode == "complete":
        assert callbacks.seen == [("before", "test/words"), ("on_error", "CancelledError")]
    else:
        assert callbacks.seen == [("before", "test/words"), ("after", "cancelled: one ")]


def hook_callers(log: list[str], fail_after: bool = False) -> tuple[Any, Any]:
    """Stand-ins for the runtime's pluggy hook callers."""

    async def call_before(*, request: ChatRequest) -> None:
        log.append("before hook")
        request.messages.insert(0, Message(role="system", content="Be brief."))

    async def call_after(*, request: ChatRequest, response: ChatResponse) -> None:
        log.append(f"after hook {response.finish_reason}: {response.message.content}")
        if fail_after:
            raise RuntimeError("audit log full")

    return call_before, call_after


@pytest.mark.parametrize("mode", MODES)
async def test_the_hooks_run_in_their_place_in_the_chain(mode: str) -> None:
    log: list[str] = []
    roles: list[list[str]] = []

    class Look(LLMCallbacks):
        priority = 20

        async def before(self, request: ChatRequest) -> None:
            roles.append([m.role for m in request.messages])

    client = await make_client(
        Recorder("10", log, priority=10),
        HookMiddleware(*hook_callers(log)),
        Recorder("-5", log, priority=-5),
        Look(),
    )
    await reply(client, ask(model="test/words"), mode)
    assert log == [
        "enter -5",
        "before hook",
        "enter 10",
        "exit 10",
        "after hook stop: one two three",
        "exit -5",
    ]
    assert roles == [["system", "user"]]  # the hook changed the request further in


@pytest.mark.parametrize("mode", MODES)
async def test_after_hook_failures_are_logged_not_raised(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[str] = []
    client = await make_client(HookMiddleware(*hook_callers(log, fail_after=True)))
    with caplog.at_level(logging.ERROR, logger="hubbub.middleware"):
        assert await reply(client, ask(model="test/words"), mode) == "one two three"
    assert "after_llm_response hook failed" in caplog.text


async def test_before_hook_refuses_with_its_own_error() -> None:
    async def call_before(*, request: ChatRequest) -> None:
        raise PermissionDeniedError("this model is not for you")

    provider = Scripted()
    client = await make_client(HookMiddleware(call_before, None), provider=provider)
    with pytest.raises(PermissionDeniedError):
        await client.complete(ask(model="test/words"))
    with pytest.raises(PermissionDeniedError):
        await client.open_stream(ask(model="test/words"))
    assert provider.calls == []


async def test_after_hook_sees_streams_whole_or_not() -> None:
    log: list[str] = []
    middleware = HookMiddleware(None, hook_callers(log)[1])
    # Cut short by the reader.
    client = await make_client(middleware)
    stream = client.stream(ask(model="test/words"))
    await anext(stream)
    await stream.aclose()
    # Failed after its first chunk: a reply, partly delivered.
    client = await make_client(middleware, provider=Scripted(fail_after=1))
    with pytest.raises(ProviderError):
        await reply(client, ask(model="test/words"), "stream")
    # Failed before any chunk: no reply, as for a whole reply that fails.
    client = await make_client(middleware, provider=Scripted(fail_after=0))
    with pytest.raises(ProviderError):
        await reply(client, ask(model="test/words"), "stream")
    assert log == ["after hook cancelled: one ", "after hook error: one "]


# -- tool middleware ---------------------------------------------------------------------------


async def echo(text: str, secret: str = "") -> str:
    """Repeat the text (and the secret, which middleware should keep from tools)."""
    return f"{text} {secret}".strip()


class ToolRecorder(ToolMiddlewareBase):
    def __init__(self, name: str, log: list[str], priority: int = 0) -> None:
        self.name = name
        self.log = log
        self.priority = priority

    async def call_tool(
        self, call: ToolCall, context: ToolContext, call_next: ToolNext
    ) -> ToolResult:
        self.log.append(f"enter {self.name}")
        try:
            return await call_next(call, context)
        finally:
            self.log.append(f"exit {self.name}")


class Redact(ToolMiddlewareBase):
    """Drops ``secret`` from the arguments and masks it in results."""

    async def call_tool(
        self, call: ToolCall, context: ToolContext, call_next: ToolNext
    ) -> ToolResult:
        arguments = msgspec.json.decode(call.arguments)
        secret = arguments.pop("secret", None)
        call = msgspec.structs.replace(call, arguments=msgspec.json.encode(arguments).decode())
        result = await call_next(call, context)
        if secret:
            result = msgspec.structs.replace(result, content=result.content.replace(secret, "***"))
        return result


TOOLS = ToolsConfig(call_timeout=1)


async def make_registry(*middleware: Any) -> ToolRegistry:
    registry = ToolRegistry({"t": function_tools(echo)}, config=TOOLS, middleware=middleware)
    await registry.start()
    return registry


async def test_tool_middleware_run_in_priority_order() -> None:
    log: list[str] = []
    registry = await make_registry(
        ToolRecorder("10", log, priority=10), ToolRecorder("0", log), ToolRecorder("-5", log, -5)
    )
    result = await registry.call(
        ToolCall(id="c", name="t.echo", arguments='{"text": "hi"}'), ToolContext()
    )
    assert (result.content, result.is_error) == ("hi", False)
    assert log == ["enter -5", "enter 0", "enter 10", "exit 10", "exit 0", "exit -5"]


async def test_tool_middleware_can_redact_arguments() -> None:
    registry = await make_registry(Redact())
    call = ToolCall(id="c", name="t.echo", arguments='{"text": "hi", "secret": "hunter2"}')
    result = await registry.call(call, ToolContext())
    assert result.content == "hi"  # the tool never saw the secret
    assert (result.call_id, result.name) == ("c", "t.echo")


class Deny(ToolMiddlewareBase):
    """Refuses ``echo``: by returning an error result, or by raising when ``raise_`` is set."""

    def __init__(self, raise_: bool) -> None:
        self.raise_ = raise_

    async def call_tool(
        self, call: ToolCall, context: ToolContext, call_next: ToolNext
    ) -> ToolResult:
        if self.raise_:
            raise PermissionDeniedError(f"{call.name} needs approval")
        return ToolResult(
            call_id=call.id, name=call.name, content="error: needs approval", is_error=True
        )


@pytest.mark.parametrize("raise_", [False, True])
async def test_tool_middleware_can_refuse_a_call(raise_: bool) -> None:
    ran: list[str] = []

    async def spy(text: str) -> str:
        ran.append(text)
        return text

    registry = ToolRegistry({"t": function_tools(spy)}, config=TOOLS, middleware=[Deny(raise_)])
    await registry.start()
    result = await registry.call(
        ToolCall(id="c", name="t.spy", arguments='{"text": "x"}'), ToolContext()
    )
    assert result.is_error
    assert "needs approval" in result.content
    assert (result.call_id, result.name) == ("c", "t.spy")
    assert ran == []


async def test_a_broken_tool_middleware_is_a_result_not_an_exception() -> None:
    class Broken(ToolMiddlewareBase):
        async def call_tool(
            self, call: ToolCall, context: ToolContext, call_next: ToolNext
        ) -> ToolResult:
            raise KeyError("oops")

    registry = await make_registry(Broken())
    result = await registry.call(ToolCall(id="c", name="t.echo", arguments="{}"), ToolContext())
    assert result.is_error
    assert "KeyError" in result.content


async def test_tool_middleware_see_unknown_tools_as_error_results() -> None:
    seen: list[ToolResult] = []

    class Audit(ToolMiddlewareBase):
        async def call_tool(
            self, call: ToolCall, context: ToolContext, call_next: ToolNext
        ) -> ToolResult:
            result = await call_next(call, context)
            seen.append(result)
            return result

    registry = await make_registry(Audit())
    await registry.call(ToolCall(id="c", name="t.nope"), ToolContext())
    assert [(r.is_error, r.content) for r in seen] == [
        (True, "error: no tool named 't.nope' is available")
    ]
