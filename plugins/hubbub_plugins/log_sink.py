"""Event sink ``log``: every event as a structured log record on ``hubbub.events.log``.

Events are logged at DEBUG (a busy server publishes many), ``error`` events at WARNING.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from hubbub import hookimpl
from hubbub.events import ErrorEvent, Event
from hubbub.models import Health

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar


class LogSinkSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Settings of the ``log_sink`` plugin (``[plugins.log_sink]``)."""

    logger: str = "hubbub.events.log"
    """Name of the logger events are written to."""
    include_data: bool = False
    """Also log each event's full JSON (may contain message text)."""


class LogSink:
    """A :class:`hubbub.contracts.EventSink` that logs events."""

    def __init__(self, settings: LogSinkSettings) -> None:
        self.settings = settings
        self.logger = logging.getLogger(settings.logger)
        self.handled = 0

    async def start(self) -> None:
        """Nothing to acquire."""

    async def health(self) -> Health:
        return Health(detail=f"{self.handled} events logged")

    async def aclose(self) -> None:
        """Nothing to release."""

    async def handle(self, event: Event) -> None:
        self.handled += 1
        level = logging.WARNING if isinstance(event, ErrorEvent) else logging.DEBUG
        if not self.logger.isEnabledFor(level):
            return
        extra: dict[str, object] = {"event_id": event.id, "event_type": event.type}
        if event.conversation_id:
            extra["conversation_id"] = event.conversation_id
        if self.settings.include_data:
            extra["data"] = msgspec.json.encode(event).decode()
        self.logger.log(level, "event %s", event.type, extra=extra)


@hookimpl
def register_event_sinks(register: Registrar) -> None:
    def build(context: ComponentContext[LogSinkSettings]) -> LogSink:
        return LogSink(context.settings)

    register("log", build, settings=LogSinkSettings, description="logs every event")
