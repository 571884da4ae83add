"""The ASGI middleware every request passes: request id, log context, metrics, draining.

* ``X-Request-ID`` is taken from the request when it is sane (at most 128 visible ASCII
  characters), else generated; it is bound to the log context and echoed in the response.
* While the server drains for shutdown, new requests get 503 with ``Connection: close`` and
  ``Retry-After: 1`` (another instance, or this one restarted, will answer).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from typing import Any

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from hubbub.log import bind_context, unbind_context
from hubbub_server.metrics import Metrics

__all__ = ["RequestMiddleware", "request_id_for"]

logger = logging.getLogger("hubbub.server.access")

_SANE_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_DRAINING = (
    b'{"type":"about:blank","title":"Service Unavailable","status":503,'
    b'"detail":"the server is shutting down; retry on another instance","code":"draining"}'
)


def request_id_for(scope: Any) -> str:
    """The request's sane ``X-Request-ID``, else a new random one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _SANE_ID.match(text):
                return text
            break
    return os.urandom(16).hex()


class RequestMiddleware:
    """Pure ASGI middleware (no per-request objects beyond what is needed)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, state: Any) -> None:
        self.app = app
        self.metrics = metrics
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # type: ignore[comparison-overlap]
            await self.app(scope, receive, send)
            return
        await self._http(scope, receive, send)

    async def _http(self, scope: Any, receive: Receive, send: Any) -> None:
        request_id = request_id_for(scope)
        header = (b"x-request-id", request_id.encode())
        method = scope["method"]
        if self.state.drain.is_set():
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/problem+json"),
                        (b"connection", b"close"),
                        (b"retry-after", b"1"),
                        header,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": _DRAINING})
            return
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
                route = scope.get("path_template") or "unmatched"
                self.metrics.observe_latency(method, route, time.perf_counter() - started)
            await send(message)

        token = bind_context(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if not self.state.drain.is_set():
                raise
            # The shutdown grace period is over and the server cancels what still runs: end
            # quietly (the client sees its response cut short) rather than with a traceback.
            logger.info("request cut short: the server is stopping")
        finally:
            unbind_context(token)
            route = scope.get("path_template") or "unmatched"
            self.metrics.count_request(method, route, status)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%s %s -> %d in %.1f ms",
                    method,
                    scope["path"],
                    status,
                    (time.perf_counter() - started) * 1000,
                )
