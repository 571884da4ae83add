"""The budgets middleware as a built-in plugin: ``[budgets.user|key|global]`` and the per-key
rate limits of ``[budgets]``, around every LLM request (:mod:`hubbub.budgets`).

It registers :class:`hubbub.budgets.BudgetMiddleware` through ``register_llm_middleware``, like
any third-party middleware. It counts every call's tokens and cost in the budget ledger
(``[budgets] backend``) for ``GET /api/usage``, and refuses calls past a budget (402) or a
per-key rate limit (429). Disable the plugin and nothing is counted or refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hubbub import hookimpl
from hubbub.budgets import BudgetMiddleware, Estimator, KeyMinuteLimits, budget_ledger
from hubbub.contracts import BudgetLedger, CacheBackend
from hubbub.errors import ComponentError, UnknownModelError
from hubbub.llm.pricing import PriceTable
from hubbub.llm.tokens import TokenCounter
from hubbub.middleware import LLMMiddlewareBase
from hubbub.models import ModelInfo

if TYPE_CHECKING:
    from hubbub.registry import ComponentContext, Registrar

__all__ = ["RuntimeBudgets"]


class RuntimeBudgets(BudgetMiddleware):
    """:class:`~hubbub.budgets.BudgetMiddleware` over a runtime's services: its budget ledger
    and cache (started before the middleware), the price table, and the LLM client's models
    with their fallbacks (read per request: the client starts after its middleware)."""

    def __init__(self, context: ComponentContext[None]) -> None:
        runtime = context.runtime
        config = context.config
        budgets = config.budgets
        self._runtime = runtime

        def chain(model: str) -> list[ModelInfo]:
            try:
                found: list[ModelInfo] = runtime.llm.chain(model)
            except (UnknownModelError, RuntimeError):
                return []
            return found

        def cache() -> CacheBackend:
            found: CacheBackend = runtime.cache
            return found

        super().__init__(
            config.budgets,
            ledger=self._the_ledger,
            estimator=Estimator(
                TokenCounter(),
                None,
                config.context.reply_tokens,
                chain,
                warn_unpriced=any(
                    budget is not None and budget.cost is not None
                    for budget in (budgets.user, budgets.key, budgets.global_)
                ),
            ),
            limits=KeyMinuteLimits(
                cache,
                requests=config.budgets.key_requests_per_minute,
                tokens=config.budgets.key_tokens_per_minute,
            ),
        )

    def _the_ledger(self) -> BudgetLedger:
        ledger = budget_ledger(self._runtime)
        if ledger is None:
            raise ComponentError("no budget ledger serves: [budgets] backend names none")
        return ledger

    async def start(self) -> None:
        """Load the price table (off the event loop, once per process) and check that a
        ledger serves."""
        self.estimator.prices = await PriceTable.load()
        self._the_ledger()


@hookimpl
def register_llm_middleware(register: Registrar) -> None:
    def build(context: ComponentContext[None]) -> Any:
        if budget_ledger(context.runtime) is None:  # [budgets] backend selects none
            wanted = context.config.budgets
            limits = wanted.key_requests_per_minute or wanted.key_tokens_per_minute
            if wanted.user or wanted.key or wanted.global_ or limits:
                raise ComponentError(
                    "[budgets] needs a budget ledger, and none is registered (is the "
                    "memory_ledger plugin disabled?)"
                )
            return LLMMiddlewareBase()  # nothing to count with, nothing to enforce
        return RuntimeBudgets(context)

    register(
        "budgets",
        build,
        description="Token and cost budgets, per-key rate limits, usage counting.",
    )
