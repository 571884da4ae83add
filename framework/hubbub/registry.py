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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from hubbub.config import Config
from hubbub.errors import ComponentError, PluginError
from hubbub.events.bus import EventBus
from hubbub.kinds import KindSpec, Member, protocol_members
from hubbub.services import Resources, Tasks

if TYPE_CHECKING:
    from hubbub.auth.apikeys import ApiKeys
    from hubbub.auth.users import Users
    from hubbub.contracts import AccountStore

__all__ = [
    "ComponentContext",
    "Kind",
    "Registrar",
    "Registration",
    "Registry",
    "check_component",
]

Kind = str
"""A kind's name (see :data:`hubbub.kinds.KINDS`): ``cache``, ``memory``, ``llm``..."""

SettingsT = TypeVar("SettingsT")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Registration:
    """One registered factory."""

    kind: Kind
    name: str
    factory: Callable[[ComponentContext[Any]], Any]
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
        factory: Callable[[ComponentContext[Any]], Any],
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
class ComponentContext(Generic[SettingsT]):
    """What a factory receives: its settings and the services the runtime owns for it.

    Annotate a factory's parameter as ``ComponentContext[MySettings]`` and ``context.settings``
    is typed. Components use the services here (``tasks``, ``resources``, ``logger``) rather
    than reaching into the runtime.
    """

    name: str
    """The registered name being built."""
    kind: Kind
    """The kind being built (``cache``, ``llm``...)."""
    plugin: str
    """The plugin that registered it."""
    settings: SettingsT
    """The plugin's decoded ``[plugins.<plugin>]`` settings struct, or ``None`` when it declared
    none."""
    config: Config
    """The whole configuration (frozen)."""
    data_dir: Path
    """Directory for the component's files (created by the runtime before anything starts)."""
    tasks: Tasks
    """Background tasks the runtime supervises for this component: failures logged, restarted
    with back-off when asked, cancelled before the component stops."""
    resources: Resources
    """Shared resources (one Redis client per URL, one PostgreSQL pool...): created on first use,
    closed after the last component that used them has stopped."""
    events: EventBus
    """The runtime's event bus: publish events, subscribe to them, or hand over events that
    arrived from another process (:meth:`~hubbub.events.EventBus.deliver`)."""
    runtime: Any = None
    """The :class:`hubbub.runtime.Runtime`, for route factories that serve it; other components
    use the services above and the components handed to them."""

    @property
    def accounts(self) -> AccountStore:
        """The account store (:class:`hubbub.contracts.AccountStore`) where users, sessions
        and API keys are kept, for auth methods that keep credentials of their own there
        (through :class:`hubbub.auth.records.Records`); available to every kind that starts
        after it (auth methods and later)."""
        accounts: AccountStore = self.runtime.accounts
        return accounts

    @property
    def users(self) -> Users:
        """The local accounts (:class:`hubbub.auth.users.Users`), for auth methods that check
        passwords; available to every kind that starts after the account store (auth methods
        and later)."""
        users: Users = self.runtime.users
        return users

    @property
    def api_keys(self) -> ApiKeys:
        """The API keys in the account store (:class:`hubbub.auth.apikeys.ApiKeys`), for the
        auth method that checks them; available to every kind that starts after the account
        store (auth methods and later)."""
        api_keys: ApiKeys = self.runtime.api_keys
        return api_keys

    @property
    def logger(self) -> logging.Logger:
        """A logger named ``hubbub.plugins.<plugin>``."""
        return logging.getLogger(f"hubbub.plugins.{self.plugin}")


def _problems(component: Any, members: list[Member]) -> list[str]:
    problems = []
    for member in members:
        missing = object()
        value = getattr(component, member.name, missing)
        if value is missing or (value is None and member.form != "attribute"):
            problems.append(f"{member.name}{'()' if member.form != 'attribute' else ''} is missing")
        elif member.form == "coroutine" and not inspect.iscoroutinefunction(value):
            problems.append(f"{member.name}() must be async")
        elif member.form == "callable" and not callable(value):
            problems.append(f"{member.name}() must be callable")
        elif member.form == "callable" and inspect.iscoroutinefunction(value):
            problems.append(
                f"{member.name}() must not be a coroutine (a plain method or an async generator)"
            )
    return problems


def check_component(spec: KindSpec, registration: Registration, component: Any) -> None:
    """Raise :class:`ComponentError` naming what is missing if ``component`` does not satisfy
    its kind's Protocol (and, when it has part of a variant, all of that variant). The members
    are read from the Protocols, so the message says exactly what is wrong."""
    if spec.protocol is None:
        return
    problems = _problems(component, protocol_members(spec.protocol))
    base = {member.name for member in protocol_members(spec.protocol)}
    for variant in spec.variants:
        extra = [m for m in protocol_members(variant) if m.name not in base]
        if any(getattr(component, m.name, None) is not None for m in extra):
            found = _problems(component, extra)
            problems += [f"{problem} (for {variant.__name__})" for problem in found]
    if problems:
        raise ComponentError(
            f"{spec.name} {registration.name!r} from plugin {registration.plugin!r} built a "
            f"{type(component).__name__} that does not satisfy {spec.protocol.__name__}: "
            + "; ".join(problems)
        )
