"""The runtime: builds the configured components, starts them in declared stages, reports their
health, and stops them in reverse.

The stages (:mod:`hubbub.runtime.stages`) follow the kinds table (:data:`hubbub.kinds.KINDS`):
event bus and sinks → cache → memory store → auth methods and authenticator → LLM middleware,
providers and client → tool middleware, providers and registry → conversation engine →
``on_startup`` hooks. Each stage is logged with its duration.

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
from collections.abc import Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar

from hubbub.auth import Authenticator
from hubbub.auth.admin import AccountAdmin
from hubbub.auth.apikeys import ApiKeys
from hubbub.auth.login import Logins
from hubbub.auth.sessions import SessionManager
from hubbub.auth.users import Users
from hubbub.cache import Cache, InvalidCacheKeyError
from hubbub.config import Config, load_config
from hubbub.contracts import AccountStore, AuthMethod, CacheBackend, MemoryStore
from hubbub.conversation import ConversationEngine
from hubbub.errors import ComponentError, ConfigError, blame
from hubbub.events import EventBus, MemoryEventLog
from hubbub.kinds import KindSpec, kinds_by_name
from hubbub.llm import LLMClient
from hubbub.log import log_context
from hubbub.memory import Sweeper
from hubbub.models import RuntimeHealth
from hubbub.plugins import Plugins, load_plugins
from hubbub.registry import ComponentContext, Kind, Registration, check_component
from hubbub.runtime.health import Entry, aggregate, check
from hubbub.runtime.hooks import HookMiddleware
from hubbub.runtime.selection import check_config
from hubbub.runtime.stages import WRAPPERS, stages
from hubbub.services import Closed, SharedResources, Tasks, close_within
from hubbub.tools import ToolRegistry

RESERVED_NAMESPACE = "hubbub"
"""Where hubbub keeps its own cache entries (``hubbub:reply:<id>``...)."""

__all__ = ["Runtime"]

logger = logging.getLogger("hubbub.runtime")

T = TypeVar("T")
State = Literal["new", "starting", "running", "stopping", "stopped"]

LAST_CHANCE = 0.05
"""Seconds a stopping step still gets once the stop's deadline has passed: enough for what
closes at once, so that only what hangs is abandoned."""


def _left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (a :func:`time.monotonic` time; ``None``: no limit), at least
    :data:`LAST_CHANCE`."""
    return None if deadline is None else max(LAST_CHANCE, deadline - time.monotonic())


class Runtime:
    """Owns every component of one hubbub instance. Build one per app (or per test)."""

    def __init__(self, config: Config, plugins: Plugins, settings: Mapping[str, Any]) -> None:
        """Prefer :meth:`from_config`, which validates ``config`` against ``plugins`` first."""
        self.config = config
        self.plugins = plugins
        self.settings = dict(settings)
        """Each plugin's decoded settings struct, by plugin name."""
        self.kinds: Mapping[Kind, KindSpec] = kinds_by_name(plugins.kinds)
        """The kinds of component this runtime manages, by name."""
        self.state: State = "new"
        self.events = EventBus(
            queue_size=config.events.queue_size,
            trace=config.events.trace,
            log=MemoryEventLog(
                retention_events=config.events.retention_events,
                retention_seconds=config.events.retention_seconds,
            ),
        )
        self.abandoned: list[str] = []
        """Components and tasks that did not stop within ``[runtime] stop_timeout`` at the last
        stop."""
        self.resources = SharedResources(close_timeout=config.runtime.stop_timeout)
        """Resources shared by the components (each component uses its own view of them)."""
        self._entries: list[Entry] = []
        self._components: dict[Kind, dict[str, Any]] = {}
        self._core: dict[str, Any] = {}
        self._built: list[ComponentContext[Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._drain: set[asyncio.Task[Any]] = set()
        self._start_done = asyncio.Event()

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
            plugins = load_plugins(
                disabled=config.plugins.disabled, extra=extra_plugins, env=config.env
            )
        plugins.raise_for_failures()
        settings = check_config(config, plugins)
        return cls(config, plugins, settings)

    # -- components ------------------------------------------------------------------------

    def _require(self, name: str, what: str) -> Any:
        value = self._core.get(name)
        if value is None:
            raise RuntimeError(f"the runtime has no {what}: it is {self.state}, not running")
        return value

    def components(self, kind: Kind) -> dict[str, Any]:
        """The started components of ``kind``, by registered name, in the configured order."""
        return dict(self._components.get(kind, {}))

    @property
    def cache(self) -> CacheBackend:
        """The cache backend serving now (the fallback when the primary failed)."""
        value: CacheBackend = self._require("cache", "cache")
        return value

    def cache_for(self, namespace: str) -> Cache:
        """A typed cache over :attr:`cache` whose keys are ``<namespace>:<key>``
        (:class:`hubbub.cache.Cache`): ``runtime.cache_for("weather").get("paris", Forecast)``.
        The namespace ``hubbub`` is hubbub's own (reply leases, quota counters): refused."""
        if namespace.split(":", 1)[0] == RESERVED_NAMESPACE:
            raise InvalidCacheKeyError(
                f"the cache namespace {RESERVED_NAMESPACE!r} is hubbub's own: choose another",
                field="namespace",
            )
        return Cache(self.cache, namespace)

    @property
    def memory(self) -> MemoryStore:
        """The memory store serving now."""
        value: MemoryStore = self._require("memory", "memory store")
        return value

    @property
    def sweeper(self) -> Sweeper:
        """The memory store's sweeper (expiry and ``[retention]``)."""
        value: Sweeper = self._require("sweeper", "sweeper")
        return value

    @property
    def has_accounts(self) -> bool:
        """Whether an account store serves (none when no plugin registers one): without it,
        there are no local accounts, logins or sessions."""
        return "accounts" in self._core

    @property
    def accounts(self) -> AccountStore:
        """The account store (users, sessions, API keys)."""
        value: AccountStore = self._require("accounts", "account store")
        return value

    @property
    def users(self) -> Users:
        """The local accounts."""
        value: Users = self._require("users", "user accounts")
        return value

    @property
    def sessions(self) -> SessionManager:
        """The session manager every login ends in."""
        value: SessionManager = self._require("sessions", "session manager")
        return value

    @property
    def api_keys(self) -> ApiKeys:
        """API keys, in the account store (``hubbub keys``, ``/api/keys``)."""
        value: ApiKeys = self._require("api_keys", "API keys")
        return value

    @property
    def admin(self) -> AccountAdmin:
        """Account management (``hubbub users``, ``/api/admin/users``)."""
        return AccountAdmin(self.users, self.sessions)

    @property
    def logins(self) -> Logins:
        """Password and redirect logins, each ending in a session."""
        value: Logins = self._require("logins", "logins")
        return value

    @property
    def auth_methods(self) -> dict[str, AuthMethod]:
        """Enabled auth methods, in the configured order."""
        return self.components("auth")

    @property
    def auth(self) -> Authenticator:
        """Authenticates callers with the enabled auth methods."""
        value: Authenticator = self._require("auth", "authenticator")
        return value

    @property
    def llm(self) -> LLMClient:
        """The LLM client over every started provider."""
        value: LLMClient = self._require("llm", "LLM client")
        return value

    @property
    def tools(self) -> ToolRegistry:
        """Every tool of the started tool providers."""
        value: ToolRegistry = self._require("tools", "tool registry")
        return value

    @property
    def conversations(self) -> ConversationEngine:
        """The conversation engine."""
        value: ConversationEngine = self._require("conversations", "conversation engine")
        return value

    def context(self, registration: Registration) -> ComponentContext[Any]:
        """The :class:`ComponentContext` a factory of ``registration`` receives."""
        label = f"{registration.kind}.{registration.name}"
        log = logging.getLogger(f"hubbub.plugins.{registration.plugin}")
        return ComponentContext(
            name=registration.name,
            kind=registration.kind,
            plugin=registration.plugin,
            settings=self.settings.get(registration.plugin),
            config=self.config,
            data_dir=self.config.data_dir,
            tasks=Tasks(label, log=log),
            resources=self.resources.for_user(label),
            events=self.events,
            runtime=self,
        )

    def build(self, kind: Kind, name: str) -> Any:
        """Build (not start) the component registered as ``name`` of ``kind``: what the server
        does with route factories. Tasks the factory starts are cancelled when the runtime
        stops."""
        context = self._context_for(kind, name)
        self._built.append(context)
        return self._construct(context)

    def _context_for(self, kind: Kind, name: str) -> ComponentContext[Any]:
        registration = self.plugins.registries()[kind].get(name)
        if registration is None:
            raise ComponentError(f"no {self.kinds[kind].title} is registered as {name!r}")
        return self.context(registration)

    def _construct(self, context: ComponentContext[Any]) -> Any:
        """Call the factory with ``context`` and check what it built against the kind."""
        registration = self.plugins.registries()[context.kind].get(context.name)
        assert registration is not None  # found by _context_for
        with log_context(plugin=registration.plugin):
            try:
                component = registration.factory(context)
            except Exception as exc:
                where = (
                    f"{context.kind} {context.name!r} from "
                    f"{self.plugins.describe(registration.plugin)} could not be built"
                )
                raise blame(exc, where, ComponentError) from exc
        check_component(self.kinds[context.kind], registration, component)
        return component

    async def _start_entry(self, entry: Entry) -> None:
        """Start ``entry.component`` within ``[runtime] start_timeout``; on failure close it
        again and raise :class:`ComponentError` naming it."""
        began = time.perf_counter()
        timeout = self.config.runtime.start_timeout
        try:
            async with asyncio.timeout(timeout):
                await entry.component.start()
        except BaseException as exc:
            await self._close(entry, quiet=True)
            if isinstance(exc, ConfigError):  # a configuration problem found at start
                raise self.config.locate(exc) from None
            if isinstance(exc, TimeoutError):
                raise ComponentError(
                    f"{entry.label} {entry.serving!r} did not start within {timeout:g} s"
                ) from None
            if isinstance(exc, Exception):
                by = f" ({self.plugins.describe(entry.plugin)})" if entry.plugin else ""
                where = f"{entry.label} {entry.serving!r} failed to start"
                raise ComponentError(f"{where}: {type(exc).__name__}: {exc}{by}") from exc
            raise
        self._entries.append(entry)
        logger.info(
            "started %s (%s) in %.1f ms",
            entry.label,
            entry.serving,
            (time.perf_counter() - began) * 1000,
            extra={"component": entry.label, "backend": entry.serving},
        )

    async def start_core(
        self, label: str, backend: str, component: Any, *, critical: bool = True
    ) -> None:
        """Start one of the runtime's own components (the bus, the LLM client...)."""
        await self._start_entry(Entry(label, backend, backend, component, critical))
        self._core[label] = component

    async def _start_component(
        self, spec: KindSpec, label: str, name: str, *, configured: str, note: str | None = None
    ) -> Any:
        context = self._context_for(spec.name, name)
        try:
            component = self._construct(context)
        except BaseException:  # the factory may have started tasks or taken resources
            await context.tasks.aclose(self.config.runtime.stop_timeout)
            await context.resources.release_all()
            raise
        wrap = WRAPPERS.get(spec.name)
        running = wrap(self, context, component) if wrap is not None else component
        entry = Entry(label, configured, name, running, spec.critical, note, context.plugin)
        entry.tasks, entry.resources = context.tasks, context.resources
        await self._start_entry(entry)
        self._components.setdefault(spec.name, {})[name] = component
        return component

    async def start_kind(self, spec: KindSpec) -> None:
        """Start the components of ``spec`` the configuration selects, with the kind's
        fallback and criticality policy."""
        names = spec.selected(self.config, self.plugins.registries()[spec.name].names())
        if spec.selection == "one":
            if not names:
                return  # nothing selected: the runtime's own default serves (the event log)
            primary, fallback = names[0], spec.fallback_name(self.config)
            try:
                component = await self._start_component(
                    spec, spec.name, primary, configured=primary
                )
            except ComponentError as exc:
                if fallback is None:
                    raise
                logger.warning(
                    "%s; falling back to %r", exc, fallback, extra={"component": spec.name}
                )
                component = await self._start_component(
                    spec, spec.name, fallback, configured=primary, note=str(exc)
                )
            else:
                if fallback is not None and spec.live_fallback is not None:
                    component = await self._fall_back_live(spec, primary, fallback, component)
            self._core[spec.name] = component
            return
        for name in names:
            label = f"{spec.name}.{name}"
            try:
                await self._start_component(spec, label, name, configured=name)
            except ComponentError as exc:
                if spec.critical:
                    raise
                logger.error("%s; continuing without it", exc, extra={"component": label})
                self._entries.append(Entry(label, name, name, None, False, str(exc)))

    async def _fall_back_live(
        self, spec: KindSpec, primary: str, fallback: str, component: Any
    ) -> Any:
        """Start ``fallback`` beside the running ``primary`` and serve through the kind's
        live-fallback component (health reports it under the kind's label)."""
        assert spec.live_fallback is not None
        try:
            standby = await self._start_component(
                spec, f"{spec.name}.fallback", fallback, configured=fallback
            )
        except ComponentError as exc:
            logger.error("%s; %s runs without a fallback", exc, spec.name)
            return component
        serving = spec.live_fallback(component, standby, primary, fallback, self.config)
        for entry in self._entries:
            if entry.label == spec.name:
                entry.component = serving
        return serving

    def hook_middleware(self) -> HookMiddleware:
        """The ``before_llm_request``/``after_llm_response`` hooks as one middleware (priority
        0), calling each implementing plugin in pluggy's order."""

        async def before(**kwargs: Any) -> None:
            await self.plugins.acall_each("before_llm_request", runtime=self, **kwargs)

        async def after(**kwargs: Any) -> None:
            await self.plugins.acall_each("after_llm_response", runtime=self, **kwargs)

        return HookMiddleware(before, after)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Run the start stages in order, then the runtime serves.

        On failure, everything already started is stopped again before the error propagates.
        """
        if self.state != "new":
            raise RuntimeError(f"a runtime starts once; this one is {self.state}")
        self.state = "starting"
        began = time.perf_counter()
        try:
            for stage in stages(self.plugins.kinds):
                stage_began = time.perf_counter()
                await stage.run(self)
                logger.info(
                    "stage %s done in %.1f ms",
                    stage.name,
                    (time.perf_counter() - stage_began) * 1000,
                    extra={"stage": stage.name},
                )
        except BaseException:
            logger.error(
                "startup failed; stopping the %d components already started",
                len([e for e in self._entries if e.component is not None]),
            )
            await self._cancel_tasks()
            await self._stop_components()
            self.state = "stopped"
            raise
        finally:
            self._start_done.set()
        self.state = "running"
        logger.info("runtime started in %.1f ms", (time.perf_counter() - began) * 1000)

    async def stop(self, *, deadline: float | None = None) -> None:
        """Run the ``on_shutdown`` hooks, let the replies in progress finish (:meth:`drain`),
        cancel background tasks, and stop every component in reverse start order (its own tasks
        first), each within ``[runtime] stop_timeout``. Safe to call twice, and while the runtime
        is still starting (it waits for the start to end first).

        :param deadline: a :func:`time.monotonic` time by which the whole stop must be done
            (``hubbub serve`` passes the end of ``[server] grace_period``). Every step then gets
            at most what remains: the replies at most ``drain_timeout`` and never the time the
            rest needs (``stop_timeout``, at most half of what remains); a component or task
            still stopping when the deadline has passed gets a last :data:`LAST_CHANCE` seconds,
            then is abandoned and listed in :attr:`abandoned`. Without a deadline, the replies
            get ``drain_timeout`` and each later step ``stop_timeout``.
        """
        if self.state == "starting":
            await self._start_done.wait()
        if self.state in ("stopping", "stopped", "new"):
            self.state = "stopped" if self.state == "new" else self.state
            return
        self.state = "stopping"
        try:
            async with asyncio.timeout(_left(deadline)):
                await self.plugins.acall_each("on_shutdown", runtime=self)
        except TimeoutError:
            logger.error("on_shutdown hooks still ran at the stop deadline; stopping anyway")
        except Exception:
            logger.exception("on_shutdown hook failed; stopping anyway")
        await self.drain(until=self._drain_until(deadline), deadline=deadline)
        await self._cancel_tasks(deadline)
        await self._stop_components(deadline)
        self.state = "stopped"
        logger.info("runtime stopped")

    def _drain_until(self, deadline: float | None) -> float:
        """When the replies in progress must be done, for a stop that ends at ``deadline``."""
        now = time.monotonic()
        until = now + self.config.runtime.drain_timeout
        if deadline is None:
            return until
        reserve = min(self.config.runtime.stop_timeout, max(0.0, deadline - now) / 2)
        return min(until, deadline - reserve)

    def _step(self, deadline: float | None) -> float:
        """Seconds the next stopping step may take: ``stop_timeout``, capped by what remains
        before ``deadline`` (but at least :data:`LAST_CHANCE`)."""
        timeout = self.config.runtime.stop_timeout
        if deadline is None:
            return timeout
        return max(LAST_CHANCE, min(timeout, deadline - time.monotonic()))

    async def drain(self, *, until: float | None = None, deadline: float | None = None) -> None:
        """Let the replies in progress (tasks spawned with ``drain=True``) finish, then cancel
        those still running and wait for them to end: a cancelled reply stores what it had
        produced. The runtime keeps running (``hubbub serve`` drains while its last requests
        finish, then stops); :meth:`stop` drains first too.

        :param until: a :func:`time.monotonic` time until which the replies may run (default:
            ``[runtime] drain_timeout`` seconds from now).
        :param deadline: a :func:`time.monotonic` time by which the cancelled replies must have
            ended (default: ``[runtime] stop_timeout`` after cancelling them).
        """
        draining = [t for t in self._tasks if t in self._drain and not t.done()]
        if not draining:
            return
        if until is None:
            until = time.monotonic() + self.config.runtime.drain_timeout
        wait = max(0.0, until - time.monotonic())
        if wait > 0:
            logger.info("waiting up to %.3g s for %d replies to finish", wait, len(draining))
            await asyncio.wait(draining, timeout=wait)
        running = [t for t in draining if not t.done()]
        if not running:
            return
        logger.warning("stopping %d replies still in progress", len(running))
        for task in running:
            task.cancel()
        await asyncio.wait(running, timeout=self._step(deadline))

    async def _cancel_tasks(self, deadline: float | None = None) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._step(deadline))
            for task in pending:
                self.abandoned.append(f"task {task.get_name()}")
                logger.error("background task %s ignored cancellation; abandoned", task.get_name())

    async def _close(
        self, entry: Entry, *, quiet: bool = False, within: float | None = None
    ) -> Closed:
        """Stop one entry: its tasks, then the component, then its shared resources; each
        within ``within`` seconds (default ``[runtime] stop_timeout``)."""
        timeout = self.config.runtime.stop_timeout if within is None else within
        if entry.tasks is not None:
            self.abandoned += [f"task {n}" for n in await entry.tasks.aclose(timeout)]
        closed: Closed = "closed"
        if entry.component is not None:
            what = f"{entry.label} ({entry.serving})"
            with log_context(component=entry.label):
                closed = await close_within(entry.component.aclose, timeout, what)
        if entry.resources is not None:
            await entry.resources.release_all()
        if closed != "closed" and quiet:
            logger.warning("%s did not close cleanly after failing to start", entry.label)
        return closed

    async def _stop_components(self, deadline: float | None = None) -> None:
        while self._entries:
            entry = self._entries.pop()
            if entry.component is None:
                continue
            began = time.perf_counter()
            outcome = await self._close(entry, within=self._step(deadline))
            if outcome == "timeout":
                self.abandoned.append(entry.label)
            if outcome != "closed":
                continue
            logger.info(
                "stopped %s (%s) in %.1f ms",
                entry.label,
                entry.serving,
                (time.perf_counter() - began) * 1000,
                extra={"component": entry.label},
            )
        for context in self._built:
            tasks = await context.tasks.aclose(self._step(deadline))
            self.abandoned += [f"task {n}" for n in tasks]
            await context.resources.release_all()
        self._built.clear()
        await self.resources.aclose()
        self._components.clear()
        self._core.clear()

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
        logged, and it is cancelled on stop; with ``drain``, only after it has had time to
        finish (replies being written, say: see :meth:`drain`)."""
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
        """Ask every component concurrently, now; aggregate into ``ok``/``degraded``/``down``
        (down when the runtime is not running or a critical component is down)."""
        entries = list(self._entries)
        timeout = self.config.runtime.health_timeout
        checks = await asyncio.gather(*(check(entry, timeout) for entry in entries))
        return aggregate(entries, checks, running=self.state == "running")
