"""Hubbub's reference server: a thin Litestar layer over :class:`hubbub.runtime.Runtime`.

:func:`create_app` builds the app; ``hubbub serve`` runs it under uvicorn. Importing this
package is cheap (the ``hubbub`` command loads it as a plugin): Litestar loads with the app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hubbub_server.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from hubbub_server.app import create_app

        return create_app
    raise AttributeError(f"module 'hubbub_server' has no attribute {name!r}")
