"""The replies this process writes: one at a time per conversation, across processes, and
stopped on request from anywhere.

A reply is reserved before it starts: noted here (so two calls in this process cannot both
pass) and holding the conversation's lease in the runtime's cache
(:mod:`hubbub.conversation.lease`; with a shared cache no two processes reply to one
conversation at once), and released when it ends, whether it ran, failed, or never started.

Stopping a reply: :meth:`RunningReplies.cancel` publishes :class:`~hubbub.events.CancelRequested`
naming the reply (its id, read from the lease); the process writing it, which listens, stops it,
and a request naming another reply (a late one, meant for a reply that ended since) is ignored.
A caller waiting for a reply that goes away stops it as ``disconnected``; the runtime stopping
stops them all as ``shutdown``. Deleting a conversation reserves it too, after stopping the reply
being written to it, here or in another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from hubbub.conversation.lease import ReplyLeases
from hubbub.conversation.running import InterruptReason, RunningReply, interrupt_reason
from hubbub.errors import ConflictError, NotFoundError
from hubbub.events import CancelRequested, EventBus, Subscription
from hubbub.models import Message

__all__ = ["RunningReplies"]

logger = logging.getLogger("hubbub.conversation")


class RunningReplies:
    """The replies being written by this process, by conversation.

    :param events: where cancel requests are published and heard.
    :param leases: the reply leases (in the runtime's cache).
    """

    def __init__(self, events: EventBus, leases: ReplyLeases) -> None:
        self.events = events
        """Where cancel requests are published and heard."""
        self.leases = leases
        """The reply leases."""
        self._running: dict[str, RunningReply] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        self._cancels: Subscription | None = None
        self._listener: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """How many replies (or deletions) are reserved here."""
        return len(self._running)

    async def start(self) -> None:
        """Listen for cancel requests (from this process and, with a shared event log, every
        other): one subscription that accepts only :class:`~hubbub.events.CancelRequested`."""
        self._cancels = self.events.subscribe(lambda event: isinstance(event, CancelRequested))
        self._listener = asyncio.create_task(
            self._listen(self._cancels), name="conversation cancel requests"
        )

    async def aclose(self) -> None:
        """Stop the replies still running here (``shutdown``) and stop listening."""
        await self.interrupt_all("shutdown")
        if self._cancels is not None:
            self._cancels.close()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        self._cancels = self._listener = None

    # -- reserving and releasing ------------------------------------------------------------

    async def reserve(self, conversation_id: str, owner: str) -> RunningReply:
        """Reserve ``conversation_id`` for a reply; :class:`ConflictError` if a reply to it is
        running (here or in another process sharing the cache)."""
        record = self._note(conversation_id, owner)
        try:
            record.lease = await self.leases.acquire(
                conversation_id, record.id, on_lost=lambda: record.stop("error")
            )
        except BaseException:
            self._forget(record)
            raise
        if record.lease is None:  # another process is replying
            self._forget(record)
            raise _busy(conversation_id)
        return record

    async def reserve_for_deletion(self, conversation_id: str, owner: str) -> RunningReply:
        """Reserve the conversation for its deletion, so that no reply starts meanwhile, once
        the reply being written to it has stopped: here, at once; in another process, asked to
        stop and its lease waited for (at most a lease's lifetime: the lease of a process that
        died expires by then)."""
        while (running := self._running.get(conversation_id)) is not None:
            running.stop_for_deletion()
            await running.done.wait()
        record = self._note(conversation_id, owner)
        record.deleted = True
        try:
            record.lease = await self.leases.acquire(
                conversation_id, record.id, on_lost=lambda: record.stop("error")
            )
            asked: str | None = None
            deadline = time.monotonic() + self.leases.ttl
            while record.lease is None and time.monotonic() < deadline:
                holder = await self.leases.holder(conversation_id)
                if holder is not None and holder != asked:
                    self._request(conversation_id, owner, "deleted", holder)
                    asked = holder
                await asyncio.sleep(0.05)
                record.lease = await self.leases.acquire(
                    conversation_id, record.id, on_lost=lambda: record.stop("error")
                )
            if record.lease is None:
                logger.warning(
                    "deleting conversation %s although a reply to it is still running elsewhere",
                    conversation_id,
                )
        except BaseException:
            self._forget(record)
            raise
        return record

    def _note(self, conversation_id: str, owner: str) -> RunningReply:
        """Refuse at once what this process knows is busy; else note the reply (before any
        await, so that two calls here cannot both pass)."""
        running = self._running.get(conversation_id)
        if running is not None and running.deleted:
            raise NotFoundError(f"no conversation {conversation_id!r}: it is being deleted")
        if running is not None:
            raise _busy(conversation_id)
        record = self._running[conversation_id] = RunningReply(conversation_id, owner)
        return record

    def _forget(self, record: RunningReply) -> None:
        record.released = True
        if self._running.get(record.conversation_id) is record:
            del self._running[record.conversation_id]
        record.done.set()

    async def release(self, record: RunningReply) -> None:
        """Give the lease back, then free the conversation here. Safe to call twice."""
        if record.released:
            return
        record.released = True
        try:
            if record.lease is not None:
                await record.lease.release()
        finally:
            self._forget(record)

    def release_when_done(self, task: object, record: RunningReply) -> None:
        """Release ``record`` when ``task`` (the reply's, if an :class:`asyncio.Task`) ends,
        even if it never started."""
        if isinstance(task, asyncio.Task):
            task.add_done_callback(lambda _: self._release_soon(record))

    def _release_soon(self, record: RunningReply) -> None:
        if record.released:
            return
        task = asyncio.ensure_future(self.release(record))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def await_reply(
        self, record: RunningReply, reply: Coroutine[Any, Any, Message]
    ) -> Message:
        """Run ``reply`` in a task of its own, so that deleting the conversation cancels the
        reply and not the caller, who gets :class:`NotFoundError` instead; a caller that goes
        away (its task cancelled) stops the reply as ``disconnected``."""
        task = asyncio.ensure_future(reply)
        self.release_when_done(task, record)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # the caller is going away
                record.stop("disconnected")
                raise
            if record.deleted:
                raise NotFoundError(
                    f"conversation {record.conversation_id!r} was deleted while its reply "
                    "was written"
                ) from None
            raise

    # -- stopping -----------------------------------------------------------------------------

    async def cancel(self, conversation_id: str, owner: str) -> bool:
        """Ask whichever process writes the reply to ``conversation_id`` to stop it, naming
        the reply (so the request stops no later one); whether a reply was running."""
        record = self._running.get(conversation_id)
        if record is not None and record.lease is not None:
            reply_id = None if record.deleted else record.id
        else:
            reply_id = await self.leases.holder(conversation_id)
        if reply_id is None:
            return False
        self._request(conversation_id, owner, "cancelled", reply_id)
        return True

    def _request(self, conversation_id: str, owner: str, reason: str, reply_id: str) -> None:
        self.events.publish(
            CancelRequested(reason=reason, reply_id=reply_id),
            conversation_id=conversation_id,
            owner=owner,
        )

    async def interrupt_all(self, reason: InterruptReason) -> None:
        """Stop every reply this process is writing, each keeping its partial text marked
        ``reason``, and return once they have ended."""
        running = list(self._running.values())
        for record in running:
            record.stop(reason)
        for record in running:
            await record.done.wait()

    async def _listen(self, cancels: Subscription) -> None:
        async for event in cancels:
            if isinstance(event, CancelRequested):
                try:
                    self._cancel_requested(event)
                except Exception:  # keep listening: the next request must still work
                    logger.exception("could not act on a cancel request")

    def _cancel_requested(self, event: CancelRequested) -> None:
        """Stop the reply ``event`` asks to stop, if this process writes it."""
        if event.conversation_id is None:
            return
        record = self._running.get(event.conversation_id)
        if record is None or record.owner != event.owner:
            return  # not running here
        if event.reply_id and event.reply_id != record.id:
            return  # meant for another reply (one that ended since)
        logger.info(
            "stopping the reply to conversation %s: %s",
            event.conversation_id,
            event.reason,
            extra={"conversation_id": event.conversation_id, "origin": event.origin},
        )
        if event.reason == "deleted":  # the conversation is being deleted elsewhere
            record.stop_for_deletion()
        else:
            record.stop(interrupt_reason(event.reason))


def _busy(conversation_id: str) -> ConflictError:
    return ConflictError(
        f"a reply to conversation {conversation_id!r} is still being written; "
        "wait for its message.completed event"
    )
