"""Registries: what plugins registered, by kind and name, and who registered it.

Plugins never touch a :class:`Registry` directly; they call the :class:`Registrar` their
registration hook receives, which validates the arguments and records the plugin's name, so a
conflict can name both plugins.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from hubbub.errors import ComponentError, PluginError

if TYPE_CHECKING:
    from hubbub.config import Config
    from hubbub.runtime import Runtime

__all__ = [
    "KINDS",
    "ComponentContext",
    "Kind",
    "Registrar",
    "Registration",
    "Registry",
    "check_component",
]

Kind = Literal["cache", "memory", "auth", "llm", "tools", "events", "routes"]

KINDS: dict[Kind, str] = {
    "cache": "register_cache_backends",
    "memory": "register_memory_stores",
    "auth": "register_auth_methods",
    "llm": "register_llm_providers",
    "tools": "register_tools",
    "events": "register_event_sinks",
    "routes": "register_routes",
}
"""Each kind of registration and the hook that collects it."""

# The coroutine methods each kind's components must have (``routes`` factories return handlers).
_REQUIRED: dict[Kind, tuple[str, ...]] = {
    "cache": ("start", "health", "aclose", "get", "set", "delete", "incr"),
    "memory": (
        "start",
        "health",
        "aclose",
        "create_conversation",
        "get_conversation",
        "list_conversations",
        "update_conversation",
        "delete_conversation",
        "append_message",
        "list_messages",
        "recent_messages",
    ),
    "auth": ("start", "health", "aclose", "authenticate", "is_provisioned"),
    "llm": ("start", "health", "aclose", "list_models", "complete"),
    "tools": ("start", "health", "aclose"),
    "events": ("start", "health", "aclose", "handle"),
    "routes": (),
}
_REQUIRED_SYNC: dict[Kind, tuple[str, ...]] = {"llm": ("stream",), "tools": ("tools",)}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Registration:
    """One registered factory."""

    kind: Kind
    name: str
    factory: Callable[[ComponentContext], Any]
    plugin: str
    """Name of the plugin that registered it."""
    settings: type[msgspec.Struct] | None = None
    """The struct ``[plugins.<plugin>]`` is decoded into, if the plugin takes settings."""
    description: str = ""


class Registry:
    """Registrations of one kind, by name."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self._items: dict[str, Registration] = {}

    def add(self, registration: Registration) -> None:
        """Add a registration; a name taken by another plugin is a :class:`PluginError`."""
        existing = self._items.get(registration.name)
        if existing is not None:
            raise PluginError(
                f"{self.kind} {registration.name!r} is registered twice: by plugin "
                f"{existing.plugin!r} and by plugin {registration.plugin!r}; disable one of them "
                "with [plugins] disabled = [...]"
            )
        self._items[registration.name] = registration

    def get(self, name: str) -> Registration | None:
        return self._items.get(name)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __iter__(self) -> Iterator[Registration]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


class Registrar:
    """The ``register`` callable a registration hook receives, bound to one plugin and kind."""

    def __init__(self, registry: Registry, plugin: str) -> None:
        self._registry = registry
        self._plugin = plugin

    def __call__(
        self,
        name: str,
        factory: Callable[[ComponentContext], Any],
        *,
        settings: type[msgspec.Struct] | None = None,
        description: str = "",
    ) -> None:
        """Register ``factory`` under ``name``.

        :param name: unique within the kind; letters, digits, ``_``, ``.`` and ``-``.
        :param factory: called with a :class:`ComponentContext`; returns the component.
        :param settings: optional :class:`msgspec.Struct` type for ``[plugins.<plugin>]``.
        :param description: one line shown by ``hubbub plugins``.
        """
        where = f"plugin {self._plugin!r} registering {self._registry.kind} {name!r}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise PluginError(
                f"{where}: the name must be a non-empty string of letters, digits, '_', '.' and '-'"
            )
        if not callable(factory):
            raise PluginError(f"{where}: the factory must be callable, got {type(factory)!r}")
        if settings is not None and not (
            isinstance(settings, type) and issubclass(settings, msgspec.Struct)
        ):
            raise PluginError(f"{where}: settings must be a msgspec.Struct subclass")
        self._registry.add(
            Registration(
                kind=self._registry.kind,
                name=name,
                factory=factory,
                plugin=self._plugin,
                settings=settings,
                description=description,
            )
        )


@dataclass
class ComponentContext:
    """What a factory receives: its settings and the surroundings it may need."""

    name: str
    """The registered name being built."""
    kind: Kind
    plugin: str
    """The plugin that registered it."""
    settings: Any
    """The plugin's decoded settings struct, or ``None`` when it declared none."""
    config: Config
    """The whole configuration."""
    data_dir: Path
    """Directory for the component's files (created on demand by the runtime)."""
    runtime: Runtime | None = None
    """The runtime building the component; components started later can use earlier ones
    (``runtime.cache``, ``runtime.events``...)."""
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("hubbub"))
    """A logger named ``hubbub.plugins.<plugin>``."""


def check_component(kind: Kind, registration: Registration, component: Any) -> None:
    """Raise :class:`ComponentError` naming the missing methods if ``component`` does not
    satisfy its kind's contract. Explicit, so the message says what is wrong."""
    problems = []
    for method in _REQUIRED[kind]:
        value = getattr(component, method, None)
        if value is None:
            problems.append(f"{method}() is missing")
        elif not inspect.iscoroutinefunction(value):
            problems.append(f"{method}() must be async")
    for method in _REQUIRED_SYNC.get(kind, ()):
        if not callable(getattr(component, method, None)):
            problems.append(f"{method}() is missing")
    if problems:
        raise ComponentError(
            f"{kind} {registration.name!r} from plugin {registration.plugin!r} built a "
            f"{type(component).__name__} that does not satisfy the contract: " + "; ".join(problems)
        )
