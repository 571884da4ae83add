"""Finding, loading and calling plugins.

:func:`load_plugins` builds a fresh :class:`Plugins` (never at import: each runtime, CLI call and
test gets its own). Plugins come from the ``hubbub`` entry-point group, built-ins included, so the
same rules apply to all of them:

* ``HUBBUB_LOAD_PLUGINS=a,b`` loads only the named entry points (empty: none);
* ``[plugins] disabled = [...]`` (or the ``disabled`` argument) blocks plugins by name;
* a plugin that fails to import, has a misspelled hook, or raises in a hook is reported by name
  and distribution; the other plugins keep working, so ``hubbub plugins`` can still show what is
  wrong. Load failures are recorded in :attr:`Plugins.info` (logged only at DEBUG level), and the
  caller reports them once (:meth:`Plugins.raise_for_failures`, ``hubbub plugins``);
* ``HUBBUB_TRACE_PLUGINS=1`` logs every hook call.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar, cast

import pluggy

from hubbub import hookspecs
from hubbub.errors import PluginError, blame, did_you_mean
from hubbub.kinds import KINDS, KindSpec
from hubbub.registry import Kind, Registrar, Registry

__all__ = ["ENTRY_POINT_GROUP", "PluginInfo", "Plugins", "load_plugins", "maybe_await"]

ENTRY_POINT_GROUP = "hubbub"
BUILTIN_DISTRIBUTION = "hubbub"

logger = logging.getLogger("hubbub.plugins")

T = TypeVar("T")


async def maybe_await(value: T | Awaitable[T]) -> T:
    """Await ``value`` if it is awaitable, else return it: the one place hook results are
    awaited."""
    if inspect.isawaitable(value):
        return await cast(Awaitable[T], value)
    return value


@dataclass
class PluginInfo:
    """What ``hubbub plugins`` shows about one plugin."""

    name: str
    source: str
    """``built-in``, the distribution that installed it, or ``registered`` (added in code)."""
    version: str | None = None
    distribution: str | None = None
    module: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    """Why the plugin is not active, when it failed."""

    def describe(self) -> str:
        """``'name' (distribution version)`` for messages."""
        if self.distribution:
            return f"plugin {self.name!r} (distribution {self.distribution} {self.version})"
        return f"plugin {self.name!r}"


class Plugins:
    """A pluggy manager plus what hubbub knows about each plugin."""

    def __init__(self, kinds: Sequence[KindSpec] = KINDS) -> None:
        self.pm = pluggy.PluginManager("hubbub")
        self.pm.add_hookspecs(hookspecs)
        self.kinds: tuple[KindSpec, ...] = tuple(kinds)
        """The kinds of component registrations are collected for (:data:`hubbub.kinds.KINDS`)."""
        for spec in self.kinds:
            if not hasattr(self.pm.hook, spec.hook):
                self.pm.add_hookspecs(_registration_spec(spec))
        self.info: dict[str, PluginInfo] = {}
        self._registries: dict[Kind, Registry] | None = None
        self._callers: dict[tuple[str, str], Callable[..., Any]] = {}
        self._implementers: dict[str, list[str]] = {}

    # -- loading ---------------------------------------------------------------------------

    def register(
        self,
        plugin: object,
        name: str | None = None,
        *,
        source: str = "registered",
        distribution: str | None = None,
        version: str | None = None,
    ) -> str:
        """Register a plugin object or module (what entry points do, and tests do directly).

        Raises :class:`PluginError` naming the plugin when its hooks do not match the specs.
        """
        plugin_name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        info = PluginInfo(
            name=plugin_name,
            source=source,
            distribution=distribution,
            version=version,
            module=getattr(plugin, "__name__", None) if isinstance(plugin, ModuleType) else None,
        )
        try:
            self.pm.register(plugin, name=plugin_name)
            self.pm.check_pending()
            wrappers = [
                caller.name
                for caller in self.pm.get_hookcallers(plugin) or []
                for impl in caller.get_hookimpls()
                if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper)
            ]
            if wrappers:
                hook = wrappers[0]
                raise pluggy.PluginValidationError(
                    plugin,
                    f"implements {hook!r} as a wrapper (wrapper=True or hookwrapper=True), "
                    "which hubbub does not support: hooks are called one plugin at a time, so "
                    "a wrapper would not wrap the others, and it cannot wrap async code; use "
                    "middleware instead (register_llm_middleware, register_tool_middleware)",
                )
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            info.error = self._explain_validation(exc)
            self.info[plugin_name] = info
            raise PluginError(f"{info.describe()}: {info.error}") from None
        except ValueError as exc:  # name already registered, or blocked
            raise PluginError(f"{info.describe()} cannot be registered: {exc}") from None
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        self.info[plugin_name] = info
        self._forget()
        return plugin_name

    def _forget(self) -> None:
        """Drop what was derived from the set of registered plugins."""
        self._registries = None
        self._callers.clear()
        self._implementers.clear()

    def _explain_validation(self, exc: pluggy.PluginValidationError) -> str:
        message = str(exc)
        known = [name for name, caller in vars(self.pm.hook).items() if caller.spec is not None]
        if "unknown hook" in message:
            hook = message.split("unknown hook", 1)[1].split()[0].strip("'\"")
            return f"implements unknown hook {hook!r}{did_you_mean(hook, known)}"
        return message

    def load_entry_points(
        self, *, only: Iterable[str] | None = None, disabled: Iterable[str] = ()
    ) -> None:
        """Load the ``hubbub`` entry points, each in its own ``try``; failures are recorded in
        :attr:`info` with their error, not raised."""
        wanted = set(only) if only is not None else None
        blocked = set(disabled)
        seen: dict[str, str | None] = {}
        for entry_point in sorted(
            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name
        ):
            dist = entry_point.dist
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            if entry_point.name in seen:
                if seen[entry_point.name] != dist_name:  # not merely the same one found twice
                    self._conflict(entry_point.name, seen[entry_point.name], dist_name)
                continue
            seen[entry_point.name] = dist_name
            if entry_point.name in blocked:
                self.pm.set_blocked(entry_point.name)
                continue
            if wanted is not None and entry_point.name not in wanted:
                continue
            source = "built-in" if dist_name == BUILTIN_DISTRIBUTION else (dist_name or "unknown")
            try:
                module = entry_point.load()
            except Exception as exc:  # a broken plugin must not take the others down
                info = PluginInfo(
                    name=entry_point.name,
                    source=source,
                    version=version,
                    distribution=dist_name,
                    module=entry_point.value,
                    error=f"failed to import {entry_point.value}: {type(exc).__name__}: {exc}",
                )
                self.info[entry_point.name] = info
                logger.debug("%s %s", info.describe(), info.error)  # reported by the caller
                continue
            try:
                self.register(
                    module, entry_point.name, source=source, distribution=dist_name, version=version
                )
            except PluginError as exc:
                logger.debug("%s", exc)  # recorded in info; reported by the caller

    def _conflict(self, name: str, first: str | None, second: str | None) -> None:
        """Two distributions declare the same plugin name: load neither, and say so."""
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
            self._forget()
        info = self.info.get(name) or PluginInfo(name=name, source=second or "unknown")
        info.error = (
            f"two distributions declare a plugin named {name!r}: {first} and {second}; "
            "uninstall one of them"
        )
        self.info[name] = info
        logger.debug("%s", info.error)  # reported by the caller

    # -- introspection ---------------------------------------------------------------------

    @property
    def failures(self) -> list[PluginInfo]:
        """Plugins that could not be loaded."""
        return [info for info in self.info.values() if info.error]

    def raise_for_failures(self) -> None:
        """Raise one :class:`PluginError` listing every plugin that failed to load."""
        failures = self.failures
        if failures:
            lines = [f"{info.describe()}: {info.error}" for info in failures]
            raise PluginError(
                "; ".join(lines)
                + " (disable it with [plugins] disabled = [...] or HUBBUB_LOAD_PLUGINS)"
            )

    def describe(self, plugin_name: str) -> str:
        info = self.info.get(plugin_name)
        return info.describe() if info else f"plugin {plugin_name!r}"

    # -- calling ---------------------------------------------------------------------------

    def implementers(self, hook_name: str) -> list[str]:
        """Names of the plugins implementing ``hook_name``, in pluggy's call order."""
        names = self._implementers.get(hook_name)
        if names is None:
            hook = getattr(self.pm.hook, hook_name)
            names = [impl.plugin_name for impl in reversed(hook.get_hookimpls())]
            self._implementers[hook_name] = names
        return names

    def _caller(self, hook_name: str, plugin_name: str) -> Callable[..., Any]:
        key = (hook_name, plugin_name)
        caller = self._callers.get(key)
        if caller is None:
            others = [p for name, p in self.pm.list_name_plugin() if name != plugin_name]
            caller = self.pm.subset_hook_caller(hook_name, remove_plugins=others)
            self._callers[key] = caller
        return caller

    def call_one(self, plugin_name: str, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call one plugin's implementation of ``hook_name``; an exception becomes a
        :class:`PluginError` that names the plugin and its distribution."""
        try:
            return list(self._caller(hook_name, plugin_name)(**kwargs))
        except Exception as exc:
            raise blame(exc, f"{self.describe(plugin_name)} failed in {hook_name}") from exc

    async def acall_each(self, hook_name: str, **kwargs: Any) -> None:
        """Call ``hook_name`` on each implementing plugin in turn, awaiting each result (the
        async rule); errors name the plugin (see :meth:`call_one`)."""
        for plugin_name in self.implementers(hook_name):
            for value in self.call_one(plugin_name, hook_name, **kwargs):
                try:
                    await maybe_await(value)
                except Exception as exc:
                    where = f"{self.describe(plugin_name)} failed in {hook_name}"
                    raise blame(exc, where) from exc

    async def acall_first(self, hook_name: str, **kwargs: Any) -> Any:
        """Call ``hook_name`` on each implementing plugin in turn, awaiting each result, until
        one answers something other than ``None``; that answer (``None`` when none did).
        Errors name the plugin (see :meth:`call_one`)."""
        for plugin_name in self.implementers(hook_name):
            for value in self.call_one(plugin_name, hook_name, **kwargs):
                try:
                    result = await maybe_await(value)
                except Exception as exc:
                    where = f"{self.describe(plugin_name)} failed in {hook_name}"
                    raise blame(exc, where) from exc
                if result is not None:
                    return result
        return None

    def has_implementations(self, hook_name: str) -> bool:
        """Whether any plugin implements ``hook_name``."""
        return bool(self.implementers(hook_name))

    def registries(self) -> Mapping[Kind, Registry]:
        """Collect every registration hook once; cached until another plugin is registered."""
        if self._registries is None:
            registries: dict[Kind, Registry] = {}
            for spec in self.kinds:
                registry = Registry(spec.name)
                for plugin_name in self.implementers(spec.hook):
                    self.call_one(plugin_name, spec.hook, register=Registrar(registry, plugin_name))
                registries[spec.name] = registry
            self._registries = registries
        return self._registries

    def trace(self) -> None:
        """Log every hook call and its outcome at DEBUG level on ``hubbub.plugins.trace``."""
        trace_logger = logging.getLogger("hubbub.plugins.trace")

        def before(
            hook_name: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]
        ) -> None:
            trace_logger.debug("call %s -> %s", hook_name, [i.plugin_name for i in impls])

        def after(
            outcome: pluggy.Result[Any],
            hook_name: str,
            impls: Sequence[pluggy.HookImpl],
            kwargs: Mapping[str, Any],
        ) -> None:
            error = outcome.exception
            trace_logger.debug("done %s%s", hook_name, f" raised {error!r}" if error else "")

        self.pm.add_hookcall_monitoring(before, after)


def _registration_spec(spec: KindSpec) -> type:
    """A hook spec for a kind whose hook :mod:`hubbub.hookspecs` does not declare (a kind
    added to the table by an embedding application or a test)."""

    def register(register: Registrar) -> None:
        """Register components."""

    register.__name__ = spec.hook
    register.__doc__ = f"Register {spec.title}s ({spec.description})"
    namespace = type(spec.hook, (), {spec.hook: staticmethod(hookspecs.hookspec(register))})
    return namespace


def load_plugins(
    *,
    disabled: Iterable[str] = (),
    extra: Iterable[object] = (),
    entry_points: bool = True,
    only: Iterable[str] | None = None,
    env: Mapping[str, str] | None = None,
    kinds: Sequence[KindSpec] = KINDS,
) -> Plugins:
    """Build a :class:`Plugins`: entry points (filtered by ``only``, else
    ``HUBBUB_LOAD_PLUGINS``, and by ``disabled``), then ``extra`` plugin objects (registered
    under their ``__name__``).

    Failures to load are recorded, not raised; call :meth:`Plugins.raise_for_failures` where a
    broken plugin must stop the program.
    """
    environ = os.environ if env is None else env
    plugins = Plugins(kinds)
    blocked = list(disabled)
    if entry_points:
        only_text = environ.get("HUBBUB_LOAD_PLUGINS")
        if only is None and only_text is not None:
            only = [name.strip() for name in only_text.split(",") if name.strip()]
        plugins.load_entry_points(only=only, disabled=blocked)
    for plugin in extra:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        if name in blocked:
            continue
        plugins.register(plugin, name)
    if environ.get("HUBBUB_TRACE_PLUGINS", "").lower() in {"1", "true", "yes"}:
        plugins.trace()
    return plugins
