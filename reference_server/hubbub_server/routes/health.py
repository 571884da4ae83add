"""``/health/live`` and ``/health/ready``.

Readiness is public (load balancers and orchestrators poll it without credentials), so what it
shows depends on the caller: the full report (every component's backend, detail and latency:
paths, counts, whether local mode is on) goes to callers on this machine and to admins
(``Authorization: Bearer`` with an admin's credentials); anyone else gets the overall status,
with the same HTTP status code, and an empty ``components`` object. Component names are left
out too: they name the installed plugins.

A caller is on this machine when its connection comes from a loopback address, or has no
network address at all (a Unix socket, an in-process test client). Behind a reverse proxy on
the same machine every caller would look local unless the proxy passes ``X-Forwarded-For``,
which uvicorn applies for proxies on loopback.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.openapi.datastructures import ResponseSpec

from hubbub.auth.roles import ADMIN
from hubbub.errors import HubbubError
from hubbub.models import RuntimeHealth
from hubbub_server.security import RuntimeDep, provide_principal

__all__ = ["HealthController"]


def _on_this_machine(request: Request[Any, Any, Any]) -> bool:
    client = request.client
    if client is None:
        return True  # a Unix socket
    try:
        return ipaddress.ip_address(client.host).is_loopback
    except ValueError:
        return True  # no network peer: an in-process client


async def _sees_details(request: Request[Any, Any, Any], runtime: RuntimeDep) -> bool:
    """Whether the caller may see the full report: on this machine, or an admin. Credentials
    that are missing or refused only mean the summary (a probe must not fail on a stale key)."""
    if _on_this_machine(request):
        return True
    if not any(name == b"authorization" for name, _ in request.scope["headers"]):
        return False  # never the local user of local mode: that one is for loopback
    try:
        principal = await provide_principal(request, runtime)
    except HubbubError:
        return False
    return ADMIN in principal.roles


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", summary="Liveness: 200 while the process serves")
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get(
        "/ready",
        summary="Readiness: every component's health; 503 when down",
        description=(
            "The full report (each component's status, backend, detail and latency) goes to "
            "callers on the server's machine and to admins; anyone else gets the overall "
            "status and an empty `components` object. 503 when the status is `down`."
        ),
        responses={
            503: ResponseSpec(
                data_container=RuntimeHealth,
                description="The runtime is not running, or a critical component is down",
                generate_examples=False,
            )
        },
    )
    async def ready(self, request: Request[Any, Any, Any], runtime: RuntimeDep) -> Response[Any]:
        health = await runtime.health()
        status_code = 503 if health.status == "down" else 200
        if not await _sees_details(request, runtime):
            health = RuntimeHealth(status=health.status, components={})
        return Response(health, status_code=status_code)
