"""Reply leases: one reply at a time per conversation, across every process sharing the cache.

A reply holds the cache key ``hubbub:reply:<conversation id>``, taken with the cache's atomic
:meth:`~hubbub.contracts.CacheBackend.add` (of processes trying at once, one wins), renewed while
the reply runs, and released at its end only if it is still this reply's (with
:meth:`~hubbub.contracts.CacheBackend.compare_and_set`, so a lease that expired and was taken by
someone else is left alone). A process that dies holding a lease leaves it to expire after
``ttl`` seconds. With the ``memory`` cache the lease covers one process; with ``redis`` (or any
shared backend), every process that uses it.

The lease's value names its holder: host, process, when the reply began (Unix milliseconds) and
the reply's id, which any process reads with :meth:`ReplyLeases.holder` (how a cancel request
names the reply it is meant for) and :meth:`ReplyLeases.began` (where a stream that joins the
reply late catches up from).

::

    leases = ReplyLeases(runtime.cache)
    lease = await leases.acquire(conversation_id, reply_id)
    if lease is None:
        ...  # a reply is running somewhere
    try:
        ...
    finally:
        await lease.release()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from hubbub.contracts import CacheBackend
from hubbub.models import new_id

__all__ = ["Lease", "ReplyLeases"]

logger = logging.getLogger("hubbub.conversation.lease")


class Lease:
    """One conversation's reply lease, held by this process until :meth:`release`."""

    def __init__(
        self,
        leases: ReplyLeases,
        key: str,
        token: bytes,
        on_lost: Callable[[], object] | None = None,
    ) -> None:
        self.key = key
        """The cache key (``hubbub:reply:<conversation id>``)."""
        self.token = token
        """What this holder stored under :attr:`key`:
        ``<host>/<process id>/<milliseconds>/<reply id>``."""
        self.lost = False
        """Whether a renewal found the lease gone or someone else's (this process stalled
        longer than the lease lasts, or the cache lost it): another reply may start meanwhile."""
        self.on_lost = on_lost
        """Called once when a renewal finds the lease lost: the holder stops its reply, so two
        never run at once for long."""
        self._leases = leases
        self._renewal: asyncio.Task[None] | None = asyncio.create_task(
            self._renew(), name=f"renew {key}"
        )

    async def _renew(self) -> None:
        leases = self._leases
        while True:
            await asyncio.sleep(leases.renew_every)
            try:
                kept = await leases.cache.compare_and_set(
                    self.key, self.token, self.token, leases.ttl
                )
            except Exception as exc:  # the cache is unreachable: try again next time
                logger.warning(
                    "could not renew the reply lease %s: %s", self.key, exc, extra={"key": self.key}
                )
                continue
            if not kept:
                self.lost = True
                logger.error(
                    "the reply lease %s was lost (expired, or taken by another process): "
                    "another reply to this conversation may be running; this one stops",
                    self.key,
                    extra={"key": self.key},
                )
                if self.on_lost is not None:
                    self.on_lost()
                return

    async def release(self) -> None:
        """Stop renewing and give the lease back if it is still ours. Never raises for an
        unreachable cache (the lease then expires by itself); safe to call twice."""
        renewal, self._renewal = self._renewal, None
        if renewal is None:
            return
        renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewal
        try:
            await self._leases.cache.compare_and_set(self.key, self.token, None)
        except Exception as exc:
            logger.warning(
                "could not release the reply lease %s (it expires within %g s): %s",
                self.key,
                self._leases.ttl,
                exc,
                extra={"key": self.key},
            )


class ReplyLeases:
    """Takes and checks reply leases in ``cache``.

    :param ttl: seconds a lease lasts without renewal: how long a conversation stays blocked
        after the process replying to it died.
    :param renew_every: seconds between renewals (default a third of ``ttl``).
    """

    def __init__(
        self, cache: CacheBackend, *, ttl: float = 30.0, renew_every: float | None = None
    ) -> None:
        if ttl <= 0:
            raise ValueError("a lease's ttl must be positive")
        self.cache = cache
        """Where leases are kept."""
        self.ttl = ttl
        """Seconds a lease lasts without renewal."""
        self.renew_every = renew_every if renew_every is not None else ttl / 3
        """Seconds between renewals of a held lease."""
        self._holder = f"{socket.gethostname()}/{os.getpid()}/"

    @staticmethod
    def key(conversation_id: str) -> str:
        """The cache key of ``conversation_id``'s lease."""
        return f"hubbub:reply:{conversation_id}"

    async def acquire(
        self,
        conversation_id: str,
        reply_id: str | None = None,
        on_lost: Callable[[], object] | None = None,
    ) -> Lease | None:
        """Take the lease of ``conversation_id`` for ``reply_id`` (a new id if not given) and
        start renewing it (``on_lost`` is called if a renewal finds it lost); ``None`` when
        someone holds it."""
        key = self.key(conversation_id)
        began = int(time.time() * 1000)
        token = f"{self._holder}{began}/{reply_id or new_id('reply_')}".encode()
        if not await self.cache.add(key, token, self.ttl):
            return None
        return Lease(self, key, token, on_lost)

    async def holder(self, conversation_id: str) -> str | None:
        """The id of the reply holding ``conversation_id``'s lease (in this process or
        another), or ``None`` when nobody holds it."""
        parts = await self._parts(conversation_id)
        return parts[-1] if parts else None

    async def began(self, conversation_id: str) -> int | None:
        """When the reply holding ``conversation_id``'s lease began (Unix milliseconds), or
        ``None`` when nobody holds it."""
        parts = await self._parts(conversation_id)
        if not parts or len(parts) < 4 or not parts[-2].isdigit():
            return None
        return int(parts[-2])

    async def _parts(self, conversation_id: str) -> list[str] | None:
        value = await self.cache.get(self.key(conversation_id))
        return None if value is None else value.decode(errors="replace").split("/")
