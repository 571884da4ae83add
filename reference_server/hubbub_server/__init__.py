"""Hubbub's reference server: a thin Litestar layer over :class:`hubbub.runtime.Runtime`.

:func:`create_app` builds the app; ``hubbub serve`` runs it under uvicorn.
"""

from hubbub_server.app import create_app

__all__ = ["create_app"]
