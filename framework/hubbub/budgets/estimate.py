"""What an LLM request can cost at most, before it is sent, and what it did cost, after.

A request may be answered by its model or by one of the model's ``[llm.fallbacks]`` (the LLM
client's router decides, after the budgets middleware): the estimate is the most any model of
that chain (:meth:`hubbub.llm.client.LLMClient.chain`) can use. For each model: its prompt's
tokens (counted offline with :class:`hubbub.llm.tokens.TokenCounter` by the model's
:attr:`~hubbub.models.ModelInfo.pricing_id`, the tools offered included) plus the most its reply
can have, the least of the request's ``max_tokens``, the model's output limit (its
:class:`~hubbub.models.ModelInfo`, else the price table) and what its context window leaves
after the prompt. When a model of the chain has none of these, ``[context] reply_tokens`` is
reserved and sent as ``max_tokens`` (so the reply stays within what was reserved). The cost is
those tokens at the model's prices (:class:`hubbub.llm.pricing.PriceTable`); the estimate takes
the dearest.

After the call: the usage the reply carries, with its cost when the LLM client priced it (at
the model that answered); tokens the provider did not report are counted from the prompt and
the reply's text, and a cost the client could not give is priced here (at the model that
answered when it is known, else at the dearest of the chain).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from hubbub.llm.pricing import PriceTable
from hubbub.llm.tokens import TokenCounter, encoding_for
from hubbub.models import ChatRequest, ModelInfo, ToolCall, Usage

__all__ = ["Estimate", "Estimator", "Spent"]

logger = logging.getLogger("hubbub.budgets")

ZERO = Decimal(0)
_NO_TABLE = PriceTable({})  # models' own prices only

Model = ModelInfo | str
"""A model as far as it is known: its :class:`ModelInfo`, else only its id."""


def _pricing_id(model: Model) -> str:
    return model.pricing_id if isinstance(model, ModelInfo) else model


def _name(model: Model) -> str:
    return model.id if isinstance(model, ModelInfo) else model


@dataclass(frozen=True, slots=True)
class Estimate:
    """The most a request can use."""

    prompt_tokens: int
    """Tokens of the prompt (messages and tools offered), by the model of the chain that
    counts the most."""
    reply_tokens: int
    """Tokens the reply may have at most."""
    cost: Decimal
    """US dollars those tokens cost at most, at the dearest model that may answer (0 when no
    model's prices are known)."""
    priced: bool
    """Whether the prices of every model that may answer are known."""
    max_tokens: int | None = None
    """The ``max_tokens`` to send when the request has none (``None``: send none, the models'
    own limits bound the reply): ``[context] reply_tokens`` when a model that may answer has
    neither a known output limit nor a known context window."""

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
    :param reply_tokens: the reply's limit when neither the request nor a model that may answer
        gives one (``[context] reply_tokens``).
    :param models: the models that may answer a request naming a model id, in order (the LLM
        client's :meth:`~hubbub.llm.client.LLMClient.chain`); empty when nothing is known.
    :param warn_unpriced: log (once per model) that a model without prices counts as free:
        set when a cost budget is configured.
    """

    def __init__(
        self,
        counter: TokenCounter,
        prices: PriceTable | None,
        reply_tokens: int,
        models: Callable[[str], Sequence[ModelInfo]],
        *,
        warn_unpriced: bool = True,
    ) -> None:
        self.counter = counter
        self.prices = prices
        self.reply_tokens = reply_tokens
        self.models = models
        self.warn_unpriced = warn_unpriced
        self._unpriced: set[str] = set()

    def chain(self, request: ChatRequest) -> list[Model]:
        """The models that may answer ``request``, in order (its model id alone when nothing
        is known of it)."""
        found: list[Model] = list(self.models(request.model))
        return found or [request.model]

    def _table(self) -> PriceTable:
        return self.prices or _NO_TABLE

    def output_limit(self, model: Model) -> int | None:
        """The most tokens ``model`` writes in one reply; ``None`` when unknown."""
        return self._table().max_output_tokens(model) or None

    def context_window(self, model: Model) -> int | None:
        """The most tokens ``model`` reads in one request; ``None`` when unknown."""
        return self._table().context_window(model) or None

    def reply_bound(self, model: Model, prompt: int, max_tokens: int | None) -> int | None:
        """The most tokens ``model``'s reply to a prompt of ``prompt`` tokens can have: the
        least of ``max_tokens``, the model's output limit and what its context window leaves;
        ``None`` when none of them is known."""
        bounds = [] if max_tokens is None else [max(0, max_tokens)]
        limit = self.output_limit(model)
        if limit is not None:
            bounds.append(limit)
        window = self.context_window(model)
        if window is not None:
            bounds.append(max(0, window - prompt))
        return min(bounds) if bounds else None

    async def prompt_tokens(self, request: ChatRequest, model: Model | None = None) -> int:
        """Tokens of the request's messages and the tools it offers, counted for ``model``
        (default: the request's)."""
        counted = _pricing_id(model) if model is not None else request.model
        return await self.counter.count_prompt(counted, request.messages, request.tools)

    async def _prompts(self, request: ChatRequest, chain: Sequence[Model]) -> list[int]:
        """The prompt's tokens for each model of ``chain`` (each encoding counted once)."""
        by_encoding: dict[str, int] = {}
        out = []
        for model in chain:
            encoding = encoding_for(_pricing_id(model))
            if encoding not in by_encoding:
                by_encoding[encoding] = await self.prompt_tokens(request, model)
            out.append(by_encoding[encoding])
        return out

    def price(self, model: Model, prompt: int, completion: int) -> Decimal | None:
        """What ``prompt`` and ``completion`` tokens of ``model`` cost; ``None`` when its
        prices are unknown (logged once per model, with ``warn_unpriced``)."""
        cost = self._table().cost(model, prompt, completion)
        name = _name(model)
        if cost is None and self.warn_unpriced and name not in self._unpriced:
            self._unpriced.add(name)
            logger.warning(
                "the price of model %s is unknown: its calls count as free against cost "
                "budgets (set input_cost_per_token and output_cost_per_token for it)",
                name,
                extra={"model": name},
            )
        return cost

    async def estimate(self, request: ChatRequest) -> Estimate:
        """The most ``request`` can use, whatever model of its chain answers."""
        chain = self.chain(request)
        prompts = await self._prompts(request, chain)
        bounds = [
            self.reply_bound(m, p, request.max_tokens) for m, p in zip(chain, prompts, strict=True)
        ]
        implied = None
        if any(b is None for b in bounds):  # only without max_tokens: it bounds every model
            implied = self.reply_tokens
            bounds = [implied if b is None else min(b, implied) for b in bounds]
        replies = [b or 0 for b in bounds]
        costs = [self.price(m, p, r) for m, p, r in zip(chain, prompts, replies, strict=True)]
        known = [c for c in costs if c is not None]
        return Estimate(
            prompt_tokens=max(prompts),
            reply_tokens=max(replies),
            cost=max(known, default=ZERO),
            priced=len(known) == len(costs),
            max_tokens=implied,
        )

    async def spent(
        self,
        request: ChatRequest,
        usage: Usage | None,
        text: str,
        calls: Sequence[ToolCall] = (),
        *,
        answered: str | None = None,
    ) -> Spent:
        """What ``request`` used: ``usage`` as the provider (or the LLM client) reported it,
        its cost included when the client priced it. Tokens it does not report are counted
        from the prompt and the reply's ``text``, and a cost it lacks is priced here: by the
        model that ``answered`` when known, else by the one of the chain that counts the most
        and is the dearest."""
        chain = self.chain(request)
        if answered is not None:
            chain = [m for m in chain if _name(m) == answered] or chain
        prompt = usage.prompt_tokens if usage is not None else 0
        completion = usage.completion_tokens if usage is not None else 0
        if not prompt and not completion:
            total = usage.total_tokens if usage is not None else 0
            if total:
                prompt = total
            else:
                prompt = max(await self._prompts(request, chain))
                each = {encoding_for(_pricing_id(m)): _pricing_id(m) for m in chain}
                completion = max(
                    [await self.counter.count_completion(m, text, calls) for m in each.values()]
                )
        tokens = (usage.total_tokens if usage is not None else 0) or prompt + completion
        cost = usage.cost if usage is not None else None
        if cost is None:
            costs = [self.price(m, prompt, completion) for m in chain]
            cost = max((c for c in costs if c is not None), default=None)
        return Spent(tokens, cost if cost is not None else ZERO)
