"""The budgets middleware: reserve before every LLM call, settle after it, refuse what does not
fit.

An :class:`~hubbub.contracts.LLMMiddleware` at priority -100 (outside every other): before a
request goes on, it reserves in the budget ledger the most the request can use
(:mod:`hubbub.budgets.estimate`) in every counter that applies (:mod:`hubbub.budgets.periods`),
all or nothing; a request that does not fit is refused with
:class:`~hubbub.errors.BudgetExceededError` (402) before any provider is called. After the
call it settles the reservation to what was really used (a stream cut short: what it used
before the end), shielded from cancellation so a client that leaves cannot skip it; a call that
failed before producing anything releases it.

The reservation covers every model that may answer (the request's model and its
``[llm.fallbacks]``, :meth:`hubbub.llm.client.LLMClient.chain`): the dearest of them. A request
without ``max_tokens`` is reserved for the most its models can write (their output limit, or
what their context window leaves after the prompt) and goes upstream unchanged; only when a
model that may answer has neither limit known does it get ``[context] reply_tokens`` as
``max_tokens``, so no reply can cost more than its reservation.

Per-key rate limits (:mod:`hubbub.budgets.ratelimit`) are checked first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hubbub.budgets.estimate import Estimate, Estimator
from hubbub.budgets.periods import counters_for
from hubbub.budgets.ratelimit import Admission, KeyMinuteLimits
from hubbub.config.schema import BudgetsConfig
from hubbub.contracts import (
    BudgetCounter,
    BudgetLedger,
    BudgetRefusal,
    BudgetReservation,
    CompleteNext,
    StreamNext,
)
from hubbub.errors import BudgetExceededError
from hubbub.middleware import LLMMiddlewareBase, StreamedReply
from hubbub.models import ChatChunk, ChatRequest, ChatResponse, ToolCall, Usage, new_id

__all__ = ["PRIORITY", "BudgetMiddleware", "UndisclosedBudgetExceededError"]

logger = logging.getLogger("hubbub.budgets")

PRIORITY = -100
"""The middleware's place: outermost of the usual ones, so a refusal costs nothing else."""

ZERO = Decimal(0)

COUNT_WAIT = 0.5
"""Seconds a reply that held no budget waits for its usage to be counted; a slower ledger
finishes the count in the background."""


@dataclass(slots=True)
class _Hold:
    """What one request holds while it runs."""

    request: ChatRequest
    estimate: Estimate | None
    reservation: BudgetReservation | None
    admission: Admission | None
    counters: list[BudgetCounter]


def _limited(counters: list[BudgetCounter]) -> bool:
    return any(c.tokens is not None or c.cost is not None for c in counters)


class UndisclosedBudgetExceededError(BudgetExceededError):
    """A refusal by the global budget: it says that the budget has no room and when it starts
    again, never what it has used nor its limit (those are the whole deployment's spending,
    for admins only: ``GET /api/usage``)."""

    def extensions(self) -> dict[str, object]:
        """``budget`` and ``unit`` only."""
        return {"budget": self.budget, "unit": self.unit}


def _needs(estimate: Estimate | None, unit: str) -> str:
    """What the request asked to reserve, for the refusal's message."""
    if estimate is None:
        return ""
    amount = f"{estimate.tokens} tokens" if unit == "tokens" else f"{estimate.cost} US dollars"
    return (
        f" (this request may use up to {amount}: its prompt, plus its max_tokens or else the "
        "model's output limit; sending a smaller max_tokens reserves less)"
    )


def _refusal_error(
    refusal: BudgetRefusal, now: float, estimate: Estimate | None = None
) -> BudgetExceededError:
    """The 402 for ``refusal``: the global budget's figures are not disclosed."""
    counter = refusal.counter
    resets = datetime.fromtimestamp(counter.period_end, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    what = "tokens" if refusal.unit == "tokens" else "US dollars"
    smaller = _needs(estimate, refusal.unit)
    retry_after = max(1.0, counter.period_end - now)
    if counter.scope == "global":
        return UndisclosedBudgetExceededError(
            f"the global budget has no room for this request this {counter.period}{smaller}; "
            f"it starts again at {resets}",
            budget=counter.scope,
            unit=refusal.unit,
            used="",
            limit="",
            retry_after=retry_after,
        )
    return BudgetExceededError(
        f"the {counter.scope} budget has no room for this request: {refusal.used} of "
        f"{refusal.limit} {what} used or held this {counter.period}{smaller}; it starts again "
        f"at {resets}",
        budget=counter.scope,
        unit=refusal.unit,
        used=refusal.used,
        limit=refusal.limit,
        retry_after=retry_after,
    )


class BudgetMiddleware(LLMMiddlewareBase):
    """Budgets and per-key rate limits around every LLM request.

    :param config: the ``[budgets]`` table.
    :param ledger: returns the budget ledger (read when first needed).
    :param estimator: what requests can cost and did cost.
    :param limits: per-key rate limits (``None``: none).
    :param clock: Unix time, for the periods.
    """

    priority = PRIORITY

    def __init__(
        self,
        config: BudgetsConfig,
        *,
        ledger: Callable[[], BudgetLedger],
        estimator: Estimator,
        limits: KeyMinuteLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._ledger = ledger
        self.estimator = estimator
        self.limits = limits if limits is not None and limits.active else None
        self._clock = clock
        self._pending: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        """Wait (bounded by the runtime's stop timeout) for settlements still running."""
        if self._pending:
            await asyncio.wait(set(self._pending))

    # -- before and after ------------------------------------------------------------------

    async def _begin(self, request: ChatRequest) -> _Hold:
        """Check the rate limits and reserve; raise the refusal."""
        now = self._clock()
        key_id = request.metadata.get("key_id")
        key_id = key_id if isinstance(key_id, str) and key_id else None
        counters = counters_for(self.config, request.user, key_id, now)
        limited = _limited(counters)
        hold = _Hold(request, None, None, None, counters)
        if not limited and (self.limits is None or key_id is None):
            return hold  # counted only: settled after the call, nothing to hold before it
        estimate = hold.estimate = await self.estimator.estimate(request)
        if self.limits is not None and key_id is not None:
            hold.admission = await self.limits.admit(key_id, estimate.tokens)
        if request.max_tokens is None and estimate.max_tokens is not None:
            request.max_tokens = estimate.max_tokens  # no model limit known: this bounds it
        if not limited:
            return hold
        try:
            granted = await self._ledger().reserve(
                counters, estimate.tokens, estimate.cost, self.config.lease_seconds
            )
        except BaseException:
            await self._shielded(self._undo_admission(hold))
            raise
        if isinstance(granted, BudgetRefusal):
            await self._shielded(self._undo_admission(hold))
            logger.info(
                "LLM request refused: %s budget %s (%s of %s %s)",
                granted.counter.scope,
                granted.counter.key,
                granted.used,
                granted.limit,
                granted.unit,
                extra={"budget": granted.counter.scope, "user": request.user, "key_id": key_id},
            )
            raise _refusal_error(granted, now, estimate)
        hold.reservation = granted
        return hold

    async def _undo_admission(self, hold: _Hold) -> None:
        if self.limits is not None:
            await self.limits.correct(hold.admission, 0)

    async def _settle(
        self,
        hold: _Hold,
        usage: Usage | None,
        text: str,
        calls: Sequence[ToolCall],
        answered: str | None = None,
    ) -> None:
        """Record what the request used (its reservation ends); ``answered`` is the model
        that answered, when known."""
        if not hold.counters and hold.admission is None:
            return  # nobody to count it for (no user, no key, no global budget)
        try:
            spent = await self.estimator.spent(hold.request, usage, text, calls, answered=answered)
            if self.limits is not None:
                await self.limits.correct(hold.admission, spent.tokens)
            reservation = hold.reservation
            if reservation is None:  # counted only: a reservation that never held anything
                reservation = BudgetReservation(
                    id=new_id("bud_"),
                    counters=tuple(hold.counters),
                    tokens=0,
                    cost=ZERO,
                    expires_at=0.0,
                )
            await self._ledger().settle(reservation, spent.tokens, spent.cost)
        except Exception as exc:
            logger.warning(
                "could not record the usage of an LLM request of %s: %s",
                hold.request.user,
                exc,
                extra={"user": hold.request.user},
            )

    async def _release(self, hold: _Hold) -> None:
        """End the request's reservation without spending (it failed before using any)."""
        try:
            if hold.reservation is not None:
                await self._ledger().release(hold.reservation)
            await self._undo_admission(hold)
        except Exception as exc:  # the lease expires by itself
            logger.warning("could not release a budget reservation: %s", exc)

    async def _shielded(
        self, work: Coroutine[Any, Any, None], *, wait: float | None = None
    ) -> None:
        """Run ``work`` to its end even if the caller is cancelled meanwhile (it then goes on
        in the background, and :meth:`aclose` waits for it). With ``wait``, the caller waits
        at most that long: what holds no budget (a count for ``/api/usage``) never holds a
        reply back behind a slow ledger."""
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        if wait is None:
            await asyncio.shield(task)
        else:
            await asyncio.wait({task}, timeout=wait)

    @staticmethod
    def _settle_wait(hold: _Hold) -> float | None:
        """How long a reply waits for its settlement: until done when it held a budget (the
        next request must see what it spent), else at most :data:`COUNT_WAIT`."""
        return None if hold.reservation is not None else COUNT_WAIT

    # -- the two paths ---------------------------------------------------------------------

    async def complete(self, request: ChatRequest, call_next: CompleteNext) -> ChatResponse:
        """Reserve, call, then settle to the reply's usage (release on failure)."""
        hold = await self._begin(request)
        try:
            response = await call_next(request)
        except BaseException:
            await self._shielded(self._release(hold))
            raise
        message = response.message
        await self._shielded(
            self._settle(
                hold, response.usage, message.content, message.tool_calls or (), response.model
            ),
            wait=self._settle_wait(hold),
        )
        return response

    async def stream(self, request: ChatRequest, call_next: StreamNext) -> AsyncIterator[ChatChunk]:
        """Reserve, stream, then settle to what the stream used, however it ended (release
        when it failed before its first chunk)."""
        hold = await self._begin(request)
        reply = StreamedReply()
        failed = False
        try:
            async for chunk in call_next(request):
                reply.add(chunk)
                yield chunk
        except Exception:
            failed = True
            raise
        finally:
            if failed and not reply.chunks:
                await self._shielded(self._release(hold))
            else:
                text = "".join(reply.parts)
                await self._shielded(
                    self._settle(hold, reply.usage, text, reply.calls),
                    wait=self._settle_wait(hold),
                )
