"""``hubbub.testing`` for plugin authors: a test loads only the plugins it names (built-ins by
default, never a third-party plugin merely installed), a plugin object registered for one test is
gone in the next, and ``FakeLLM`` answers with the replies, tool calls, errors and delays a test
scripts, recording every request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from hubbub import hookimpl
from hubbub.config import Config
from hubbub.errors import PluginError, ProviderError, ProviderTimeoutError, UnknownModelError
from hubbub.models import ChatChunk, ChatRequest, Message, ToolCall
from hubbub.registry import ComponentContext, Registrar
from hubbub.runtime import Runtime
from hubbub.testing import (
    FakeLLM,
    ScriptExhausted,
    builtin_plugins,
    config_for,
    delay,
    error,
    principal,
    reply,
    runtime_for,
    tool_call,
)
from hubbub.tools import StaticToolProvider, function_tools

WITHOUT_TOOLS = ["api_keys", "log_sink", "memory_cache", "offline_provider", "sqlite_store"]
"""What the default configuration needs, minus ``basic_tools``."""


class Greeter:
    """A plugin object defined in a test: the tool ``greet``."""

    __name__ = "greeter"

    @hookimpl
    def register_tools(self, register: Registrar) -> None:
        async def greet(name: str) -> str:
            """Greet someone."""
            return f"Hello, {name}!"

        def build(context: ComponentContext[Any]) -> StaticToolProvider:
            return function_tools(greet)

        register("greeter", build)


def tool_names(runtime: Runtime) -> set[str]:
    return {spec.name for spec in runtime.tools.specs()}


def ask(text: str, model: str = "") -> ChatRequest:
    return ChatRequest(model=model, messages=[Message(role="user", content=text)])


async def stream(runtime: Runtime, request: ChatRequest) -> list[ChatChunk]:
    return [chunk async for chunk in runtime.llm.stream(request)]


# -- loading only what a test names ----------------------------------------------------------


def test_the_builtins_are_the_hubbub_distributions_entry_points() -> None:
    assert set(WITHOUT_TOOLS) | {"basic_tools"} <= set(builtin_plugins())


async def test_by_default_exactly_the_builtins_load(hubbub_runtime: Runtime) -> None:
    info = hubbub_runtime.plugins.info
    assert sorted(info) == builtin_plugins()
    assert {plugin.source for plugin in info.values()} == {"built-in"}
    assert "basic.calculator" in tool_names(hubbub_runtime)


class TestNamedPlugins:
    @pytest.fixture
    def hubbub_plugins(self) -> list[str]:
        return WITHOUT_TOOLS

    async def test_only_the_named_entry_points_load(self, hubbub_runtime: Runtime) -> None:
        assert sorted(hubbub_runtime.plugins.info) == WITHOUT_TOOLS
        assert "basic.calculator" not in tool_names(hubbub_runtime)
        assert "tools.basic" not in (await hubbub_runtime.health()).components

    async def test_the_client_adds_the_servers_own_plugin(
        self, hubbub_runtime: Runtime, hubbub_client: httpx.AsyncClient
    ) -> None:
        assert sorted(hubbub_runtime.plugins.info) == sorted([*WITHOUT_TOOLS, "server"])
        tools = (await hubbub_client.get("/api/tools")).json()["tools"]
        assert "basic.calculator" not in [tool["name"] for tool in tools]


async def test_a_misspelled_plugin_name_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        PluginError, match=r"'ofline_provider' \(did you mean 'offline_provider'\?\)"
    ):
        async with runtime_for(config_for(tmp_path), plugins=["ofline_provider"]):
            pass


class TestExtraPlugin:
    @pytest.fixture
    def hubbub_extra_plugins(self) -> list[object]:
        return [Greeter()]

    async def test_a_plugin_object_is_registered_for_the_test(
        self, hubbub_runtime: Runtime
    ) -> None:
        assert hubbub_runtime.plugins.info["greeter"].source == "registered"
        assert "greeter.greet" in tool_names(hubbub_runtime)


async def test_a_plugin_object_of_another_test_is_not_registered(hubbub_runtime: Runtime) -> None:
    assert "greeter" not in hubbub_runtime.plugins.info
    assert "greeter.greet" not in tool_names(hubbub_runtime)


async def test_runtimes_share_no_plugins(tmp_path: Path) -> None:
    async with (
        runtime_for(config_for(tmp_path / "a"), [Greeter()]) as with_greeter,
        runtime_for(config_for(tmp_path / "b")) as without,
    ):
        assert "greeter.greet" in tool_names(with_greeter)
        assert "greeter.greet" not in tool_names(without)


@pytest.fixture
def acme_installed(acme_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The third-party distribution ``acme-hubbub`` (entry point ``acme``) is importable."""
    monkeypatch.syspath_prepend(str(acme_site))


class TestThirdPartyInstalled:
    @pytest.fixture
    def hubbub_plugins(self, acme_installed: None) -> list[str]:
        return builtin_plugins()

    async def test_it_is_not_loaded_unless_named(self, hubbub_runtime: Runtime) -> None:
        assert "acme" not in builtin_plugins()
        assert "acme" not in hubbub_runtime.plugins.info
        assert "acme" not in hubbub_runtime.plugins.registries()["cache"]

    async def test_naming_it_loads_it_from_its_distribution(
        self, acme_installed: None, tmp_path: Path
    ) -> None:
        config = config_for(tmp_path / "acme", '[cache]\nbackend = "acme"\n')
        async with runtime_for(config, plugins=[*builtin_plugins(), "acme"]) as runtime:
            info = runtime.plugins.info["acme"]
            assert (info.source, info.version, info.error) == ("acme-hubbub", "1.2.3", None)
            assert sorted(runtime.plugins.info) == sorted([*builtin_plugins(), "acme"])


# -- the fake LLM ----------------------------------------------------------------------------


async def test_a_scripted_reply_completes_and_streams(
    hubbub_runtime: Runtime, hubbub_fake_llm: FakeLLM
) -> None:
    hubbub_fake_llm.script(reply("Hello there, tester."), reply("Hi", chunks=["H", "i"]))
    assert hubbub_runtime.llm.default_model == "fake/model"

    response = await hubbub_runtime.llm.complete(ask("hello"))
    assert (response.model, response.message.content) == ("fake/model", "Hello there, tester.")
    assert response.finish_reason == "stop"

    chunks = await stream(hubbub_runtime, ask("again"))
    assert [chunk.delta for chunk in chunks] == ["H", "i", ""]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage is not None

    assert [request.messages[-1].content for request in hubbub_fake_llm.requests] == [
        "hello",
        "again",
    ]
    assert hubbub_fake_llm.pending == []


async def test_text_streams_word_by_word(hubbub_runtime: Runtime, hubbub_fake_llm: FakeLLM) -> None:
    hubbub_fake_llm.script(reply("one two  three "))
    deltas = [chunk.delta for chunk in await stream(hubbub_runtime, ask("count"))]
    assert deltas == ["one", " two", "  three", " ", ""]


async def test_the_engine_runs_a_scripted_tool_call_and_answers_from_it(
    hubbub_runtime: Runtime, hubbub_fake_llm: FakeLLM
) -> None:
    hubbub_fake_llm.script(
        tool_call("basic.calculator", {"expression": "6 * 7"}, call_id="call_1"),
        lambda request: reply(f"It is {request.messages[-1].content}."),
    )
    me = principal()
    conversation = await hubbub_runtime.conversations.create(me)
    _, answer = await hubbub_runtime.conversations.post_message(
        me, conversation.id, "What is 6 * 7?", wait=True
    )
    assert answer is not None
    assert answer.content == "It is 42."

    first, second = hubbub_fake_llm.requests
    assert "basic.calculator" in [spec.name for spec in first.tools or ()]
    assert first.metadata["conversation_id"] == conversation.id
    result = second.messages[-1]
    assert (result.role, result.content, result.tool_call_id) == ("tool", "42", "call_1")
    assert second.messages[-2].tool_calls == [
        ToolCall(id="call_1", name="basic.calculator", arguments='{"expression":"6 * 7"}')
    ]
    stored = (await hubbub_runtime.conversations.messages(me, conversation.id)).items
    assert [message.role for message in stored] == ["user", "assistant", "tool", "assistant"]


@pytest.mark.parametrize(
    ("step", "raised", "message"),
    [
        (error("provider_timeout"), ProviderTimeoutError, "fake LLM error"),
        (error(UnknownModelError, "gone"), UnknownModelError, "gone"),
        (error(RuntimeError("boom")), ProviderError, "'fake/model' failed: boom"),
    ],
)
async def test_a_scripted_error_surfaces_as_its_hubbub_error(
    hubbub_runtime: Runtime,
    hubbub_fake_llm: FakeLLM,
    step: Any,
    raised: type[Exception],
    message: str,
) -> None:
    hubbub_fake_llm.script(step, step)
    with pytest.raises(raised, match=message) as complete_error:
        await hubbub_runtime.llm.complete(ask("hi"))
    assert type(complete_error.value) is raised
    with pytest.raises(raised, match=message) as stream_error:
        await stream(hubbub_runtime, ask("hi"))
    assert type(stream_error.value) is raised


async def test_a_stream_can_fail_part_way(
    hubbub_runtime: Runtime, hubbub_fake_llm: FakeLLM
) -> None:
    hubbub_fake_llm.script(error("provider_error", "lost", partial="Half an"))
    received: list[str] = []

    async def read() -> None:
        async for chunk in hubbub_runtime.llm.stream(ask("hi")):
            received.append(chunk.delta)

    with pytest.raises(ProviderError, match="lost"):
        await read()
    assert received == ["Half", " an"]


def test_unknown_error_codes_and_mismatched_chunks_are_refused() -> None:
    with pytest.raises(ValueError, match="did you mean 'provider_timeout'"):
        error("provider_timout")
    with pytest.raises(ValueError, match="do not join"):
        reply("Hello", chunks=["Hel", "p"])


class TestTinyTimeout:
    @pytest.fixture
    def hubbub_config(self, tmp_path: Path) -> Config:
        return config_for(tmp_path, "[llm]\nrequest_timeout = 0.05\n")

    async def test_a_delay_past_the_timeout_fails_the_request(
        self, hubbub_runtime: Runtime, hubbub_fake_llm: FakeLLM
    ) -> None:
        hubbub_fake_llm.script(delay(30), reply("too late"))
        with pytest.raises(ProviderTimeoutError, match="did not answer within"):
            await hubbub_runtime.llm.complete(ask("hi"))

    async def test_a_delay_between_chunks_fails_the_stream(
        self, hubbub_runtime: Runtime, hubbub_fake_llm: FakeLLM
    ) -> None:
        hubbub_fake_llm.script(reply("slow words", delay=30))
        # The first chunk is late already: the stream fails before it starts.
        with pytest.raises(ProviderTimeoutError, match=r"did not answer within 0\.05 s"):
            await stream(hubbub_runtime, ask("hi"))

    async def test_a_short_delay_is_only_a_pause(
        self, hubbub_runtime: Runtime, hubbub_fake_llm: FakeLLM
    ) -> None:
        hubbub_fake_llm.script(delay(0.001), reply("ok", delay=0.001))
        assert (await hubbub_runtime.llm.complete(ask("hi"))).message.content == "ok"


async def test_running_out_of_script_is_an_assertion_error(
    hubbub_runtime: Runtime, hubbub_fake_llm: FakeLLM
) -> None:
    hubbub_fake_llm.script(reply("only one"))
    await hubbub_runtime.llm.complete(ask("first"))
    with pytest.raises(AssertionError, match=r"request 2 .*'second'.*no step left \(1 scripted\)"):
        await hubbub_runtime.llm.complete(ask("second"))
    with pytest.raises(ScriptExhausted, match="expected another reply"):
        await stream(hubbub_runtime, ask("third"))
    assert len(hubbub_fake_llm.requests) == 3


class TestConfiguredDefaultModel:
    @pytest.fixture
    def hubbub_config(self, tmp_path: Path) -> Config:
        return config_for(
            tmp_path, '[llm]\ndefault_model = "offline/tools"\nproviders = ["offline"]\n'
        )

    async def test_the_fake_joins_without_taking_over(
        self, hubbub_runtime: Runtime, hubbub_fake_llm: FakeLLM
    ) -> None:
        assert hubbub_runtime.llm.default_model == "offline/tools"
        hubbub_fake_llm.script(reply("scripted"))
        response = await hubbub_runtime.llm.complete(ask("hi", model="fake/model"))
        assert response.message.content == "scripted"


async def test_a_fake_is_a_plugin_object_like_any_other(tmp_path: Path) -> None:
    fake = FakeLLM(reply("from the script"), name="scripted", models=["a", "b"])
    async with runtime_for(config_for(tmp_path), [fake]) as runtime:
        assert runtime.llm.default_model == "offline/echo"
        assert {"scripted/a", "scripted/b"} <= {model.id for model in runtime.llm.models()}
        response = await runtime.llm.complete(ask("hi", model="scripted/b"))
    assert response.message.content == "from the script"
    assert fake.requests[0].model == "scripted/b"


async def test_the_fake_answers_over_http(
    hubbub_client: httpx.AsyncClient, hubbub_fake_llm: FakeLLM
) -> None:
    hubbub_fake_llm.script(reply("Over the wire."))
    response = await hubbub_client.post(
        "/v1/chat/completions",
        json={"model": "fake/model", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Over the wire."


async def test_context_for_builds_a_factory_outside_a_runtime(tmp_path: Path) -> None:
    from hubbub.testing import context_for
    from hubbub_plugins.memory_cache import MemoryCacheSettings, register_cache_backends

    captured: list[Any] = []
    register_cache_backends(lambda name, factory, **kw: captured.append(factory))
    context = context_for(config_for(tmp_path), settings=MemoryCacheSettings(), name="memory")
    cache = captured[0](context)
    await cache.start()
    await cache.set("k", b"v")
    assert await cache.get("k") == b"v"
    await cache.aclose()
    assert context.logger.name == "hubbub.plugins.test"
    assert await context.tasks.aclose() == []
