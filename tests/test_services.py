"""Services the runtime owns for components (supervised tasks, shared resources), middleware
registered through hooks, wrapper hooks refused, health that says who serves now, frozen events,
and a configuration that never reads or writes the live environment after loading."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest

from hubbub import hookimpl
from hubbub.config import Secret, decode_settings
from hubbub.errors import PluginError
from hubbub.events import EventBus, Typing
from hubbub.middleware import LLMCallbacks, ToolMiddlewareBase
from hubbub.models import ChatRequest, Health, Message, ToolCall, ToolResult
from hubbub.plugins import load_plugins
from hubbub.resilience import RetryPolicy
from hubbub.services import SharedResources, Tasks
from hubbub.testing import config_for, principal, runtime_for

ROOT = Path(__file__).resolve().parent.parent

# -- supervised tasks ----------------------------------------------------------------------------

FAST = RetryPolicy(base_delay=0.001, max_delay=0.002, jitter=False)


async def test_a_failing_task_is_logged_and_not_restarted_unless_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = Tasks("cache.redis")
    runs = 0

    async def boom() -> None:
        nonlocal runs
        runs += 1
        raise ConnectionError("gone")

    await tasks.start("reader", boom)
    assert runs == 1
    assert "background task reader of cache.redis failed" in caplog.text
    assert tasks.names() == []


async def test_a_task_asked_to_restart_is_restarted_with_back_off() -> None:
    tasks = Tasks("events.redis", policy=FAST)
    runs = 0
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 4:
            raise ConnectionError("not yet")
        done.set()
        await asyncio.sleep(3600)

    tasks.start("reader", flaky, restart=True)
    await asyncio.wait_for(done.wait(), 5)
    assert tasks.restarts("reader") == 3
    assert tasks.names() == ["reader"]
    assert await tasks.aclose() == []
    assert tasks.names() == []
    with pytest.raises(RuntimeError, match="is stopping"):
        tasks.start("again", flaky)


async def test_a_task_name_is_unique_while_it_runs() -> None:
    tasks = Tasks("x")
    tasks.start("loop", lambda: asyncio.sleep(3600))
    with pytest.raises(ValueError, match="already runs a task named 'loop'"):
        tasks.start("loop", lambda: asyncio.sleep(3600))
    await tasks.aclose()


async def test_a_task_ignoring_cancellation_is_reported() -> None:
    tasks = Tasks("stubborn")
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    tasks.start("loop", stubborn)
    await asyncio.sleep(0)
    assert await tasks.aclose(grace=0.05) == ["loop"]
    release.set()


# -- shared resources ----------------------------------------------------------------------------


class Client:
    def __init__(self, log: list[str], name: str) -> None:
        self.log = log
        self.name = name
        log.append(f"open {name}")

    async def aclose(self) -> None:
        self.log.append(f"close {self.name}")


async def test_a_shared_resource_is_made_once_and_closed_after_its_last_user() -> None:
    log: list[str] = []
    shared = SharedResources()
    a, b = shared.for_user("cache.redis"), shared.for_user("events.redis")

    async def make() -> Client:
        await asyncio.sleep(0.01)  # both ask while the first is still being made
        return Client(log, "redis")

    first, second = await asyncio.gather(
        a.acquire("redis://h/0", make), b.acquire("redis://h/0", make)
    )
    assert first is second
    assert log == ["open redis"]
    await a.release_all()
    assert log == ["open redis"]  # still used by events.redis
    await b.release_all()
    assert log == ["open redis", "close redis"]
    assert shared.keys() == []


async def test_a_failed_creation_is_not_cached() -> None:
    shared = SharedResources()
    view = shared.for_user("memory.postgres")
    with pytest.raises(OSError, match="refused"):
        await view.acquire("pg", lambda: (_ for _ in ()).throw(OSError("refused")))
    log: list[str] = []
    assert isinstance(await view.acquire("pg", lambda: Client(log, "pg")), Client)


class SharingPlugin:
    """Two components that share one client through their contexts."""

    __name__ = "sharing"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    @hookimpl
    def register_event_sinks(self, register: Any) -> None:
        log = self.log

        class Sink:
            def __init__(self, context: Any) -> None:
                self.context = context

            async def start(self) -> None:
                self.client = await self.context.resources.acquire(
                    "shared", lambda: Client(log, "shared")
                )

                async def tick() -> None:
                    log.append(f"tick {self.context.name}")
                    await asyncio.sleep(3600)

                self.context.tasks.start("tick", tick)
                await asyncio.sleep(0)

            async def health(self) -> Health:
                return Health()

            async def aclose(self) -> None:
                log.append(f"stop {self.context.name} (tasks: {self.context.tasks.names()})")

            async def handle(self, event: Any) -> None:
                pass

        register("one", Sink)
        register("two", Sink)


async def test_components_share_resources_and_their_tasks_stop_before_them(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    config = config_for(tmp_path, '[events]\nsinks = ["one", "two"]\n')
    async with runtime_for(config, [SharingPlugin(log)]) as runtime:
        assert runtime.resources.keys() == ["shared"]
    assert log == [
        "open shared",
        "tick one",
        "tick two",
        "stop two (tasks: [])",
        "stop one (tasks: [])",
        "close shared",
    ]


# -- middleware through the hooks, and wrappers refused -------------------------------------------


class Recording(LLMCallbacks):
    def __init__(self, log: list[str], name: str, priority: int) -> None:
        self.log = log
        self.name = name
        self.priority = priority

    async def before(self, request: ChatRequest) -> None:
        self.log.append(f"enter {self.name}")

    async def after(self, request: ChatRequest, response: Any) -> None:
        self.log.append(f"exit {self.name}")


class Redact(ToolMiddlewareBase):
    async def call_tool(self, call: ToolCall, context: Any, call_next: Any) -> ToolResult:
        result = await call_next(call, context)
        return msgspec.structs.replace(result, content=result.content.replace("4", "[four]"))


class MiddlewarePlugin:
    __name__ = "middleware_plugin"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    @hookimpl
    def register_llm_middleware(self, register: Any) -> None:
        register("inner", lambda context: Recording(self.log, "inner", 10))
        register("outer", lambda context: Recording(self.log, "outer", -10))

    @hookimpl
    def register_tool_middleware(self, register: Any) -> None:
        register("redact", lambda context: Redact())

    @hookimpl
    def before_llm_request(self, request: ChatRequest) -> None:
        self.log.append("before hook")

    @hookimpl
    def after_llm_response(self, request: ChatRequest, response: Any) -> None:
        self.log.append("after hook")


async def test_registered_middleware_and_hooks_run_in_declared_order(tmp_path: Path) -> None:
    log: list[str] = []
    async with runtime_for(config_for(tmp_path), [MiddlewarePlugin(log)]) as runtime:
        request = ChatRequest(model="offline/echo", messages=[Message(role="user", content="hi")])
        await runtime.llm.complete(request)
        assert log == ["enter outer", "before hook", "enter inner",
                       "exit inner", "after hook", "exit outer"]  # fmt: skip
        result = await runtime.tools.call(
            ToolCall(id="c1", name="basic.calculator", arguments='{"expression": "2+2"}'),
            principal_context(),
        )
        assert result.content == "[four]"
        health = await runtime.health()
    assert health.components["llm_middleware.outer"].status == "ok"
    assert health.components["tool_middleware.redact"].backend == "redact"


def principal_context() -> Any:
    from hubbub.contracts import ToolContext

    return ToolContext(principal=principal("ada"))


class Wrapper:
    __name__ = "wrapping_plugin"

    @hookimpl(wrapper=True)
    def before_llm_request(self, request: ChatRequest) -> Any:
        return (yield)


class OldWrapper:
    __name__ = "old_wrapping_plugin"

    @hookimpl(hookwrapper=True)
    def after_llm_response(self, request: ChatRequest, response: Any) -> Any:
        yield


@pytest.mark.parametrize("plugin", [Wrapper(), OldWrapper()], ids=["wrapper", "hookwrapper"])
def test_wrapper_hook_implementations_are_refused_naming_the_plugin(plugin: Any) -> None:
    plugins = load_plugins(entry_points=False)
    with pytest.raises(PluginError) as caught:
        plugins.register(plugin, plugin.__name__)
    message = str(caught.value)
    assert f"plugin {plugin.__name__!r}" in message
    assert "as a wrapper" in message
    assert "register_llm_middleware" in message
    assert plugin.__name__ not in [name for name, _ in plugins.pm.list_name_plugin()]


# -- health says who serves now --------------------------------------------------------------------


class SwitchingCache:
    """A cache that reports serving from a stand-in, as a live fallback would."""

    serving: str | None = None

    async def start(self) -> None: ...
    async def aclose(self) -> None: ...

    async def health(self) -> Health:
        if self.serving:
            return Health(status="ok", backend=self.serving, detail="redis refused: circuit open")
        return Health()

    async def get(self, key: str) -> bytes | None:
        return None

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> bool:
        return False

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        return amount

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        return True

    async def compare_and_set(
        self, key: str, expected: bytes, value: bytes | None, ttl: float | None = None
    ) -> bool:
        return True


class SwitchingPlugin:
    __name__ = "switching"
    cache = SwitchingCache()

    @hookimpl
    def register_cache_backends(self, register: Any) -> None:
        register("switching", lambda context: self.cache)


async def test_health_follows_the_backend_serving_now(tmp_path: Path) -> None:
    plugin = SwitchingPlugin()
    config = config_for(tmp_path, '[cache]\nbackend = "switching"\n')
    async with runtime_for(config, [plugin]) as runtime:
        assert (await runtime.health()).status == "ok"
        plugin.cache.serving = "memory"
        health = await runtime.health()
        assert health.status == "degraded"
        cache = health.components["cache"]
        assert (cache.status, cache.backend) == ("degraded", "memory")
        assert "redis refused: circuit open" in cache.detail
        plugin.cache.serving = None
        assert (await runtime.health()).status == "ok"


# -- frozen events, and the configuration snapshot -------------------------------------------------


def test_published_events_cannot_be_changed_by_a_subscriber() -> None:
    bus = EventBus()
    event = bus.publish(Typing(active=True), owner="ada", conversation_id="c1")
    assert (event.owner, event.conversation_id) == ("ada", "c1")
    with pytest.raises(AttributeError):
        event.owner = "mallory"  # type: ignore[misc]


class TokenSettings(msgspec.Struct, kw_only=True):
    token: Secret
    """The token."""


def test_settings_read_the_environment_snapshot_not_the_live_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SNAP_TOKEN", "at-load")
    config = config_for(
        tmp_path, '[plugins.p]\ntoken = { env = "SNAP_TOKEN" }\n', env={"SNAP_TOKEN": "at-load"}
    )
    monkeypatch.setenv("SNAP_TOKEN", "changed-later")
    assert decode_settings(config, "p", TokenSettings).token.reveal() == "at-load"
    with pytest.raises(AttributeError):
        config.server.port = 1  # type: ignore[misc]


def _environment_writes(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        target = None
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((t for t in targets if isinstance(t, ast.Subscript)), None)
            target = target.value if target is not None else None
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in {"putenv", "unsetenv"}:
                found.append(f"{path}:{node.lineno}")
            elif node.func.attr in {"update", "setdefault", "pop", "clear"}:
                target = node.func.value
        if target is not None and ast.unparse(target) in {"os.environ", "environ"}:
            found.append(f"{path}:{node.lineno}")
    return found


def test_no_package_writes_the_process_environment(tmp_path: Path) -> None:
    sources = [
        path
        for folder in ("framework", "plugins", "reference_server")
        for path in (ROOT / folder).rglob("*.py")
    ]
    writes = [w for path in sources for w in _environment_writes(path)]
    # litellm reads its offline switches (bundled price table, bundled tokenizers) from the
    # environment when it is imported, and has no other way to be told; so does
    # prometheus-client its multiprocess directory, which `serve --workers` sets for its
    # workers (hubbub_server/serve.py); and tiktoken finds its encoding files only through
    # TIKTOKEN_CACHE_DIR (hubbub/llm/tokens.py points it at the files litellm ships, as litellm
    # itself does when imported): the three exceptions.
    allowed = {"litellm_provider.py", "serve.py", "tokens.py"}
    assert [w for w in writes if Path(w.split(":")[0]).name not in allowed] == []
    sample = tmp_path / "writes.py"  # the check finds writes when there are some
    sample.write_text(
        "import os\nos.environ['A'] = '1'\nos.environ.update(B='2')\nos.putenv('C', '3')\n"
    )
    assert len(_environment_writes(sample)) == 3


# -- failure paths (from review) -------------------------------------------------------------------


async def test_a_closer_that_cancels_itself_does_not_stop_the_shutdown() -> None:
    from hubbub.services import close_within

    async def cancels_itself() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    assert await close_within(cancels_itself, 1.0, "reader") == "failed"


class SelfCancellingSink:
    """Closes the way reader loops do: cancel the reader, then await it."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def start(self) -> None:
        self.reader = asyncio.create_task(asyncio.sleep(3600))

    async def health(self) -> Health:
        return Health(backend="stand-in", detail="fine")

    async def aclose(self) -> None:
        self.log.append("close")
        self.reader.cancel()
        await self.reader  # re-raises CancelledError inside aclose()

    async def handle(self, event: Any) -> None:
        await asyncio.sleep(3600)  # never keeps up


class SinkPlugin:
    __name__ = "sink_plugin"

    def __init__(self, log: list[str]) -> None:
        self.log = log

    @hookimpl
    def register_event_sinks(self, register: Any) -> None:
        register("slow", lambda context: SelfCancellingSink(self.log))


async def test_a_slow_self_cancelling_sink_is_still_closed_and_the_runtime_stops(
    tmp_path: Path,
) -> None:
    log: list[str] = []
    config = config_for(tmp_path, '[events]\nsinks = ["slow"]\n[runtime]\nstop_timeout = 0.2\n')
    runtime_cm = runtime_for(config, [SinkPlugin(log)])
    runtime = await runtime_cm.__aenter__()
    runtime.events.publish(Typing(active=True))
    runtime.events.publish(Typing(active=False))
    health = (await runtime.health()).components["events.slow"]
    assert (health.backend, health.status) == ("stand-in", "degraded")  # the sink's own word
    await runtime_cm.__aexit__(None, None, None)
    assert log == ["close"]  # closed although its queue never drained
    assert runtime.state == "stopped"
    assert runtime.resources.keys() == []


class LeakyPlugin:
    """A cache whose factory starts a reader, then fails its contract check."""

    __name__ = "leaky"
    started: list[asyncio.Task[None]] = []

    @hookimpl
    def register_cache_backends(self, register: Any) -> None:
        def build(context: Any) -> object:
            self.started.append(context.tasks.start("reader", lambda: asyncio.sleep(3600)))
            return object()  # not a cache

        register("leaky", build)


async def test_a_factory_that_fails_after_starting_a_task_leaves_no_task(tmp_path: Path) -> None:
    plugin = LeakyPlugin()
    config = config_for(tmp_path, '[cache]\nbackend = "leaky"\nfallback = "memory"\n')
    async with runtime_for(config, [plugin]) as runtime:
        await asyncio.sleep(0)
        assert plugin.started[0].done()  # cancelled when the build failed
        assert (await runtime.health()).components["cache"].backend == "memory"


class FailingStartup:
    __name__ = "failing_startup"
    task: asyncio.Task[None] | None = None

    @hookimpl
    def on_startup(self, runtime: Any) -> None:
        self.task = runtime.spawn(asyncio.sleep(3600), name="started by on_startup")
        raise RuntimeError("cannot finish starting")


async def test_tasks_spawned_before_a_failed_start_are_cancelled(tmp_path: Path) -> None:
    plugin = FailingStartup()
    with pytest.raises(PluginError, match="failing_startup"):
        async with runtime_for(config_for(tmp_path), [plugin]):
            pass
    assert plugin.task is not None
    assert plugin.task.cancelled()


class RouteTasks:
    __name__ = "route_tasks"
    task: asyncio.Task[None] | None = None

    @hookimpl
    def register_routes(self, register: Any) -> None:
        def routes(context: Any) -> list[Any]:
            self.task = context.tasks.start("poller", lambda: asyncio.sleep(3600))
            return []

        register("polling", routes)


async def test_tasks_of_route_factories_stop_with_the_runtime(tmp_path: Path) -> None:
    plugin = RouteTasks()
    async with runtime_for(config_for(tmp_path), [plugin]) as runtime:
        runtime.build("routes", "polling")
        assert plugin.task is not None
        assert not plugin.task.done()
    assert plugin.task.cancelled()


class Broken(LLMCallbacks):
    async def before(self, request: ChatRequest) -> None:
        raise KeyError("budget")


async def test_a_broken_middleware_is_named_in_the_error(tmp_path: Path) -> None:
    class Plugin:
        __name__ = "broken_middleware"

        @hookimpl
        def register_llm_middleware(self, register: Any) -> None:
            register("broken", lambda context: Broken())

    async with runtime_for(config_for(tmp_path), [Plugin()]) as runtime:
        request = ChatRequest(model="offline/echo", messages=[Message(role="user", content="x")])
        with pytest.raises(PluginError, match=r"LLM middleware .*Broken .* failed: KeyError"):
            await runtime.llm.complete(request)


class Rewriter(LLMCallbacks):
    async def before(self, request: ChatRequest) -> None:
        for message in request.messages:
            message.content = message.content.replace("secret", "[redacted]")


async def test_middleware_changing_messages_in_place_leaves_published_events_alone(
    tmp_path: Path,
) -> None:
    from hubbub.events import MessageCreated

    class Plugin:
        __name__ = "rewriter"

        @hookimpl
        def register_llm_middleware(self, register: Any) -> None:
            register("rewrite", lambda context: Rewriter())

    async with runtime_for(config_for(tmp_path), [Plugin()]) as runtime:
        ada = principal("ada")
        with runtime.events.subscribe(lambda e: isinstance(e, MessageCreated)) as created:
            conversation = await runtime.conversations.create(ada)
            _, reply = await runtime.conversations.post_message(
                ada, conversation.id, "my secret", wait=True
            )
            first = await created.get()
        assert first is not None
        assert first.message.content == "my secret"
        stored = await runtime.memory.list_messages(conversation.id)
        assert stored.items[0].content == "my secret"
        assert reply is not None
        assert "[redacted]" in reply.content


def test_a_stream_written_as_a_coroutine_is_refused_at_build() -> None:
    from hubbub.kinds import KINDS
    from hubbub.registry import Registration, check_component

    class CoroutineStream(LLMCallbacks):
        async def stream(self, request: Any, call_next: Any) -> Any:  # type: ignore[override]
            return call_next(request)

    spec = next(s for s in KINDS if s.name == "llm_middleware")
    registration = Registration(
        kind="llm_middleware", name="c", factory=CoroutineStream, plugin="p"
    )
    with pytest.raises(Exception, match=r"stream\(\) must not be a coroutine"):
        check_component(spec, registration, CoroutineStream())


def test_a_configuration_cannot_be_serialised_with_its_environment(tmp_path: Path) -> None:
    from hubbub.config import encode_config, load_config

    config = load_config(text="", env={"HUBBUB_HOME": str(tmp_path), "API_TOKEN": "sk-secret"})
    with pytest.raises(TypeError, match="ConfigOrigin"):
        msgspec.json.encode(config)
    assert "sk-secret" not in repr(config)
    assert "sk-secret" not in str(encode_config(config))
    with pytest.raises(TypeError):
        config.env["API_TOKEN"] = "changed"  # type: ignore[index]


def test_an_empty_backend_is_a_configuration_error(tmp_path: Path) -> None:
    from hubbub.errors import ConfigError
    from hubbub.runtime import Runtime

    config = config_for(tmp_path, '[cache]\nbackend = ""\n')
    with pytest.raises(ConfigError, match=r"cache.backend: expected one of .*got ''"):
        Runtime.from_config(config)
