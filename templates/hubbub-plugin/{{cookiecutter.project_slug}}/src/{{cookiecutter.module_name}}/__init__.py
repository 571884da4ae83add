"""{{ cookiecutter.project_name }}: a hubbub plugin.

The entry point in ``pyproject.toml`` makes this module the plugin
``{{ cookiecutter.plugin_name }}``. Through two registration hooks it contributes:

* a tool provider offering the ``{{ cookiecutter.tool_name }}`` tool, which models may call (every
  tool provider is active unless ``[tools] providers`` lists a subset);
* an event sink that counts the events it receives by type and logs each one; enable it with
  ``[events] sinks = ["log", "{{ cookiecutter.plugin_name }}"]``.

Both are registered under the plugin's name. The plugin's settings are the
``[plugins.{{ cookiecutter.plugin_name }}]`` table of ``hubbub.toml``, decoded into
:class:`Settings` before anything starts.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Literal

import msgspec

from hubbub import hookimpl
from hubbub.contracts import ToolContext
from hubbub.models import Health
from hubbub.tools import function_tools

if TYPE_CHECKING:
    from hubbub.events import Event
    from hubbub.registry import ComponentContext, Registrar
    from hubbub.tools import StaticToolProvider

__all__ = ["EventCounter", "Settings", "make_tools", "register_event_sinks", "register_tools"]

PLUGIN = "{{ cookiecutter.plugin_name }}"
"""The plugin's name: its entry point, its settings table, and the name of what it registers."""


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``{{ cookiecutter.plugin_name }}`` plugin, from the
    ``[plugins.{{ cookiecutter.plugin_name }}]`` table. A misspelled key is an error at startup."""

    greeting: str = "Hello"
    """The word the ``{{ cookiecutter.tool_name }}`` tool greets with."""
    event_log_level: Literal["DEBUG", "INFO", "WARNING"] = "DEBUG"
    """The level at which the event sink logs each event it receives."""


# -- the tool ------------------------------------------------------------------------------


def make_tools(settings: Settings) -> StaticToolProvider:
    """The tool provider. ``function_tools`` turns each ``async`` function into a tool named after
    it, described by its docstring, whose arguments' JSON Schema comes from its signature."""

    async def {{ cookiecutter.tool_name }}(context: ToolContext, name: str = "") -> str:
        """Greet someone by name; without a name, greet whoever is asking."""
        # A parameter annotated ToolContext is not a model argument: hubbub fills it in with who
        # the tool runs for.
        asker = context.principal.name if context.principal else None
        return f"{settings.greeting}, {name or asker or 'there'}!"

    return function_tools({{ cookiecutter.tool_name }})


# -- the event sink ------------------------------------------------------------------------


class EventCounter:
    """An event sink (:class:`hubbub.contracts.EventSink`): counts events by type, logs each one.

    hubbub delivers every published event to :meth:`handle` from a bounded queue of the sink's
    own, so a slow sink never slows a conversation. :meth:`health` reports the counts (they appear
    in ``GET /health/ready``); :meth:`aclose` logs the totals when the runtime stops.
    """

    def __init__(self, settings: Settings, logger: logging.Logger) -> None:
        self.level = logging.getLevelNamesMapping()[settings.event_log_level]
        self.logger = logger
        self.counts: Counter[str] = Counter()

    async def start(self) -> None:
        """Nothing to acquire (a sink that writes elsewhere would connect here)."""

    async def health(self) -> Health:
        counts = ", ".join(f"{kind}={n}" for kind, n in sorted(self.counts.items()))
        return Health(detail=f"{self.counts.total()} events" + (f" ({counts})" if counts else ""))

    async def aclose(self) -> None:
        self.logger.info(
            "%d events received", self.counts.total(), extra={"event_counts": dict(self.counts)}
        )

    async def handle(self, event: Event) -> None:
        self.counts[event.type] += 1
        self.logger.log(
            self.level,
            "event %s",
            event.type,
            extra={"event_type": event.type, "conversation_id": event.conversation_id},
        )


# -- the hooks: hand hubbub a factory for each component -----------------------------------


@hookimpl
def register_tools(register: Registrar) -> None:
    def build(context: ComponentContext) -> StaticToolProvider:
        return make_tools(context.settings)

    register(
        PLUGIN,
        build,
        settings=Settings,
        description="offers the {{ cookiecutter.tool_name }} tool",
    )


@hookimpl
def register_event_sinks(register: Registrar) -> None:
    def build(context: ComponentContext) -> EventCounter:
        return EventCounter(context.settings, context.logger)

    register(PLUGIN, build, settings=Settings, description="counts events by type and logs them")
