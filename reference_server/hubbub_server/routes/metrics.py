"""``GET /metrics`` (Prometheus text format)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST

from hubbub_server.security import RuntimeDep

__all__ = ["metrics_endpoint"]


# Prometheus' text format; Litestar adds the charset itself.
MEDIA_TYPE = CONTENT_TYPE_LATEST.split(";")[0] + "; version=1.0.0"


@get("/metrics", tags=["operations"], summary="Prometheus metrics", media_type=MEDIA_TYPE)
async def metrics_endpoint(request: Request[Any, Any, Any], runtime: RuntimeDep) -> Response[bytes]:
    body = request.app.state.metrics.render(await runtime.health())
    return Response(body, media_type=MEDIA_TYPE)
