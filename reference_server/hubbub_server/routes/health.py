"""``/health/live`` and ``/health/ready``."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get

from hubbub_server.security import RuntimeDep

__all__ = ["HealthController"]


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", summary="Liveness: 200 while the process serves")
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", summary="Readiness: every component's health; 503 when down")
    async def ready(self, runtime: RuntimeDep) -> Response[Any]:
        health = await runtime.health()
        return Response(health, status_code=503 if health.status == "down" else 200)
