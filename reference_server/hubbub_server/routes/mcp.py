"""``/mcp``: hubbub's tools over MCP (streamable HTTP), for MCP clients.

A thin mount of :class:`hubbub.mcp_server.McpEndpoint`: every request is authenticated like the
rest of the API (``Authorization: Bearer <API key or access token>``; none or an invalid one is
a 401 problem with ``WWW-Authenticate: Bearer`` before any MCP processing), its body held to
``[server] max_body_bytes`` (413), and only ``POST`` is served (the endpoint is stateless: no
``GET`` stream, no session to ``DELETE``; 405). Cross-site browser requests never get this far:
the browser checks (:mod:`hubbub_server.browser`) refuse a ``POST`` whose ``Origin`` is not the
server's own or listed in ``[server] cors_origins``, as MCP asks servers to. ``[mcp] serve =
false`` leaves the route out.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from litestar import Request, asgi
from litestar.config.app import AppConfig
from litestar.exceptions import HTTPException, MethodNotAllowedException
from litestar.types import Receive, ReceiveMessage, Scope, Send

from hubbub.log import current_context
from hubbub.mcp_server import McpCaller, McpEndpoint, set_caller
from hubbub.runtime import Runtime
from hubbub_server.security import provide_principal

__all__ = ["MCP_PATH", "mount_mcp"]

MCP_PATH = "/mcp"
"""Where the MCP endpoint is served."""


async def _read_body(receive: Receive, limit: int) -> Receive:
    """Read the request body whole (413 past ``limit`` bytes) and return a ``receive`` that
    gives it again, then whatever comes next (a disconnect)."""
    messages: deque[ReceiveMessage] = deque()
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > limit:
            raise HTTPException(status_code=413)
        if not message.get("more_body", False):
            break

    async def replay() -> ReceiveMessage:
        return messages.popleft() if messages else await receive()

    return replay


def mcp_handler(endpoint: McpEndpoint, runtime: Runtime, max_body_bytes: int) -> Any:
    """The ASGI route handler serving ``endpoint`` at :data:`MCP_PATH`."""

    @asgi(MCP_PATH, copy_scope=False)
    async def mcp(scope: Scope, receive: Receive, send: Send) -> None:
        http: Any = scope  # an HTTP scope: Litestar routes no websocket here
        principal = await provide_principal(Request(scope, receive), runtime)
        if http["method"] != "POST":
            raise MethodNotAllowedException(headers={"Allow": "POST"})
        declared = dict(http["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise HTTPException(status_code=413)
        replay = await _read_body(receive, max_body_bytes)
        set_caller(http, McpCaller(principal, request_id=current_context().get("request_id")))
        await endpoint.handle(http, replay, send)

    return mcp


def mount_mcp(app_config: AppConfig, runtime: Runtime) -> None:
    """Add the ``/mcp`` route, and the lifespan that runs its session manager, to an app being
    configured (unless ``[mcp] serve = false``)."""
    if not runtime.config.mcp.serve:
        return
    limit = runtime.config.server.max_body_bytes
    endpoint = McpEndpoint(runtime, max_body_bytes=limit)
    app_config.route_handlers.append(mcp_handler(endpoint, runtime, limit))
    app_config.lifespan.append(lambda _app: endpoint.running())
