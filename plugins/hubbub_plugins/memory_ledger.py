"""Budget ledger ``memory``: budgets counted in this process.

Every operation runs without yielding to the event loop, so a reservation over several
counters is atomic with respect to every other request of this process. Private to one
process: with several server processes use ``redis`` (``[budgets] backend = "redis"``, the
default when the cache is Redis). Counters are forgotten when their period ends and when the
process stops; expired leases stop counting at the next operation on their counters.

::

    [budgets]
    backend = "memory"
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from hubbub import hookimpl
from hubbub.contracts import BudgetCounter, BudgetRefusal, BudgetReservation, BudgetTotals
from hubbub.models import Health, new_id

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar

__all__ = ["MemoryLedger"]

ZERO = Decimal(0)


@dataclass(slots=True)
class _Counter:
    period_end: float
    tokens: int = 0
    cost: Decimal = ZERO
    reserved_tokens: int = 0
    reserved_cost: Decimal = ZERO
    leases: set[str] = field(default_factory=set)


class MemoryLedger:
    """A :class:`hubbub.contracts.BudgetLedger` in this process's memory.

    :param clock: Unix time (tests move it to expire leases and periods).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counters: dict[str, _Counter] = {}
        self._leases: dict[str, BudgetReservation] = {}
        self._expiries: list[tuple[float, str]] = []  # a heap of (expires_at, reservation id)
        self._period_ends: list[tuple[float, str]] = []  # a heap of (period_end, counter key)

    async def start(self) -> None:
        """Nothing to acquire."""

    async def health(self) -> Health:
        """Always ``ok``; the detail counts counters and live reservations."""
        return Health(detail=f"{len(self._counters)} counters, {len(self._leases)} reservations")

    async def aclose(self) -> None:
        """Forget everything."""
        self._counters.clear()
        self._leases.clear()
        self._expiries.clear()
        self._period_ends.clear()

    # -- housekeeping (synchronous: atomic on the event loop) ------------------------------

    def _expire(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, lease = heapq.heappop(self._expiries)
            reservation = self._leases.pop(lease, None)
            if reservation is not None:
                self._unhold(reservation)
        while self._period_ends and self._period_ends[0][0] <= now:
            _, key = heapq.heappop(self._period_ends)
            found = self._counters.get(key)
            if found is None or found.period_end > now:
                continue
            if found.leases:  # held past its period: look again once the leases are over
                heapq.heappush(self._period_ends, (now + 60.0, key))
                break
            del self._counters[key]

    def _counter(self, spec: BudgetCounter) -> _Counter:
        found = self._counters.get(spec.key)
        if found is None:
            found = self._counters[spec.key] = _Counter(spec.period_end)
            heapq.heappush(self._period_ends, (spec.period_end, spec.key))
        return found

    def _unhold(self, reservation: BudgetReservation) -> None:
        for spec in reservation.counters:
            found = self._counters.get(spec.key)
            if found is not None and reservation.id in found.leases:
                found.leases.discard(reservation.id)
                found.reserved_tokens -= reservation.tokens
                found.reserved_cost -= reservation.cost

    # -- the ledger ------------------------------------------------------------------------

    async def reserve(
        self,
        counters: Sequence[BudgetCounter],
        tokens: int,
        cost: Decimal,
        lease_seconds: float,
    ) -> BudgetReservation | BudgetRefusal:
        """Hold ``tokens`` and ``cost`` in every counter, or in none."""
        now = self._clock()
        self._expire(now)
        for spec in counters:
            found = self._counters.get(spec.key) or _Counter(spec.period_end)
            if spec.tokens is not None:
                used = found.tokens + found.reserved_tokens
                if used + tokens > spec.tokens:
                    return BudgetRefusal(
                        counter=spec, unit="tokens", used=str(used), limit=str(spec.tokens)
                    )
            if spec.cost is not None:
                spent = found.cost + found.reserved_cost
                if spent + cost > spec.cost:
                    return BudgetRefusal(
                        counter=spec, unit="cost", used=str(spent), limit=str(spec.cost)
                    )
        reservation = BudgetReservation(
            id=new_id("bud_"),
            counters=tuple(counters),
            tokens=tokens,
            cost=cost,
            expires_at=now + lease_seconds,
        )
        for spec in counters:
            found = self._counter(spec)
            found.reserved_tokens += tokens
            found.reserved_cost += cost
            found.leases.add(reservation.id)
        self._leases[reservation.id] = reservation
        heapq.heappush(self._expiries, (reservation.expires_at, reservation.id))
        return reservation

    async def settle(self, reservation: BudgetReservation, tokens: int, cost: Decimal) -> None:
        """End ``reservation`` and count what was used."""
        self._expire(self._clock())
        if self._leases.pop(reservation.id, None) is not None:
            self._unhold(reservation)
        for spec in reservation.counters:
            found = self._counter(spec)
            found.tokens += tokens
            found.cost += cost

    async def release(self, reservation: BudgetReservation) -> None:
        """End ``reservation`` without counting anything."""
        self._expire(self._clock())
        if self._leases.pop(reservation.id, None) is not None:
            self._unhold(reservation)

    async def totals(self, keys: Sequence[str]) -> list[BudgetTotals]:
        """Each counter as it stands."""
        self._expire(self._clock())
        result = []
        for key in keys:
            found = self._counters.get(key)
            if found is None:
                result.append(BudgetTotals(key=key))
                continue
            result.append(
                BudgetTotals(
                    key=key,
                    tokens=found.tokens,
                    cost=found.cost,
                    reserved_tokens=found.reserved_tokens,
                    reserved_cost=found.reserved_cost,
                )
            )
        return result


@hookimpl
def register_budget_ledgers(register: Registrar) -> None:
    def build(context: ComponentContext[None]) -> MemoryLedger:
        return MemoryLedger()

    register("memory", build, description="Budgets counted in this process.")
