"""The runtime: start order, reverse stop order, timeouts, fallback, health, background tasks,
lifecycle and interception hooks."""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Callable
from typing import Any

import pytest
from support import Behaviour

from hubbub import hookimpl
from hubbub.errors import ComponentError, PluginError
from hubbub.events import Event
from hubbub.models import ChatRequest, ChatResponse, Health, Message
from hubbub.registry import Registrar
from hubbub.runtime import Runtime

KINDS_IN_ORDER = ["sink", "cache", "memory", "auth", "llm", "tools"]
FAST = "[runtime]\nstop_timeout = 0.2\nhealth_timeout = 0.2\n"


def labels(caplog: pytest.LogCaptureFixture, verb: str) -> list[str]:
    return [
        record.component  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "hubbub.runtime" and record.getMessage().startswith(f"{verb} ")
    ]


# -- order -------------------------------------------------------------------------------------


async def test_start_in_dependency_order_and_stop_in_reverse(
    recording_runtime: Callable[..., Runtime], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hubbub.runtime")
    log: list[str] = []
    runtime = recording_runtime(log)
    async with runtime:
        assert runtime.state == "running"
        assert log == [f"start {kind}" for kind in KINDS_IN_ORDER]
    assert log[len(KINDS_IN_ORDER) :] == [f"stop {kind}" for kind in reversed(KINDS_IN_ORDER)]
    assert runtime.state == "stopped"
    assert runtime.abandoned == []

    started = labels(caplog, "started")
    assert started == [
        "events",
        "events.rec",
        "cache",
        "memory",
        "sweeper",
        "auth.rec",
        "auth",
        "llm.rec",
        "llm",
        "tools.rec",
        "tools",
        "conversations",
    ]
    assert labels(caplog, "stopped") == list(reversed(started))


async def test_components_are_unavailable_before_start_and_after_stop(
    recording_runtime: Callable[..., Runtime],
) -> None:
    runtime = recording_runtime([])
    with pytest.raises(RuntimeError, match="it is new, not running"):
        runtime.cache  # noqa: B018
    async with runtime:
        assert runtime.conversations is not None
    with pytest.raises(RuntimeError, match="it is stopped, not running"):
        runtime.memory  # noqa: B018
    await runtime.stop()  # a second stop is harmless
    with pytest.raises(RuntimeError, match="a runtime starts once"):
        await runtime.start()


async def test_hanging_stop_is_abandoned_after_timeout(
    recording_runtime: Callable[..., Runtime],
) -> None:
    log: list[str] = []
    runtime = recording_runtime(log, runtime_toml=FAST, tools=Behaviour(hang_close=True))
    await runtime.start()
    began = time.perf_counter()
    await runtime.stop()
    elapsed = time.perf_counter() - began
    assert elapsed < 3.0
    assert runtime.abandoned == ["tools.rec"]
    # Everything else still stopped, in reverse order, after the one that hung.
    assert log[len(KINDS_IN_ORDER) :] == [f"stop {kind}" for kind in reversed(KINDS_IN_ORDER)]
    assert runtime.state == "stopped"


async def test_failed_start_stops_the_started_ones_in_reverse(
    recording_runtime: Callable[..., Runtime],
) -> None:
    log: list[str] = []
    runtime = recording_runtime(log, memory=Behaviour(fail_start=True))
    with pytest.raises(ComponentError) as caught:
        await runtime.start()
    assert str(caught.value) == (
        "memory 'rec' failed to start: RuntimeError: memory refuses to start (plugin 'rec')"
    )
    assert log == [
        "start sink",
        "start cache",
        "start memory",
        "stop memory",  # aclose() is called on the half-started component too
        "stop cache",
        "stop sink",
    ]
    assert runtime.state == "stopped"
    assert (await runtime.health()).status == "down"


async def test_failed_llm_provider_start_names_it(
    recording_runtime: Callable[..., Runtime],
) -> None:
    log: list[str] = []
    runtime = recording_runtime(log, llm=Behaviour(fail_start=True))
    with pytest.raises(ComponentError, match=r"^llm\.rec 'rec' failed to start: RuntimeError"):
        await runtime.start()
    assert log[-6:] == [
        "start llm",
        "stop llm",
        "stop auth",
        "stop memory",
        "stop cache",
        "stop sink",
    ]


async def test_start_timeout(recording_runtime: Callable[..., Runtime]) -> None:
    class SlowCache:
        async def start(self) -> None:
            await asyncio.sleep(3600)

        async def health(self) -> Health:
            return Health()

        async def aclose(self) -> None:
            pass

        get = set = delete = incr = add = compare_and_set = start

    slow = types.ModuleType("slow_plugin")
    slow.register_cache_backends = hookimpl(  # type: ignore[attr-defined]
        lambda register: register("slow", lambda context: SlowCache())
    )
    log: list[str] = []
    runtime = recording_runtime(
        log,
        slow,
        runtime_toml="[runtime]\nstart_timeout = 0.2\n",
        env={"HUBBUB_CACHE__BACKEND": "slow"},
    )
    began = time.perf_counter()
    with pytest.raises(ComponentError, match=r"^cache 'slow' did not start within 0\.2 s$"):
        await runtime.start()
    assert time.perf_counter() - began < 3.0
    assert log == ["start sink", "stop sink"]


# -- fallback and health -----------------------------------------------------------------------


class BrokenCachePlugin:
    """Registers cache backend ``broken``, which cannot start."""

    __name__ = "broken_cache"

    @hookimpl
    def register_cache_backends(self, register: Any) -> None:
        class Broken:
            closed = False

            async def start(self) -> None:
                raise ConnectionRefusedError("nobody listens on port 1")

            async def health(self) -> Health:
                return Health()

            async def aclose(self) -> None:
                pass

            get = set = delete = incr = add = compare_and_set = start

        register("broken", lambda context: Broken())


async def test_fallback_serves_when_the_primary_cannot_start(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime(
        '[cache]\nbackend = "broken"\nfallback = "memory"\n', BrokenCachePlugin()
    )
    async with runtime:
        await runtime.cache.set("k", b"v")
        assert await runtime.cache.get("k") == b"v"
        health = await runtime.health()
        assert health.status == "degraded"
        cache = health.components["cache"]
        assert cache.status == "degraded"
        assert cache.backend == "memory"
        assert cache.detail.startswith(
            "fallback serving because cache 'broken' failed to start: "
            "ConnectionRefusedError: nobody listens on port 1"
        )
        assert all(c.status == "ok" for name, c in health.components.items() if name != "cache")


async def test_without_fallback_the_primary_failure_is_fatal(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime('[cache]\nbackend = "broken"\n', BrokenCachePlugin())
    with pytest.raises(ComponentError, match="cache 'broken' failed to start"):
        await runtime.start()


async def test_health_ok_with_every_component_listed(
    recording_runtime: Callable[..., Runtime],
) -> None:
    async with recording_runtime([]) as runtime:
        health = await runtime.health()
    assert health.status == "ok"
    assert set(health.components) == {
        "events",
        "events.rec",
        "cache",
        "memory",
        "sweeper",
        "auth.rec",
        "auth",
        "llm.rec",
        "llm",
        "tools.rec",
        "tools",
        "conversations",
    }
    assert health.components["memory"].backend == "rec"
    assert all(c.latency_ms is not None for c in health.components.values())
    assert (await runtime.health()).status == "down"  # stopped


async def test_non_critical_tool_provider_failing_is_degraded(
    recording_runtime: Callable[..., Runtime],
) -> None:
    log: list[str] = []
    async with recording_runtime(log, tools=Behaviour(fail_start=True)) as runtime:
        health = await runtime.health()
        assert health.status == "degraded"
        tools = health.components["tools.rec"]
        assert tools.status == "down"
        assert "tools.rec 'rec' failed to start" in tools.detail
        assert runtime.tools.specs() == []
    assert "stop tools" in log  # closed after its failed start


async def test_critical_component_down_is_down(
    recording_runtime: Callable[..., Runtime],
) -> None:
    down = Behaviour(health=Health(status="down", detail="disk on fire"))
    async with recording_runtime([], memory=down) as runtime:
        health = await runtime.health()
    assert health.status == "down"
    assert health.components["memory"].status == "down"
    assert health.components["memory"].detail == "disk on fire"


async def test_non_critical_component_degraded_health_is_degraded(
    recording_runtime: Callable[..., Runtime],
) -> None:
    sick = Behaviour(health=Health(status="down", detail="tool server gone"))
    async with recording_runtime([], tools=sick) as runtime:
        health = await runtime.health()
    assert health.status == "degraded"
    assert health.components["tools.rec"].status == "down"


async def test_hanging_health_check_counts_as_down(
    recording_runtime: Callable[..., Runtime],
) -> None:
    async with recording_runtime(
        [], runtime_toml=FAST, cache=Behaviour(hang_health=True)
    ) as runtime:
        began = time.perf_counter()
        health = await runtime.health()
        assert time.perf_counter() - began < 2.0
    assert health.status == "down"
    assert health.components["cache"].status == "down"
    assert health.components["cache"].detail == "health check timed out"
    assert health.components["memory"].status == "ok"


async def test_raising_health_check_counts_as_down(
    recording_runtime: Callable[..., Runtime],
) -> None:
    async with recording_runtime([], tools=Behaviour(fail_health=True)) as runtime:
        health = await runtime.health()
    assert health.components["tools.rec"].status == "down"
    assert health.components["tools.rec"].detail == "health check failed: socket closed"
    assert health.status == "degraded"


async def test_slow_event_sink_drops_and_reports_degraded(
    recording_runtime: Callable[..., Runtime],
) -> None:
    async with recording_runtime([], env={"HUBBUB_EVENTS__QUEUE_SIZE": "2"}) as runtime:
        for _ in range(10):  # published without yielding: the sink cannot keep up
            runtime.events.publish(Event())
        health = await runtime.health()
    sink = health.components["events.rec"]
    assert sink.status == "degraded"
    assert "8 events dropped" in sink.detail
    assert health.status == "degraded"


# -- background tasks and lifecycle hooks ------------------------------------------------------


async def test_spawned_tasks_are_cancelled_on_stop(
    recording_runtime: Callable[..., Runtime],
) -> None:
    runtime = recording_runtime([])
    await runtime.start()
    task = runtime.spawn(asyncio.sleep(3600), name="sleeper")
    await asyncio.sleep(0)
    await runtime.stop()
    assert task.cancelled()
    assert runtime.abandoned == []


async def test_task_ignoring_cancellation_is_abandoned(
    recording_runtime: Callable[..., Runtime],
) -> None:
    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # refuses to stop promptly

    runtime = recording_runtime([], runtime_toml=FAST)
    await runtime.start()
    task = runtime.spawn(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    began = time.perf_counter()
    await runtime.stop()
    assert time.perf_counter() - began < 3.0
    assert runtime.abandoned == ["task stubborn"]
    await task


async def test_startup_and_shutdown_hooks_sync_and_async(
    recording_runtime: Callable[..., Runtime],
) -> None:
    calls: list[str] = []

    def on_startup(runtime: Runtime) -> None:
        calls.append(f"sync startup while {runtime.state}")

    async def on_startup_async(runtime: Runtime) -> None:
        await asyncio.sleep(0)
        await runtime.cache.set("warm", b"1")
        calls.append("async startup")

    async def on_shutdown_async(runtime: Runtime) -> None:
        await asyncio.sleep(0)
        calls.append(f"async shutdown, cache says {await runtime.cache.get('warm')!r}")

    def on_shutdown(runtime: Runtime) -> None:
        calls.append(f"sync shutdown while {runtime.state}")

    sync = types.ModuleType("sync_hooks")
    sync.on_startup = hookimpl(on_startup)  # type: ignore[attr-defined]
    sync.on_shutdown = hookimpl(on_shutdown)  # type: ignore[attr-defined]
    asynchronous = types.ModuleType("async_hooks")
    asynchronous.on_startup = hookimpl(on_startup_async)  # type: ignore[attr-defined]
    asynchronous.on_shutdown = hookimpl(on_shutdown_async)  # type: ignore[attr-defined]

    runtime = recording_runtime([], sync, asynchronous)
    async with runtime:
        assert sorted(calls) == ["async startup", "sync startup while starting"]
        calls.clear()
    assert sorted(calls) == [
        "async shutdown, cache says b'1'",
        "sync shutdown while stopping",
    ]


async def test_failing_startup_hook_names_plugin_and_stops_everything(
    recording_runtime: Callable[..., Runtime],
) -> None:
    async def on_startup(runtime: Runtime) -> None:
        raise ValueError("missing table")

    hook = types.ModuleType("migrator")
    hook.on_startup = hookimpl(on_startup)  # type: ignore[attr-defined]
    log: list[str] = []
    runtime = recording_runtime(log, hook)
    with pytest.raises(PluginError) as caught:
        await runtime.start()
    assert str(caught.value) == "plugin 'migrator' failed in on_startup: ValueError: missing table"
    assert log[len(KINDS_IN_ORDER) :] == [f"stop {kind}" for kind in reversed(KINDS_IN_ORDER)]
    assert runtime.state == "stopped"


async def test_failing_shutdown_hook_does_not_stop_the_stop(
    recording_runtime: Callable[..., Runtime],
) -> None:
    hook = types.ModuleType("clumsy")
    hook.on_shutdown = hookimpl(lambda runtime: 1 / 0)  # type: ignore[attr-defined]
    log: list[str] = []
    runtime = recording_runtime(log, hook)
    async with runtime:
        pass
    assert log[-1] == "stop sink"
    assert runtime.state == "stopped"


# -- interception hooks ------------------------------------------------------------------------


class Interceptor:
    """Adds a system message and rewrites the user's text; records what comes back."""

    __name__ = "interceptor"

    def __init__(self) -> None:
        self.seen: list[tuple[list[str], str]] = []

    @hookimpl
    def before_llm_request(self, request: ChatRequest) -> None:
        request.messages.insert(0, Message(role="system", content="Be brief."))
        request.messages[-1] = Message(role="user", content="rewritten by a plugin")

    @hookimpl
    async def after_llm_response(self, request: ChatRequest, response: ChatResponse) -> None:
        await asyncio.sleep(0)
        self.seen.append(([m.role for m in request.messages], response.message.content))


async def test_before_and_after_llm_hooks(make_runtime: Callable[..., Runtime]) -> None:
    interceptor = Interceptor()
    async with make_runtime("", interceptor) as runtime:
        request = ChatRequest(
            model="offline/echo", messages=[Message(role="user", content="original")]
        )
        response = await runtime.llm.complete(request)
        assert response.message.content == "[offline echo] You said: rewritten by a plugin"
        assert interceptor.seen == [(["system", "user"], response.message.content)]

        chunks = [
            chunk
            async for chunk in runtime.llm.stream(
                ChatRequest(model="offline/echo", messages=[Message(role="user", content="x")])
            )
        ]
    text = "".join(chunk.delta for chunk in chunks)
    assert text == "[offline echo] You said: rewritten by a plugin"
    assert interceptor.seen[1] == (["system", "user"], text)


async def test_after_llm_response_failure_does_not_affect_the_caller(
    make_runtime: Callable[..., Runtime],
) -> None:
    def after_llm_response(response: ChatResponse) -> None:
        raise RuntimeError("audit log full")

    plugin = types.ModuleType("auditor")
    plugin.after_llm_response = hookimpl(after_llm_response)  # type: ignore[attr-defined]
    async with make_runtime("", plugin) as runtime:
        response = await runtime.llm.complete(
            ChatRequest(model="offline/echo", messages=[Message(role="user", content="hi")])
        )
    assert response.message.content == "[offline echo] You said: hi"


async def test_before_llm_request_can_refuse_with_its_own_error(
    make_runtime: Callable[..., Runtime],
) -> None:
    from hubbub.errors import PermissionDeniedError

    def before_llm_request(request: ChatRequest) -> None:
        raise PermissionDeniedError("this model is not for you")

    plugin = types.ModuleType("gatekeeper")
    plugin.before_llm_request = hookimpl(before_llm_request)  # type: ignore[attr-defined]
    async with make_runtime("", plugin) as runtime:
        with pytest.raises(PermissionDeniedError, match="this model is not for you"):
            await runtime.llm.complete(
                ChatRequest(model="offline/echo", messages=[Message(role="user", content="hi")])
            )


class SlowCachePlugin:
    __name__ = "slow_cache"

    @hookimpl
    def register_cache_backends(self, register: Registrar) -> None:
        from hubbub_plugins.memory_cache import MemoryCache, MemoryCacheSettings

        class Slow(MemoryCache):
            async def start(self) -> None:
                await asyncio.sleep(0.3)
                await super().start()

        register("slow", lambda context: Slow(MemoryCacheSettings()))


async def test_stop_while_starting_waits_for_the_start_then_stops_everything(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime('[cache]\nbackend = "slow"\n', SlowCachePlugin())
    starting = asyncio.create_task(runtime.start())
    await asyncio.sleep(0.05)
    assert runtime.state == "starting"
    await runtime.stop()
    await starting
    assert runtime.state == "stopped"
    with pytest.raises(RuntimeError, match="not running"):
        runtime.cache  # noqa: B018 - the property raises once stopped
