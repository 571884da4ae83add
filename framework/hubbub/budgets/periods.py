"""Budget periods (UTC days and months) and the counters a request draws on.

A counter is one scope's spending in one period: ``user:d20261130:alice`` is what user
``alice`` spent on 30 November 2026 (UTC). The period is part of the key, so a new period starts
from zero without anyone resetting anything, and a counter is dropped once its period is over.
"""

from __future__ import annotations

import calendar
import functools
from datetime import UTC, datetime, timedelta
from typing import Literal

from hubbub.config.schema import BudgetConfig, BudgetsConfig
from hubbub.contracts import BudgetCounter

__all__ = ["Period", "Scope", "budget_for", "counter", "counters_for", "period_bounds"]

Period = Literal["day", "month"]
"""A budget's period."""
Scope = Literal["user", "key", "global"]
"""Whose spending a budget limits."""

USAGE_PERIOD: Period = "month"
"""The period spending is always counted over, budget or not (what ``GET /api/usage``
reports as the caller's total)."""


DAY = 86_400.0
"""Seconds in a UTC day (Unix time has no leap seconds)."""


def period_bounds(period: Period, now: float) -> tuple[str, float]:
    """The label (``d20261130``, ``m202611``) and the end (Unix seconds) of the ``period``
    that contains ``now``, in UTC."""
    return _bounds(period, int(now // DAY))


@functools.lru_cache(maxsize=64)
def _bounds(period: Period, day: int) -> tuple[str, float]:
    """:func:`period_bounds` for the UTC day number ``day`` (computed once per day)."""
    moment = datetime.fromtimestamp(day * DAY, UTC)
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return f"d{start:%Y%m%d}", (start + timedelta(days=1)).timestamp()
    start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(start.year, start.month)[1]
    return f"m{start:%Y%m}", (start + timedelta(days=days)).timestamp()


def budget_for(config: BudgetsConfig, scope: Scope) -> BudgetConfig | None:
    """The configured budget of ``scope`` (``None`` when there is none)."""
    if scope == "user":
        return config.user
    if scope == "key":
        return config.key
    return config.global_


def counter(
    scope: Scope, who: str, period: Period, now: float, budget: BudgetConfig | None = None
) -> BudgetCounter:
    """The counter of ``who``'s spending in ``scope`` for the ``period`` containing ``now``,
    with ``budget``'s limits (none: counted only)."""
    label, end = period_bounds(period, now)
    key = f"{scope}:{label}" if scope == "global" else f"{scope}:{label}:{who}"
    return BudgetCounter(
        key=key,
        scope=scope,
        period=period,
        period_end=end,
        tokens=budget.tokens if budget is not None else None,
        cost=budget.cost if budget is not None else None,
    )


def counters_for(
    config: BudgetsConfig, user: str | None, key_id: str | None, now: float
) -> list[BudgetCounter]:
    """Every counter a request of ``user`` (through API key ``key_id``) draws on: each
    configured budget that applies to it, and the monthly spending of the user and the key
    (counted whether or not they have a budget). One counter per key: a budget over the same
    period is the spending counter itself."""
    found: dict[str, BudgetCounter] = {}
    whose: list[tuple[Scope, str | None]] = [("user", user), ("key", key_id), ("global", "")]
    for scope, who in whose:
        if who is None:
            continue
        budget = budget_for(config, scope)
        if budget is not None:
            limited = counter(scope, who, budget.period, now, budget)
            found[limited.key] = limited
        if scope != "global":
            usage = counter(scope, who, USAGE_PERIOD, now)
            found.setdefault(usage.key, usage)
    return list(found.values())
