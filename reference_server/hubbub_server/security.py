"""Who is calling: the ``principal`` dependency every protected handler takes, and the guard that
makes every route a plugin registers require a caller unless it is declared public.

A plugin route is authenticated by default: it answers 401 without credentials once any exist,
even if its handler never asks who is calling. To serve a route to anyone, declare it public::

    @get("/api/weather/status", opt={"public": True})
    async def status() -> dict[str, str]: ...

and to know the caller, take the ``principal`` dependency, as the built-in routes do::

    @get("/api/weather")
    async def weather(principal: Caller) -> dict[str, str]: ...
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler

from hubbub.auth import credentials_from_headers
from hubbub.models import Principal
from hubbub.runtime import Runtime

__all__ = ["PUBLIC", "Caller", "RuntimeDep", "provide_principal", "require_caller"]

RuntimeDep = NamedDependency[Runtime]
"""Annotate a handler parameter named ``runtime`` with this to receive the app's runtime."""
Caller = NamedDependency[Principal]
"""Annotate a handler parameter named ``principal`` with this to receive the authenticated
caller (the request is refused with 401 before the handler runs if there is none)."""

PUBLIC = "public"
"""The ``opt`` key that makes a plugin route answer without credentials:
``opt={"public": True}`` on the handler (or on its controller or router)."""

_PRINCIPAL = "hubbub.principal"
"""Where :func:`require_caller` leaves the caller in the ASGI scope, so that the ``principal``
dependency does not authenticate the request twice."""


async def _authenticate(scope: Any, runtime: Runtime) -> Principal:
    principal: Principal | None = scope.get(_PRINCIPAL)
    if principal is None:
        # Raw headers: cheaper than request.headers. Two Authorization headers are refused
        # (400), so no method ever has to guess which one counts.
        credentials = credentials_from_headers(scope["headers"])
        principal = await runtime.auth.authenticate(credentials)
        scope[_PRINCIPAL] = principal
    return principal


async def provide_principal(request: Request[Any, Any, Any], runtime: RuntimeDep) -> Principal:
    """Authenticate the caller from ``Authorization: Bearer ...`` (or serve the local user in
    local mode); :class:`hubbub.errors.AuthenticationError` becomes 401.

    It depends on ``runtime`` so Litestar resolves the two in sequence: resolving independent
    dependencies concurrently costs a task group per request."""
    return await _authenticate(request.scope, runtime)


async def require_caller(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard of every route a plugin registers: authenticate the caller before the handler
    runs (401 without acceptable credentials), unless the route is declared public
    (``opt={"public": True}``)."""
    if handler.opt.get(PUBLIC) is True:
        return
    await _authenticate(connection.scope, connection.app.state.runtime)
