"""Delivering events to event sinks (:class:`hubbub.contracts.EventSink`)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import msgspec

from hubbub.events.bus import EventBus, Subscription
from hubbub.models import Health

if TYPE_CHECKING:
    from hubbub.contracts import EventSink

__all__ = ["SinkRunner"]

logger = logging.getLogger("hubbub.events")


class SinkRunner:
    """Runs one event sink: its own bounded subscription of the bus and a delivery task, so a
    slow sink loses its own oldest events (counted in its health) and never slows publishers."""

    def __init__(self, name: str, sink: EventSink, bus: EventBus, *, drain: float = 2.5) -> None:
        self.name = name
        self.sink = sink
        self.bus = bus
        self.drain = drain
        """Seconds the sink may take, at stop, to handle what is still queued."""
        self.subscription: Subscription | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sink.start()
        self.subscription = self.bus.subscribe()
        self.task = asyncio.create_task(
            self._deliver(self.subscription), name=f"hubbub event sink {self.name}"
        )

    async def _deliver(self, subscription: Subscription) -> None:
        async for event in subscription:
            try:
                await self.sink.handle(event)
            except Exception:
                logger.exception(
                    "event sink %s failed to handle %s",
                    self.name,
                    event.type,
                    extra={"sink": self.name},
                )

    async def health(self) -> Health:
        health = await self.sink.health()
        if self.subscription is not None and self.subscription.dropped:
            detail = f"{health.detail}; {self.subscription.dropped} events dropped (too slow)"
            return msgspec.structs.replace(
                health,
                status="degraded" if health.status == "ok" else health.status,
                detail=detail.strip("; "),
            )
        return health

    async def aclose(self) -> None:
        """Stop receiving, let the sink handle what is queued for at most :attr:`drain`
        seconds, then close the sink (always)."""
        try:
            if self.subscription is not None:
                self.subscription.close()  # the delivery task drains what is queued, then ends
            if self.task is not None:
                _, pending = await asyncio.wait({self.task}, timeout=self.drain)
                if pending:
                    self.task.cancel()
                    left = self.subscription.pending if self.subscription else 0
                    logger.warning(
                        "event sink %s did not drain within %g s; %d events not handled",
                        self.name,
                        self.drain,
                        left,
                        extra={"sink": self.name},
                    )
        finally:
            await self.sink.aclose()
