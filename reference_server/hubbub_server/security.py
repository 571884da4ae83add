"""Who is calling: the ``principal`` dependency every protected handler takes."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from hubbub.contracts import Credentials
from hubbub.models import Principal
from hubbub.runtime import Runtime

__all__ = ["Caller", "RuntimeDep", "provide_principal"]

RuntimeDep = NamedDependency[Runtime]
"""Annotate a handler parameter named ``runtime`` with this to receive the app's runtime."""
Caller = NamedDependency[Principal]
"""Annotate a handler parameter named ``principal`` with this to receive the authenticated
caller (the request is refused with 401 before the handler runs if there is none)."""


async def provide_principal(request: Request[Any, Any, Any], runtime: RuntimeDep) -> Principal:
    """Authenticate the caller from ``Authorization: Bearer ...`` (or serve the local user in
    local mode); :class:`hubbub.errors.AuthenticationError` becomes 401.

    It depends on ``runtime`` so Litestar resolves the two in sequence: resolving independent
    dependencies concurrently costs a task group per request."""
    bearer = None
    headers = {}
    for name, value in request.scope["headers"]:  # raw headers: cheaper than request.headers
        text = value.decode("latin-1")
        headers[name.decode("latin-1")] = text
        if name == b"authorization":
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
    return await runtime.auth.authenticate(Credentials(bearer=bearer, headers=headers))
