"""File descriptors of the server process: the open-files limit, the reserve kept for the
application, and throttled reports when connections have to be refused for lack of them.

Every accepted connection holds one descriptor. When a process runs out, ``accept()`` fails with
``EMFILE``: the stdlib event loop then logs the error with a traceback thousands of times a
second, uvloop drops the pending connections silently, and in both cases the application itself
can no longer open a database file or a connection to an LLM provider. So the server keeps a
*reserve*: a connection that lands on one of the last descriptors below the limit is closed at
once, and :func:`out_of_descriptors_log` reports such refusals (and, through
:func:`count_failed_accepts`, any ``EMFILE`` the event loop still meets) at most once a second,
with a count and no traceback.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
from collections.abc import Callable
from typing import Any

from hubbub_server.refusals import RefusalLog

__all__ = [
    "count_failed_accepts",
    "fd_reserve",
    "open_files_limit",
    "out_of_descriptors_log",
    "raise_open_files_limit",
]

logger = logging.getLogger("hubbub.server.connections")

_EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def fd_reserve(limit: int) -> int:
    """Descriptors kept free for the application under an open-files ``limit``: an eighth of
    it, between 16 and 256."""
    return max(16, min(256, limit // 8))


def open_files_limit() -> int:
    """This process's soft limit on open files (``RLIMIT_NOFILE``)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_open_files_limit(max_connections: int) -> int:
    """Raise the soft open-files limit so that ``max_connections`` connections fit beside the
    reserve (never above the hard limit; never lowered). Return the limit now in force, and warn
    when the connections still do not fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + fd_reserve(max_connections + 256) + 64  # + the process's own
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        if new > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            except (ValueError, OSError) as exc:  # pragma: no cover - platform refusal
                logger.warning("cannot raise the open-files limit to %d: %s", new, exc)
    limit = open_files_limit()
    usable = limit - fd_reserve(limit)
    if usable < max_connections:
        logger.warning(
            "[server] max_connections = %d does not fit the open-files limit %d: connections "
            "past about %d are refused (raise the hard limit, e.g. LimitNOFILE= or ulimit -Hn)",
            max_connections,
            limit,
            usable,
            extra={"max_connections": max_connections, "open_files_limit": limit},
        )
    return limit


def out_of_descriptors_log() -> RefusalLog:
    """The log of connections refused for lack of file descriptors (at most a line a second);
    :meth:`RefusalLog.record` takes the open-files limit and the connections open."""
    return RefusalLog(
        "out of file descriptors: refused %d connection%s in %.1f s "
        "(open-files limit %d, %d connections open)",
        level=logging.ERROR,
    )


def count_failed_accepts(
    loop: asyncio.AbstractEventLoop, log: RefusalLog, connections: Callable[[], int]
) -> None:
    """Make ``loop`` count its failed ``accept()`` calls (``EMFILE``, ``ENFILE``, ``ENOBUFS``,
    ``ENOMEM``) in ``log`` instead of logging each with a traceback (the standard event loop
    reports thousands a second). Other errors go to the loop's previous handler. Idempotent."""
    previous = loop.get_exception_handler()
    if getattr(previous, "hubbub_accept_log", None) is log:
        return

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if (
            isinstance(exc, OSError)
            and exc.errno in _EXHAUSTION_ERRNOS
            and "accept" in str(context.get("message", ""))
        ):
            log.record(open_files_limit(), connections())
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handle.hubbub_accept_log = log  # type: ignore[attr-defined]
    loop.set_exception_handler(handle)
