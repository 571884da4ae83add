"""Who an MCP message runs for: the caller of the HTTP request that carried it.

The endpoint's owner authenticates the request and stores an :class:`McpCaller` in its ASGI
scope (:func:`set_caller`). The MCP server hands each handler the HTTP request that carried the
message (``ctx.request``, a Starlette request over that same scope), so :func:`caller_of` finds
the right caller however the session manager schedules the handler: no context variable has to
survive its task group.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from hubbub.errors import AuthenticationError
from hubbub.models import Principal

__all__ = ["CALLER_KEY", "McpCaller", "caller_of", "set_caller"]

CALLER_KEY = "hubbub.mcp.caller"
"""The ASGI scope key that holds the request's :class:`McpCaller`."""


@dataclass(frozen=True, slots=True)
class McpCaller:
    """The authenticated caller of one HTTP request to the MCP endpoint."""

    principal: Principal
    """Who is calling."""
    request_id: str | None = None
    """The request's id (``X-Request-ID``), for logs and the tool context."""


def set_caller(scope: MutableMapping[str, Any], caller: McpCaller) -> None:
    """Record ``caller`` as the caller of the request whose ASGI scope is ``scope``."""
    scope[CALLER_KEY] = caller


def caller_of(request: Any) -> McpCaller:
    """The caller recorded for ``request`` (the ``ctx.request`` an MCP handler receives: an
    object with the ASGI ``scope``). Raises :class:`AuthenticationError` when there is none, so
    a server mounted without authentication refuses to serve rather than serve anonymously."""
    scope = getattr(request, "scope", None)
    caller = scope.get(CALLER_KEY) if isinstance(scope, dict) else None
    if not isinstance(caller, McpCaller):
        raise AuthenticationError("the MCP request carries no authenticated caller")
    return caller
