"""Work that stops when its client goes away.

A handler that waits for something long (``POST .../messages`` with ``"wait": true`` waits for
the whole reply) runs it with :func:`until_disconnected`: once the request's body has been read,
the only thing the client can still send is its disconnection, so a watcher waits for it and
cancels the work when it comes (the conversation engine then stops the reply and keeps its text,
marked ``disconnected``) and raises :class:`ClientDisconnected`, whose answer (status 499,
nginx's "client closed request") nobody reads but the access log.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

from litestar import Request

from hubbub.errors import HubbubError

__all__ = ["ClientDisconnected", "until_disconnected"]

T = TypeVar("T")


class ClientDisconnected(HubbubError):
    """The client left before the work was done; the work was cancelled."""

    status = 499
    code = "client_disconnected"


async def _disconnect(request: Request[Any, Any, Any]) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(request: Request[Any, Any, Any], work: Awaitable[T]) -> T:
    """Await ``work`` (call this after the body was read); if the client disconnects first,
    cancel it, wait for it to wind down, and raise :class:`ClientDisconnected`."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientDisconnected
