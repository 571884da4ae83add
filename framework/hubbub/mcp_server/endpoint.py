"""The MCP endpoint as an ASGI callable: stateless streamable HTTP with JSON responses.

Stateless: every HTTP request is served on its own (no ``Mcp-Session-Id``, no server-sent
notifications), so any process of a deployment can answer any request, and each request's own
credentials are the ones that count. The ``mcp`` package's session manager runs in
:meth:`McpEndpoint.running`, which the app's lifespan enters; a manager runs once, so each
start of the app makes a new one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

from hubbub.errors import ComponentError
from hubbub.mcp_server.server import build_server
from hubbub.runtime import Runtime

__all__ = ["McpEndpoint"]

_TRANSPORT_LOGGER = "mcp.server.streamable_http"


class _QuietStatelessEnd(logging.Filter):
    """Drops the transport's "Terminating session: None" record, which it logs at INFO at the
    end of every stateless request (one line per request says nothing)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and record.msg == "Terminating session: None")


_QUIET = _QuietStatelessEnd()


class McpEndpoint:
    """Serve ``runtime``'s tools over MCP to callers authenticated by the caller of
    :meth:`handle` (:func:`hubbub.mcp_server.set_caller`)."""

    def __init__(self, runtime: Runtime, *, max_body_bytes: int) -> None:
        self.server = build_server(runtime)
        """The MCP server (its tool handlers)."""
        self.max_body_bytes = max_body_bytes
        """The largest request body the session manager reads (the mount should refuse larger
        ones first, in its own error format)."""
        self._manager: StreamableHTTPSessionManager | None = None
        logging.getLogger(_TRANSPORT_LOGGER).addFilter(_QUIET)  # the same filter: added once

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run a session manager while the block runs (the app's lifespan); requests in flight
        when it ends are cancelled."""
        manager = StreamableHTTPSessionManager(
            app=self.server,
            stateless=True,
            json_response=True,
            max_request_body_size=self.max_body_bytes,
        )
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        """Serve one HTTP request whose caller is already in ``scope``.
        :class:`ComponentError` when the endpoint is not running."""
        manager = self._manager
        if manager is None:
            raise ComponentError("the MCP endpoint is not running")
        await manager.handle_request(scope, receive, send)
