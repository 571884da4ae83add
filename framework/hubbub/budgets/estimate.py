"""What an LLM request can cost at most, before it is sent, and what it did cost, after.

At most: its prompt's tokens (counted offline with :class:`hubbub.llm.tokens.TokenCounter`,
the tools offered included) plus the reply's limit: the request's ``max_tokens``, else the
model's output limit (its :class:`~hubbub.models.ModelInfo`, else the price table), else
``[context] reply_tokens``. Its cost is those tokens at the model's prices
(:class:`hubbub.llm.pricing.PriceTable`). After the call: what the provider reported, the
tokens it did not report counted from the prompt and the reply's text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from hubbub.llm.pricing import PriceTable
from hubbub.llm.tokens import TokenCounter
from hubbub.models import ChatRequest, ModelInfo, ToolCall, Usage

__all__ = ["Estimate", "Estimator", "Spent"]

logger = logging.getLogger("hubbub.budgets")

ZERO = Decimal(0)
_NO_TABLE = PriceTable({})  # models' own prices only


@dataclass(frozen=True, slots=True)
class Estimate:
    """The most a request can use."""

    prompt_tokens: int
    """Tokens of the prompt (messages and tools offered)."""
    reply_tokens: int
    """Tokens the reply may have at most."""
    cost: Decimal
    """US dollars those tokens cost at most (0 when the model's prices are unknown)."""
    priced: bool
    """Whether the model's prices are known."""

    @property
    def tokens(self) -> int:
        """Prompt and reply tokens together."""
        return self.prompt_tokens + self.reply_tokens


@dataclass(frozen=True, slots=True)
class Spent:
    """What a request used."""

    tokens: int
    """Prompt and reply tokens together."""
    cost: Decimal
    """US dollars (0 when unknown)."""


class Estimator:
    """Estimates requests for one runtime.

    :param counter: counts tokens offline.
    :param prices: the price table (``None``: only models' own prices are known).
    :param reply_tokens: the reply's limit when neither the request nor the model gives one
        (``[context] reply_tokens``).
    :param model_info: what is known of a model id (``None`` when nothing).
    :param warn_unpriced: log (once per model) that a model without prices counts as free:
        set when a cost budget is configured.
    """

    def __init__(
        self,
        counter: TokenCounter,
        prices: PriceTable | None,
        reply_tokens: int,
        model_info: Callable[[str], ModelInfo | None],
        *,
        warn_unpriced: bool = True,
    ) -> None:
        self.counter = counter
        self.prices = prices
        self.reply_tokens = reply_tokens
        self.model_info = model_info
        self.warn_unpriced = warn_unpriced
        self._unpriced: set[str] = set()

    def _model(self, request: ChatRequest) -> ModelInfo | str:
        info = self.model_info(request.model)
        return info if info is not None else request.model

    def reply_limit(self, request: ChatRequest) -> int:
        """The most tokens the reply may have: ``max_tokens``, else the model's output limit,
        else ``[context] reply_tokens``."""
        if request.max_tokens is not None:
            return max(0, request.max_tokens)
        model = self._model(request)
        limit = model.max_output_tokens if isinstance(model, ModelInfo) else None
        if limit is None and self.prices is not None:
            limit = self.prices.max_output_tokens(model)
        return limit if limit else self.reply_tokens

    async def prompt_tokens(self, request: ChatRequest) -> int:
        """Tokens of the request's messages and the tools it offers."""
        return await self.counter.count_prompt(request.model, request.messages, request.tools)

    def cost(self, request: ChatRequest, prompt: int, completion: int) -> Decimal | None:
        """What ``prompt`` and ``completion`` tokens of the request's model cost; ``None``
        when its prices are unknown (logged once per model, with ``warn_unpriced``)."""
        model = self._model(request)
        cost = (self.prices or _NO_TABLE).cost(model, prompt, completion)
        if cost is None and self.warn_unpriced and request.model not in self._unpriced:
            self._unpriced.add(request.model)
            logger.warning(
                "the price of model %s is unknown: its calls count as free against cost "
                "budgets (set input_cost_per_token and output_cost_per_token for it)",
                request.model,
                extra={"model": request.model},
            )
        return cost

    async def estimate(self, request: ChatRequest) -> Estimate:
        """The most ``request`` can use."""
        prompt = await self.prompt_tokens(request)
        reply = self.reply_limit(request)
        cost = self.cost(request, prompt, reply)
        return Estimate(prompt, reply, cost if cost is not None else ZERO, cost is not None)

    async def spent(
        self,
        request: ChatRequest,
        usage: Usage | None,
        text: str,
        calls: Sequence[ToolCall] = (),
    ) -> Spent:
        """What ``request`` used: ``usage`` as the provider (or the LLM client) reported it;
        tokens it does not report are counted from the prompt and the reply's ``text``."""
        prompt = usage.prompt_tokens if usage is not None else 0
        completion = usage.completion_tokens if usage is not None else 0
        if not prompt and not completion:
            total = usage.total_tokens if usage is not None else 0
            if total:
                prompt = total
            else:
                prompt = await self.prompt_tokens(request)
                completion = await self.counter.count_completion(request.model, text, calls)
        tokens = (usage.total_tokens if usage is not None else 0) or prompt + completion
        cost = usage.cost if usage is not None else None
        if cost is None:
            cost = self.cost(request, prompt, completion)
        return Spent(tokens, cost if cost is not None else ZERO)
