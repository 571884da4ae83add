"""``GET /api/usage``: the caller's tokens and cost this month, and where their budgets stand
(:mod:`hubbub.budgets.usage`)."""

from __future__ import annotations

from litestar import get

from hubbub.budgets import UsageReport, budget_ledger, usage_report
from hubbub_server.problems import PROBLEM_RESPONSES
from hubbub_server.security import Caller, RuntimeDep

__all__ = ["get_usage"]


@get(
    "/api/usage",
    tags=["usage"],
    summary="Your tokens and cost this month, and your budgets",
    responses=PROBLEM_RESPONSES,
)
async def get_usage(runtime: RuntimeDep, principal: Caller) -> UsageReport:
    return await usage_report(budget_ledger(runtime), runtime.config.budgets, principal)
