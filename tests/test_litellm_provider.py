"""The litellm provider. Paid APIs cannot run here, so replies come from litellm's own
``mock_response`` / ``mock_tool_calls`` (a mock of the paid API, named as such); failures are
real: a closed loopback port, and a loopback server that accepts and never answers."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from openai_upstream import REPLY, OpenAIUpstream

from hubbub.config import Secret
from hubbub.errors import (
    ContextWindowExceededError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
)
from hubbub.models import ChatRequest, Message
from hubbub.runtime import Runtime
from hubbub_plugins.litellm_provider import (
    LiteLLMModel,
    LiteLLMProvider,
    LiteLLMSettings,
    _retry_after,
)

MOCKED = """
[llm]
providers = ["litellm"]
default_model = "mini"

[[plugins.litellm_provider.models]]
name = "mini"
model = "openai/gpt-4o-mini"
api_key = { env = "TEST_OPENAI_KEY" }
options = { mock_response = "Hello from the mocked API" }

[[plugins.litellm_provider.models]]
name = "mini-tools"
model = "openai/gpt-4o-mini"
api_key = "sk-test"

[[plugins.litellm_provider.models.options.mock_tool_calls]]
id = "call_1"
type = "function"
function = { name = "calculator", arguments = '{"expression": "1+1"}' }
"""


def request(model: str, text: str = "hi") -> ChatRequest:
    return ChatRequest(model=model, messages=[Message(role="user", content=text)])


@pytest.fixture
async def mocked(make_config: Callable[..., object]) -> AsyncIterator[Runtime]:
    from hubbub.plugins import load_plugins

    config = make_config(MOCKED, env={"TEST_OPENAI_KEY": "sk-from-env"})
    plugins = load_plugins(env={})
    async with Runtime.from_config(config, plugins=plugins) as runtime:  # type: ignore[arg-type]
        yield runtime


async def test_models_are_listed_with_their_names(mocked: Runtime) -> None:
    assert [m.id for m in mocked.llm.models()] == ["mini", "mini-tools"]
    assert {m.provider for m in mocked.llm.models()} == {"litellm"}


async def test_a_models_window_comes_from_litellms_bundled_table(mocked: Runtime) -> None:
    # gpt-4o-mini takes 128,000 input tokens: conversations are fitted to that, not to the
    # [context] context_window for models nobody describes (8,192)
    windows = {m.id: m.context_window for m in mocked.llm.models()}
    assert windows == {"mini": 128_000, "mini-tools": 128_000}
    assert mocked.conversations.context.window("mini") == 128_000


async def test_complete_returns_text_and_usage_unpriced(mocked: Runtime) -> None:
    provider = mocked.llm.providers["litellm"]
    response = await provider.complete(request("mini"))
    assert response.message.content == "Hello from the mocked API"
    assert response.usage.total_tokens > 0
    # the LLM client prices replies (from the price table), once: the provider does not
    assert response.usage.cost is None


async def test_stream_assembles_the_same_text(mocked: Runtime) -> None:
    chunks = [chunk async for chunk in mocked.llm.stream(request("mini"))]
    assert len([c for c in chunks if c.delta]) > 1
    assert "".join(c.delta for c in chunks) == "Hello from the mocked API"
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


async def test_tool_calls_come_back_as_hubbub_tool_calls(mocked: Runtime) -> None:
    response = await mocked.llm.complete(request("mini-tools"))
    (call,) = response.message.tool_calls or []
    assert (call.id, call.name, call.arguments) == ("call_1", "calculator", '{"expression": "1+1"}')


async def test_unreachable_provider_is_a_provider_error(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime("""
        [llm]
        providers = ["litellm"]
        default_model = "down"
        [[plugins.litellm_provider.models]]
        name = "down"
        model = "openai/gpt-4o-mini"
        api_key = "sk-test"
        api_base = "http://127.0.0.1:9/v1"
        options = { max_retries = 0 }
        """)
    async with runtime:
        with pytest.raises(ProviderError) as caught:
            await runtime.llm.complete(request("down"))
    assert "down" in str(caught.value)
    assert "Traceback" not in str(caught.value)


async def test_provider_that_never_answers_times_out(make_runtime: Callable[..., Runtime]) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    runtime = make_runtime(f"""
        [llm]
        providers = ["litellm"]
        default_model = "silent"
        request_timeout = 0.5
        retries = 0
        [[plugins.litellm_provider.models]]
        name = "silent"
        model = "openai/gpt-4o-mini"
        api_key = "sk-test"
        api_base = "http://127.0.0.1:{port}/v1"
        options = {{ max_retries = 0 }}
        """)
    try:
        async with runtime:
            with pytest.raises(ProviderTimeoutError):
                await runtime.llm.complete(request("silent"))
            with pytest.raises(ProviderTimeoutError):
                async for _ in runtime.llm.stream(request("silent")):
                    pass
        assert accepted, "the provider was really contacted"
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


def test_litellm_is_not_imported_without_models(tmp_path: object) -> None:
    code = (
        "import asyncio, sys\n"
        "from hubbub import Runtime, load_config\n"
        f"env = {{'HUBBUB_HOME': {str(tmp_path)!r}}}\n"
        "config = load_config(text='[auth]\\nmethods = []', env=env)\n"
        "async def main():\n"
        "    async with Runtime.from_config(config) as runtime:\n"
        "        assert 'litellm' in runtime.llm.providers\n"
        "asyncio.run(main())\n"
        "print('litellm' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


# -- against a real OpenAI-compatible upstream ---------------------------------------------


@pytest.fixture
async def upstream_provider(openai_upstream: OpenAIUpstream) -> AsyncIterator[LiteLLMProvider]:
    settings = LiteLLMSettings(
        models=[
            LiteLLMModel(
                name="lite",
                model="openai/gpt-4o-mini",
                api_base=openai_upstream.url,
                api_key=Secret("sk-upstream"),
            )
        ]
    )
    provider = LiteLLMProvider("litellm", settings)
    await provider.start()
    yield provider
    await provider.aclose()


async def test_litellm_does_not_retry_behind_hubbubs_back(
    openai_upstream: OpenAIUpstream, upstream_provider: LiteLLMProvider
) -> None:
    openai_upstream.script("status:500")
    with pytest.raises(ProviderError) as caught:
        await upstream_provider.complete(request("lite"))
    # one try: the LLM client's retries, back-off and deadline decide what comes next
    assert len(openai_upstream.chat_requests()) == 1
    assert caught.value.retryable is True
    assert caught.value.upstream_status == 500
    response = await upstream_provider.complete(request("lite"))
    assert response.message.content == REPLY


async def test_a_429_is_rate_limited_with_the_upstreams_retry_after(
    openai_upstream: OpenAIUpstream, upstream_provider: LiteLLMProvider
) -> None:
    openai_upstream.script("status:429:retry_after=3")
    with pytest.raises(ProviderRateLimitedError) as caught:
        await upstream_provider.complete(request("lite"))
    assert caught.value.retry_after == 3
    assert caught.value.retryable is True


def test_retry_after_is_read_in_milliseconds_seconds_or_as_a_date() -> None:
    def failure(headers: dict[str, str]) -> Exception:
        exc = Exception("rate limited")
        exc.response = httpx.Response(429, headers=headers)  # type: ignore[attr-defined]
        return exc

    assert _retry_after(failure({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    assert _retry_after(failure({"retry-after": "4"})) == 4
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    waited = _retry_after(failure({"retry-after": later}))
    assert waited is not None
    assert 100 < waited <= 121
    assert _retry_after(failure({"retry-after": "soon"})) is None
    assert _retry_after(failure({})) is None
    assert _retry_after(Exception("no response")) is None


async def test_the_user_is_not_sent_unless_asked_and_then_only_hashed(
    openai_upstream: OpenAIUpstream,
) -> None:
    settings = LiteLLMSettings(
        models=[
            LiteLLMModel(
                name=name,
                model="openai/gpt-4o-mini",
                api_base=openai_upstream.url,
                api_key=Secret("sk-upstream"),
                send_user=name == "told",
            )
            for name in ("quiet", "told")
        ]
    )
    provider = LiteLLMProvider("litellm", settings)
    await provider.start()
    try:
        for name in ("quiet", "told"):
            asked = ChatRequest(
                model=name, messages=[Message(role="user", content="hi")], user="alice"
            )
            await provider.complete(asked)
    finally:
        await provider.aclose()
    quiet, told = openai_upstream.chat_requests()
    assert "user" not in quiet.body
    assert told.body["user"] == hashlib.sha256(b"alice").hexdigest()[:32]
    assert b"alice" not in told.raw


async def test_a_context_overflow_is_its_own_error(
    openai_upstream: OpenAIUpstream, upstream_provider: LiteLLMProvider
) -> None:
    openai_upstream.script("context_overflow", "context_overflow")
    with pytest.raises(ContextWindowExceededError) as caught:
        await upstream_provider.complete(request("lite"))
    assert caught.value.retryable is False
    with pytest.raises(ContextWindowExceededError):
        async for _ in upstream_provider.stream(request("lite")):
            pass


async def test_a_client_error_is_final(
    openai_upstream: OpenAIUpstream, upstream_provider: LiteLLMProvider
) -> None:
    openai_upstream.script("status:404")
    with pytest.raises(ProviderError) as caught:
        await upstream_provider.complete(request("lite"))
    assert caught.value.retryable is False


async def test_a_refused_key_is_final_and_never_shown() -> None:
    with OpenAIUpstream(api_key="sk-right-key") as upstream:
        settings = LiteLLMSettings(
            models=[
                LiteLLMModel(
                    name="lite",
                    model="openai/gpt-4o-mini",
                    api_base=upstream.url,
                    api_key=Secret("sk-wrong-key-123456"),
                )
            ]
        )
        provider = LiteLLMProvider("litellm", settings)
        await provider.start()
        try:
            with pytest.raises(ProviderError) as caught:
                await provider.complete(request("lite"))
        finally:
            await provider.aclose()
    assert caught.value.retryable is False
    assert "refused the key" in str(caught.value)
    assert "sk-" not in str(caught.value)  # the upstream's 401 message quotes part of the key
