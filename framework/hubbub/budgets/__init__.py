"""Budgets of tokens and cost for LLM calls, per-key rate limits, and usage reports.

* :mod:`hubbub.budgets.periods`: UTC days and months, and the counters a request draws on;
* :mod:`hubbub.budgets.estimate`: what a request can cost at most, and what it did cost;
* :mod:`hubbub.budgets.middleware`: the middleware that reserves, refuses, settles, releases;
* :mod:`hubbub.budgets.ratelimit`: ``[budgets] key_requests_per_minute`` and
  ``key_tokens_per_minute``;
* :mod:`hubbub.budgets.usage`: what ``GET /api/usage`` reports;
* :mod:`hubbub.budgets.money`: exact dollars as integer nanodollars, for ledgers.

The ledger itself is a component (:class:`hubbub.contracts.BudgetLedger`, ``[budgets]
backend``): the built-in plugins ``memory_ledger`` and ``redis_ledger`` provide ``memory`` and
``redis``.
"""

from hubbub.budgets.estimate import Estimate, Estimator, Spent
from hubbub.budgets.middleware import PRIORITY, BudgetMiddleware, UndisclosedBudgetExceededError
from hubbub.budgets.periods import counter, counters_for, period_bounds
from hubbub.budgets.ratelimit import KeyMinuteLimits
from hubbub.budgets.usage import UsageReport, budget_ledger, caller_key, usage_report

__all__ = [
    "PRIORITY",
    "BudgetMiddleware",
    "Estimate",
    "Estimator",
    "KeyMinuteLimits",
    "Spent",
    "UndisclosedBudgetExceededError",
    "UsageReport",
    "budget_ledger",
    "caller_key",
    "counter",
    "counters_for",
    "period_bounds",
    "usage_report",
]
