"""The runtime: builds the configured components, starts them in order, reports their health, and
stops them in reverse.

Start order (each later component may use the earlier ones through the runtime):
event bus and sinks → cache → memory store → auth methods and authenticator → LLM providers and
client → tool providers and registry → conversation engine → ``on_startup`` hooks.

::

    async with Runtime.from_config(load_config()) as runtime:
        conversation = await runtime.conversations.create(principal, title="Hello")

A component that fails to start is replaced by its configured fallback (health then says
``degraded``); without a fallback, a critical component's failure stops those already started and
raises :class:`hubbub.errors.ComponentError`, while a non-critical one (an event sink, a tool
provider) is reported ``down`` and the runtime serves on. Stopping gives each component
``[runtime] stop_timeout`` seconds; one that takes longer is abandoned and listed in
:attr:`Runtime.abandoned`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

from hubbub.auth import Authenticator
from hubbub.config import Config, load_config
from hubbub.contracts import AuthMethod, CacheBackend, LLMProvider, MemoryStore
from hubbub.conversation import ConversationEngine
from hubbub.errors import ComponentError, ConfigError, HubbubError
from hubbub.events import EventBus
from hubbub.events.sinks import SinkRunner
from hubbub.llm import LLMClient
from hubbub.log import log_context
from hubbub.models import ComponentHealth, Health, HealthStatus, RuntimeHealth
from hubbub.plugins import Plugins, load_plugins
from hubbub.registry import ComponentContext, Kind, Registration, check_component
from hubbub.runtime.selection import check_config, selected_names
from hubbub.tools import ToolRegistry

__all__ = ["Runtime"]

logger = logging.getLogger("hubbub.runtime")

T = TypeVar("T")
State = Literal["new", "starting", "running", "stopping", "stopped"]


@dataclass
class _Started:
    """A started component and what health reporting needs to know about it."""

    label: str
    backend: str
    component: Any
    critical: bool
    fallback_for: str | None = None
    primary_error: str | None = None


@dataclass
class _Failed:
    label: str
    backend: str
    error: str


class Runtime:
    """Owns every component of one hubbub instance. Build one per app (or per test)."""

    def __init__(self, config: Config, plugins: Plugins, settings: Mapping[str, Any]) -> None:
        """Prefer :meth:`from_config`, which validates ``config`` against ``plugins`` first."""
        self.config = config
        self.plugins = plugins
        self.settings = dict(settings)
        """Each plugin's decoded settings struct, by plugin name."""
        self.state: State = "new"
        self.events = EventBus(
            queue_size=config.events.queue_size, history_size=config.events.history_size
        )
        self.abandoned: list[str] = []
        """Components that did not stop within ``[runtime] stop_timeout`` at the last stop."""
        self.auth_methods: dict[str, AuthMethod] = {}
        """Enabled auth methods, in the configured order."""
        self._started: list[_Started] = []
        self._failed: list[_Failed] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._drain: set[asyncio.Task[Any]] = set()
        self._start_done = asyncio.Event()
        self._cache: CacheBackend | None = None
        self._auth: Authenticator | None = None
        self._memory: MemoryStore | None = None
        self._llm: LLMClient | None = None
        self._tools: ToolRegistry | None = None
        self._conversations: ConversationEngine | None = None

    @classmethod
    def from_config(
        cls,
        config: Config | None = None,
        *,
        plugins: Plugins | None = None,
        extra_plugins: Iterable[object] = (),
    ) -> Runtime:
        """Load plugins (unless given), validate ``config`` against them, and return an unstarted
        runtime. Raises :class:`ConfigError` or :class:`PluginError` with what to fix."""
        config = config if config is not None else load_config()
        if plugins is None:
            plugins = load_plugins(disabled=config.plugins.disabled, extra=extra_plugins)
        plugins.raise_for_failures()
        settings = check_config(config, plugins)
        return cls(config, plugins, settings)

    # -- components ------------------------------------------------------------------------

    def _require(self, value: T | None, what: str) -> T:
        if value is None:
            raise RuntimeError(f"the runtime has no {what}: it is {self.state}, not running")
        return value

    @property
    def cache(self) -> CacheBackend:
        """The cache backend serving now (the fallback when the primary failed)."""
        return self._require(self._cache, "cache")

    @property
    def memory(self) -> MemoryStore:
        """The memory store serving now."""
        return self._require(self._memory, "memory store")

    @property
    def auth(self) -> Authenticator:
        """Authenticates callers with the enabled auth methods."""
        return self._require(self._auth, "authenticator")

    @property
    def llm(self) -> LLMClient:
        """The LLM client over every started provider."""
        return self._require(self._llm, "LLM client")

    @property
    def tools(self) -> ToolRegistry:
        """Every tool of the started tool providers."""
        return self._require(self._tools, "tool registry")

    @property
    def conversations(self) -> ConversationEngine:
        """The conversation engine."""
        return self._require(self._conversations, "conversation engine")

    def context(self, registration: Registration) -> ComponentContext:
        """The :class:`ComponentContext` a factory of ``registration`` receives."""
        return ComponentContext(
            name=registration.name,
            kind=registration.kind,
            plugin=registration.plugin,
            settings=self.settings.get(registration.plugin),
            config=self.config,
            data_dir=self.config.data_dir,
            runtime=self,
            logger=logging.getLogger(f"hubbub.plugins.{registration.plugin}"),
        )

    def build(self, kind: Kind, name: str) -> Any:
        """Build (not start) the component registered as ``name`` of ``kind``."""
        registration = self.plugins.registries()[kind].get(name)
        if registration is None:
            raise ComponentError(f"no {kind} is registered as {name!r}")
        with log_context(plugin=registration.plugin):
            try:
                component = registration.factory(self.context(registration))
            except HubbubError:
                raise
            except Exception as exc:
                raise ComponentError(
                    f"{kind} {name!r} from {self.plugins.describe(registration.plugin)} could "
                    f"not be built: {type(exc).__name__}: {exc}"
                ) from exc
        check_component(kind, registration, component)
        return component

    async def _start_one(
        self,
        label: str,
        backend: str,
        component: Any,
        *,
        critical: bool,
        fallback_for: str | None = None,
        primary_error: str | None = None,
    ) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.runtime.start_timeout):
                await component.start()
        except BaseException as exc:
            await self._close_quietly(label, component)
            if isinstance(exc, ConfigError):  # a configuration problem found at start
                raise
            if isinstance(exc, TimeoutError):
                raise ComponentError(
                    f"{label} {backend!r} did not start within "
                    f"{self.config.runtime.start_timeout:g} s"
                ) from None
            if isinstance(exc, Exception):
                raise ComponentError(
                    f"{label} {backend!r} failed to start: {type(exc).__name__}: {exc}"
                ) from exc
            raise
        self._started.append(
            _Started(label, backend, component, critical, fallback_for, primary_error)
        )
        logger.info(
            "started %s (%s) in %.1f ms",
            label,
            backend,
            (time.perf_counter() - started) * 1000,
            extra={"component": label, "backend": backend},
        )

    async def _close_quietly(self, label: str, component: Any) -> None:
        try:
            async with asyncio.timeout(self.config.runtime.stop_timeout):
                await component.aclose()
        except Exception:
            logger.warning("%s did not close cleanly after failing to start", label, exc_info=True)

    async def _start_with_fallback(
        self, kind: Kind, label: str, backend: str, fallback: str | None
    ) -> Any:
        try:
            component = self.build(kind, backend)
            await self._start_one(label, backend, component, critical=True)
            return component
        except ComponentError as exc:
            if fallback is None:
                raise
            logger.warning("%s; falling back to %r", exc, fallback, extra={"component": label})
            component = self.build(kind, fallback)
            await self._start_one(
                label,
                fallback,
                component,
                critical=True,
                fallback_for=backend,
                primary_error=str(exc),
            )
            return component

    async def _start_optional(self, kind: Kind, label: str, name: str) -> Any | None:
        """Start a non-critical component; a failure is reported as ``down``, not raised."""
        try:
            component = self.build(kind, name)
            if kind == "events":
                component = SinkRunner(name, component, self.events)
            await self._start_one(label, name, component, critical=False)
            return component
        except ComponentError as exc:
            logger.error("%s; continuing without it", exc, extra={"component": label})
            self._failed.append(_Failed(label, name, str(exc)))
            return None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every component in dependency order, then run the ``on_startup`` hooks.

        On failure, everything already started is stopped again before the error propagates.
        """
        if self.state != "new":
            raise RuntimeError(f"a runtime starts once; this one is {self.state}")
        self.state = "starting"
        began = time.perf_counter()
        config = self.config
        try:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            await self._start_one("events", "blinker", self.events, critical=True)
            for sink in config.events.sinks:
                await self._start_optional("events", f"events.{sink}", sink)
            self._cache = await self._start_with_fallback(
                "cache", "cache", config.cache.backend, config.cache.fallback
            )
            self._memory = await self._start_with_fallback(
                "memory", "memory", config.memory.backend, config.memory.fallback
            )
            for method in config.auth.methods:
                component = self.build("auth", method)
                await self._start_one(f"auth.{method}", method, component, critical=True)
                self.auth_methods[method] = component
            self._auth = Authenticator(self.auth_methods)  # local mode: the host decides
            await self._start_one("auth", "authenticator", self._auth, critical=True)
            selected = selected_names(config, self.plugins.registries())
            providers: dict[str, LLMProvider] = {}
            for name in selected["llm"]:
                providers[name] = self.build("llm", name)
                await self._start_one(f"llm.{name}", name, providers[name], critical=True)
            self._llm = LLMClient(
                providers,
                default_model=config.llm.default_model,
                timeout=config.llm.request_timeout,
                before_request=self._hook_caller("before_llm_request"),
                after_response=self._hook_caller("after_llm_response"),
                events=self.events,
            )
            await self._start_one("llm", "client", self._llm, critical=True)
            tool_providers = {}
            for name in selected["tools"]:
                provider = await self._start_optional("tools", f"tools.{name}", name)
                if provider is not None:
                    tool_providers[name] = provider
            self._tools = ToolRegistry(tool_providers, timeout=config.tools.call_timeout)
            await self._start_one("tools", "registry", self._tools, critical=False)
            self._conversations = ConversationEngine(
                self.memory,
                self.llm,
                self.tools,
                self.events,
                max_tool_rounds=config.llm.max_tool_rounds,
                history_limit=config.llm.history_messages,
                spawn=lambda coro, name: self.spawn(coro, name=name, drain=True),
            )
            await self._start_one("conversations", "engine", self._conversations, critical=True)
            await self.plugins.acall_each("on_startup", runtime=self)
        except BaseException:
            logger.error(
                "startup failed; stopping the %d components already started", len(self._started)
            )
            await self._stop_components()
            self.state = "stopped"
            raise
        finally:
            self._start_done.set()
        self.state = "running"
        logger.info("runtime started in %.1f ms", (time.perf_counter() - began) * 1000)

    def _hook_caller(self, hook_name: str) -> Callable[..., Coroutine[Any, Any, None]] | None:
        if not self.plugins.has_implementations(hook_name):
            return None

        async def call(**kwargs: Any) -> None:
            await self.plugins.acall_each(hook_name, runtime=self, **kwargs)

        return call

    async def stop(self) -> None:
        """Run the ``on_shutdown`` hooks, cancel background tasks, and stop every component in
        reverse start order, each within ``[runtime] stop_timeout``. Safe to call twice, and
        while the runtime is still starting (it waits for the start to end first)."""
        if self.state == "starting":
            await self._start_done.wait()
        if self.state in ("stopping", "stopped", "new"):
            self.state = "stopped" if self.state == "new" else self.state
            return
        self.state = "stopping"
        try:
            await self.plugins.acall_each("on_shutdown", runtime=self)
        except Exception:
            logger.exception("on_shutdown hook failed; stopping anyway")
        await self._cancel_tasks()
        await self._stop_components()
        self.state = "stopped"
        logger.info("runtime stopped")

    async def _cancel_tasks(self) -> None:
        draining = [t for t in self._tasks if t in self._drain]
        if draining:
            logger.info(
                "waiting up to %g s for %d tasks to finish",
                self.config.runtime.drain_timeout,
                len(draining),
            )
            await asyncio.wait(draining, timeout=self.config.runtime.drain_timeout)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.config.runtime.stop_timeout)
            for task in pending:
                self.abandoned.append(f"task {task.get_name()}")
                logger.error("background task %s ignored cancellation; abandoned", task.get_name())

    async def _stop_components(self) -> None:
        timeout = self.config.runtime.stop_timeout
        while self._started:
            entry = self._started.pop()
            began = time.perf_counter()
            task = asyncio.ensure_future(entry.component.aclose())
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                self.abandoned.append(entry.label)
                logger.error(
                    "%s (%s) did not stop within %g s; abandoned it",
                    entry.label,
                    entry.backend,
                    timeout,
                    extra={"component": entry.label},
                )
                continue
            if task.exception() is not None:
                logger.error(
                    "%s (%s) failed to stop: %r",
                    entry.label,
                    entry.backend,
                    task.exception(),
                    extra={"component": entry.label},
                )
                continue
            logger.info(
                "stopped %s (%s) in %.1f ms",
                entry.label,
                entry.backend,
                (time.perf_counter() - began) * 1000,
                extra={"component": entry.label},
            )
        self._cache = self._memory = None
        self._auth = None
        self._llm = None
        self._tools = None
        self._conversations = None
        self.auth_methods = {}

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- background tasks ------------------------------------------------------------------

    def spawn(
        self, coro: Coroutine[Any, Any, T], *, name: str, drain: bool = False
    ) -> asyncio.Task[T]:
        """Run ``coro`` in the background, owned by the runtime: an exception it raises is
        logged, and it is cancelled on stop; with ``drain``, only after it has had
        ``[runtime] drain_timeout`` seconds to finish (replies being written, say)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        if drain:
            self._drain.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._drain.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task %s failed", task.get_name(), exc_info=task.exception())

    # -- health ----------------------------------------------------------------------------

    async def health(self) -> RuntimeHealth:
        """Ask every component concurrently; aggregate into ``ok``/``degraded``/``down``."""
        checks = await asyncio.gather(*(self._check(entry) for entry in self._started))
        components = dict(checks)
        for failed in self._failed:
            components[failed.label] = ComponentHealth(
                status="down", backend=failed.backend, detail=failed.error
            )
        critical_down = any(
            components[entry.label].status == "down" for entry in self._started if entry.critical
        )
        status: HealthStatus
        if self.state != "running" or critical_down:
            status = "down"
        elif any(c.status != "ok" for c in components.values()):
            status = "degraded"
        else:
            status = "ok"
        return RuntimeHealth(status=status, components=components)

    async def _check(self, entry: _Started) -> tuple[str, ComponentHealth]:
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.runtime.health_timeout):
                health = await entry.component.health()
        except TimeoutError:
            health = Health(status="down", detail="health check timed out")
        except Exception as exc:
            health = Health(status="down", detail=f"health check failed: {exc}")
        latency = round((time.perf_counter() - began) * 1000, 3)
        status, detail = health.status, health.detail
        if entry.fallback_for is not None:
            status = "degraded" if status == "ok" else status
            detail = f"fallback serving because {entry.primary_error}" + (
                f"; {detail}" if detail else ""
            )
        return entry.label, ComponentHealth(
            status=status, backend=entry.backend, detail=detail, latency_ms=latency
        )
