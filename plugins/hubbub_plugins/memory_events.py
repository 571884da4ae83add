"""Event log ``memory`` (the default): the events of this process alone.

Streams see the events of the process they are connected to, and a client resumes only on the
process it was connected to. With several server processes, use ``redis``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubbub import hookimpl
from hubbub.events import MemoryEventLog

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar


@hookimpl
def register_event_logs(register: Registrar) -> None:
    def build(context: ComponentContext[None]) -> MemoryEventLog:
        events = context.config.events
        return MemoryEventLog(
            retention_events=events.retention_events,
            retention_seconds=events.retention_seconds,
        )

    register("memory", build, description="events of this process only")
