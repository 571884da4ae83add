"""What the runtime knows about each component it started, and health computed from what the
components say now (not from what happened at start)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hubbub.models import ComponentHealth, Health, HealthStatus, RuntimeHealth
from hubbub.services import Resources, Tasks

__all__ = ["Entry", "aggregate", "check"]


@dataclass
class Entry:
    """One component the runtime started (or tried to), and what health needs to know."""

    label: str
    """``cache``, ``auth.api_key``, ``llm``...: the key in health reports."""
    configured: str
    """The backend the configuration asked for."""
    serving: str
    """The backend the runtime started (the fallback's name when it stands in)."""
    component: Any
    """The started component; ``None`` when a non-critical one failed to start."""
    critical: bool
    note: str | None = None
    """Why the configured backend is not serving (its start error)."""
    plugin: str | None = None
    """The plugin that registered it (``None`` for the runtime's own components)."""
    tasks: Tasks | None = None
    resources: Resources | None = None


async def check(entry: Entry, limit: float) -> list[tuple[str, ComponentHealth]]:
    """Ask one component for its health within ``limit`` seconds: its line, then one line per
    part it reports (``<label>.<part>``). A stand-in serving in place of the configured backend
    (chosen at start, or reported by the component now through :attr:`Health.backend`) is at
    best ``degraded``."""
    if entry.component is None:
        detail = entry.note or "not running"
        return [(entry.label, ComponentHealth(status="down", backend=entry.serving, detail=detail))]
    began = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            health = await entry.component.health()
    except TimeoutError:
        health = Health(status="down", detail="health check timed out")
    except Exception as exc:
        health = Health(status="down", detail=f"health check failed: {exc}")
    latency = round((time.perf_counter() - began) * 1000, 3)
    status, detail = health.status, health.detail
    backend = health.backend or entry.serving
    if backend != entry.configured:
        status = "degraded" if status == "ok" else status
        why = entry.note or f"{entry.configured!r} is not available"
        detail = f"fallback serving because {why}" + (f"; {detail}" if detail else "")
    lines = [
        (
            entry.label,
            ComponentHealth(status=status, backend=backend, detail=detail, latency_ms=latency),
        )
    ]
    for name, part in sorted(health.parts.items()):
        lines.append(
            (
                f"{entry.label}.{name}",
                ComponentHealth(
                    status=part.status,
                    backend=part.backend or backend,
                    detail=part.detail,
                    latency_ms=latency,
                ),
            )
        )
    return lines


def aggregate(
    entries: Sequence[Entry],
    checks: Sequence[Sequence[tuple[str, ComponentHealth]]],
    *,
    running: bool,
) -> RuntimeHealth:
    """``down`` when the runtime is not running or a critical component is down, ``degraded``
    when anything is not ``ok`` (a part of a component included), else ``ok``."""
    components = {label: health for lines in checks for label, health in lines}
    critical_down = any(
        components[entry.label].status == "down" for entry in entries if entry.critical
    )
    status: HealthStatus
    if not running or critical_down:
        status = "down"
    elif any(c.status != "ok" for c in components.values()):
        status = "degraded"
    else:
        status = "ok"
    return RuntimeHealth(status=status, components=components)
