"""The caller's spending and budgets, as ``GET /api/usage`` reports them.

``total_tokens`` and ``cost`` are the caller's spending this month (UTC), settled calls only;
``budgets`` lists every budget that applies to the caller (their user budget, their API key's
when they called with a key, the global one), with what is used, what live reservations hold,
the limits, whether it is exhausted and when the period starts again. The global budget's
figures are the whole deployment's spending: only admins (the ``admin`` role) see them; other
callers see whether it is exhausted and when it starts again.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import msgspec

from hubbub.auth.roles import ADMIN
from hubbub.budgets.periods import USAGE_PERIOD, Scope, budget_for, counter
from hubbub.config.schema import BudgetsConfig
from hubbub.contracts import BudgetCounter, BudgetLedger, BudgetTotals
from hubbub.llm.caller import caller_metadata
from hubbub.models import Principal

__all__ = [
    "BudgetUsage",
    "CostAmount",
    "TokenAmount",
    "UsageReport",
    "budget_ledger",
    "caller_key",
    "usage_report",
]


class TokenAmount(msgspec.Struct, kw_only=True):
    """Where a token limit stands."""

    used: int
    """Tokens spent in the period (settled calls)."""
    reserved: int
    """Tokens held by calls still running."""
    limit: int | None
    """The limit; ``null`` when tokens are not limited."""


class CostAmount(msgspec.Struct, kw_only=True):
    """Where a cost limit stands, in US dollars (decimal strings)."""

    used: Decimal
    """Spent in the period (settled calls)."""
    reserved: Decimal
    """Held by calls still running."""
    limit: Decimal | None
    """The limit; ``null`` when cost is not limited."""


class BudgetUsage(msgspec.Struct, kw_only=True):
    """One budget that applies to the caller."""

    scope: str
    """``user``, ``key`` or ``global``."""
    period: str
    """``day`` or ``month`` (UTC)."""
    tokens: TokenAmount | None
    """Tokens; ``null`` for the global budget unless the caller is an admin."""
    cost: CostAmount | None
    """US dollars, as decimal strings; ``null`` for the global budget unless the caller is an
    admin."""
    exhausted: bool
    """Whether what is used and held has reached a limit: no call fits until the period
    starts again (or running calls end)."""
    resets_at: float
    """When the period starts again (Unix seconds)."""


class UsageReport(msgspec.Struct, kw_only=True):
    """Body of ``GET /api/usage``."""

    total_tokens: int
    """Tokens the caller used this month (UTC)."""
    cost: Decimal
    """What they cost, in US dollars (a decimal string)."""
    period: str
    """The period of ``total_tokens`` and ``cost``: ``month``."""
    resets_at: float
    """When that period ends (Unix seconds)."""
    budgets: list[BudgetUsage]
    """The budgets that apply to the caller."""


def caller_key(principal: Principal) -> str | None:
    """The id of the API key ``principal`` called with, if it called with one (what the
    server puts in a request's ``metadata["key_id"]``)."""
    key_id = caller_metadata(principal).get("key_id")
    return key_id if isinstance(key_id, str) else None


def budget_ledger(runtime: Any) -> BudgetLedger | None:
    """The runtime's budget ledger (``[budgets] backend``); ``None`` when none serves."""
    ledgers = runtime.components("budget_ledger")
    return next(iter(ledgers.values()), None)


async def usage_report(
    ledger: BudgetLedger | None,
    config: BudgetsConfig,
    principal: Principal,
    *,
    now: float | None = None,
) -> UsageReport:
    """What ``principal`` spent this month and where their budgets stand."""
    now = time.time() if now is None else now
    spending = counter("user", principal.id, USAGE_PERIOD, now)
    key_id = caller_key(principal)
    budgets: list[BudgetCounter] = []
    whose: list[tuple[Scope, str | None]] = [
        ("user", principal.id),
        ("key", key_id),
        ("global", ""),
    ]
    for scope, who in whose:
        budget = budget_for(config, scope)
        if budget is not None and who is not None:
            budgets.append(counter(scope, who, budget.period, now, budget))
    keys = [spending.key, *(c.key for c in budgets)]
    found = await ledger.totals(keys) if ledger is not None else []
    totals = {t.key: t for t in found}
    zero = BudgetTotals(key="")
    mine = totals.get(spending.key, zero)
    admin = ADMIN in principal.roles
    return UsageReport(
        total_tokens=mine.tokens,
        cost=mine.cost,
        period=USAGE_PERIOD,
        resets_at=spending.period_end,
        budgets=[_budget(c, totals.get(c.key, zero), admin) for c in budgets],
    )


def _exhausted(spec: BudgetCounter, totals: BudgetTotals) -> bool:
    """Whether ``spec``'s counter has reached a limit."""
    tokens = totals.tokens + totals.reserved_tokens
    cost = totals.cost + totals.reserved_cost
    return (spec.tokens is not None and tokens >= spec.tokens) or (
        spec.cost is not None and cost >= spec.cost
    )


def _budget(spec: BudgetCounter, totals: BudgetTotals, admin: bool) -> BudgetUsage:
    """Where one budget stands, as ``GET /api/usage`` shows it (the global budget's figures to
    admins only)."""
    shown = admin or spec.scope != "global"
    return BudgetUsage(
        scope=spec.scope,
        period=spec.period,
        tokens=TokenAmount(used=totals.tokens, reserved=totals.reserved_tokens, limit=spec.tokens)
        if shown
        else None,
        cost=CostAmount(used=totals.cost, reserved=totals.reserved_cost, limit=spec.cost)
        if shown
        else None,
        exhausted=_exhausted(spec, totals),
        resets_at=spec.period_end,
    )
