"""Budgets reserve for every model that may answer (a request's model and its
``[llm.fallbacks]``), count tokens by each model's upstream id, and leave a request without
``max_tokens`` as it is when its models' limits are known (``max_tokens`` filled in only when
none is), reserving what the model can really write: its output limit, or what its context
window leaves after the prompt.

The providers are scripted in process: ``tiers/cheap`` always fails and falls back to the dear
``tiers/dear``, whose replies use every token allowed."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from hubbub import hookimpl
from hubbub.budgets import counter
from hubbub.contracts import BudgetLedger
from hubbub.errors import BudgetExceededError, ProviderError
from hubbub.llm.tokens import TokenCounter
from hubbub.models import ChatChunk, ChatRequest, ChatResponse, Health, Message, ModelInfo, Usage
from hubbub.registry import ComponentContext, Registrar
from hubbub.runtime import Runtime
from hubbub.testing import config_for, runtime_for

PROMPT = "Größenwahnsinnige Budgetüberschreitungen: 予算超過は避けてください。 Ёжик в тумане."

CHEAP = ModelInfo(
    id="tiers/cheap",
    provider="tiers",
    context_window=100_000,
    max_output_tokens=1000,
    input_cost_per_token=Decimal("0.0000001"),
    output_cost_per_token=Decimal("0.0000001"),
)
DEAR = ModelInfo(
    id="tiers/dear",
    provider="tiers",
    context_window=100_000,
    max_output_tokens=100,
    input_cost_per_token=Decimal("0.00001"),
    output_cost_per_token=Decimal("0.00003"),
)
GPT4 = ModelInfo(  # gpt-4's limits: a window of 8192 tokens, 4096 of them at most written
    id="tiers/gpt4", provider="tiers", context_window=8192, max_output_tokens=4096
)
UP_GPT = ModelInfo(  # gpt-4o-mini upstream: o200k tokens, the price table's prices and limits
    id="tiers/up-gpt", provider="tiers", upstream_model="gpt-4o-mini"
)
OPEN = ModelInfo(id="tiers/open", provider="tiers")  # no limit known anywhere


class Tiers:
    """A provider serving :data:`CHEAP` (always failing), :data:`DEAR` and the others; every
    reply that is given uses all the tokens it may (``max_tokens`` within the model's output
    limit, else 10)."""

    __name__ = "tiers_llm"

    def __init__(self) -> None:
        self.requests: list[ChatRequest] = []
        self.counter = TokenCounter()
        self.models = {m.id: m for m in (CHEAP, DEAR, GPT4, UP_GPT, OPEN)}

    @hookimpl
    def register_llm_providers(self, register: Registrar) -> None:
        def build(context: ComponentContext[None]) -> Tiers:
            return self

        register("tiers", build, description="scripted tiers of price")

    async def start(self) -> None:
        """Nothing to start."""

    async def health(self) -> Health:
        return Health()

    async def aclose(self) -> None:
        """Nothing to close."""

    async def list_models(self) -> Sequence[ModelInfo]:
        return list(self.models.values())

    async def _usage(self, request: ChatRequest) -> tuple[str, Usage]:
        self.requests.append(request)
        if request.model == CHEAP.id:
            raise ProviderError("the cheap model is down")
        info = self.models[request.model]
        prompt = await self.counter.count_prompt(info.pricing_id, request.messages)
        limit = info.max_output_tokens or 10
        written = min(request.max_tokens or limit, limit)
        usage = Usage(
            prompt_tokens=prompt, completion_tokens=written, total_tokens=prompt + written
        )
        return "word " * written, usage

    async def complete(self, request: ChatRequest) -> ChatResponse:
        text, usage = await self._usage(request)
        return ChatResponse.of(request.model, text, None, usage)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        text, usage = await self._usage(request)
        yield ChatChunk(delta=text)
        yield ChatChunk(finish_reason="stop", usage=usage)


def ask(model: str, *, max_tokens: int | None = None, text: str = PROMPT) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[Message(role="user", content=text)],
        max_tokens=max_tokens,
        user="alice",
    )


async def spent(runtime: Runtime) -> tuple[int, Decimal, int, Decimal]:
    ledger: BudgetLedger = runtime.components("budget_ledger")["memory"]
    [totals] = await ledger.totals([counter("user", "alice", "day", time.time()).key])
    return totals.tokens, totals.cost, totals.reserved_tokens, totals.reserved_cost


FALLBACK = '[llm]\nretries = 0\n[llm.fallbacks]\n"tiers/cheap" = ["tiers/dear"]\n'


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
async def test_a_dear_fallback_never_takes_a_cost_budget_past_its_limit(
    tmp_path: Path, streamed: bool
) -> None:
    prompt = await TokenCounter().count_prompt(DEAR.pricing_id, ask(DEAR.id).messages)
    assert DEAR.input_cost_per_token is not None
    assert DEAR.output_cost_per_token is not None
    each = DEAR.input_cost_per_token * prompt + DEAR.output_cost_per_token * 100
    budget = each * 5 / 2  # room for two answers of the dear model, not three
    tiers = Tiers()
    toml = f'{FALLBACK}[budgets.user]\ncost = "{budget}"\n'
    served = refused = 0
    async with runtime_for(config_for(tmp_path, toml), [tiers]) as runtime:
        for _ in range(5):
            try:
                if streamed:
                    async for _chunk in runtime.llm.stream(ask(CHEAP.id)):
                        pass
                else:
                    await runtime.llm.complete(ask(CHEAP.id))
                served += 1
            except BudgetExceededError:
                refused += 1
        tokens, cost, held_tokens, held_cost = await spent(runtime)
    assert cost <= budget
    answered = [r for r in tiers.requests if r.model == DEAR.id]
    assert len(answered) == served  # every answer came from the fallback
    assert (served, refused) == (2, 3)
    assert cost == served * each  # counted at the price of the model that answered
    assert tokens == served * (prompt + 100)
    assert (held_tokens, held_cost) == (0, 0)


async def test_a_token_budget_reserves_for_the_fallback_that_writes_more(tmp_path: Path) -> None:
    """``tiers/dear`` falls back to ``tiers/cheap``'s 1000 output tokens: a token budget
    reserves those, not the first model's 100."""
    tiers = Tiers()
    toml = (
        '[llm]\nretries = 0\n[llm.fallbacks]\n"tiers/dear" = ["tiers/cheap"]\n'
        "[budgets.user]\ntokens = 1\n"
    )
    async with runtime_for(config_for(tmp_path, toml), [tiers]) as runtime:
        with pytest.raises(BudgetExceededError) as refused:
            await runtime.llm.complete(ask(DEAR.id))
    prompt = await TokenCounter().count_prompt(DEAR.pricing_id, ask(DEAR.id).messages)
    assert f"may use up to {prompt + 1000} tokens" in str(refused.value)
    assert tiers.requests == []


def reserved_in(error: BudgetExceededError) -> int:
    found = re.search(r"may use up to (\d+) tokens", str(error))
    assert found, str(error)
    return int(found.group(1))


async def test_no_implied_max_tokens_when_the_models_limits_are_known(tmp_path: Path) -> None:
    """gpt-4's output limit (4096) is half its window (8192): a long prompt without
    ``max_tokens`` must still be served, reserving only what the window leaves."""
    long_prompt = " ".join(["budget"] * 5000)
    prompt = await TokenCounter().count_prompt(
        GPT4.pricing_id, ask(GPT4.id, text=long_prompt).messages
    )
    assert 4096 < prompt < 8192 - 100  # prompt + 4096 would overflow the window
    tiers = Tiers()
    async with runtime_for(config_for(tmp_path, "[budgets.user]\ntokens = 8192\n"), [tiers]) as rt:
        answer = await rt.llm.complete(ask(GPT4.id, text=long_prompt))  # fits: prompt + rest
        with pytest.raises(BudgetExceededError) as refused:
            await rt.llm.complete(ask(GPT4.id, text=long_prompt))
    [sent] = tiers.requests
    assert sent.max_tokens is None  # not sent upstream: the model's own limits apply
    assert answer.usage.total_tokens == prompt + 4096  # what this fake wrote (no window)
    assert reserved_in(refused.value) == 8192  # the prompt and what the window leaves
    assert "smaller max_tokens reserves less" in str(refused.value)


async def test_tokens_are_counted_by_the_upstream_model(tmp_path: Path) -> None:
    """``tiers/up-gpt`` is gpt-4o-mini upstream: o200k tokens and the price table's limit."""
    counter_ = TokenCounter()
    messages = ask(UP_GPT.id).messages
    o200k = await counter_.count_prompt("gpt-4o-mini", messages)
    assert o200k != await counter_.count_prompt(UP_GPT.id, messages)  # cl100k differs
    tiers = Tiers()
    async with runtime_for(config_for(tmp_path, "[budgets.user]\ntokens = 1\n"), [tiers]) as rt:
        with pytest.raises(BudgetExceededError) as refused:
            await rt.llm.complete(ask(UP_GPT.id))
    assert reserved_in(refused.value) == o200k + 16_384  # gpt-4o-mini writes 16384 at most


async def test_an_explicit_max_tokens_is_reserved_and_sent(tmp_path: Path) -> None:
    tiers = Tiers()
    async with runtime_for(config_for(tmp_path, "[budgets.user]\ntokens = 1\n"), [tiers]) as rt:
        with pytest.raises(BudgetExceededError) as refused:
            await rt.llm.complete(ask(GPT4.id, max_tokens=30))
    prompt = await TokenCounter().count_prompt(GPT4.pricing_id, ask(GPT4.id).messages)
    assert reserved_in(refused.value) == prompt + 30


async def test_without_any_known_limit_reply_tokens_is_reserved_and_sent(tmp_path: Path) -> None:
    """``tiers/gpt4`` falls back to ``tiers/open`` (no limit known): ``[context]
    reply_tokens`` bounds the reply, whichever answers."""
    tiers = Tiers()
    toml = (
        '[llm.fallbacks]\n"tiers/gpt4" = ["tiers/open"]\n[context]\nreply_tokens = 77\n'
        "[budgets.user]\ntokens = 100000\n"
    )
    async with runtime_for(config_for(tmp_path, toml), [tiers]) as rt:
        answer = await rt.llm.complete(ask(GPT4.id))
        tokens, *_ = await spent(rt)
    [sent] = tiers.requests
    assert sent.max_tokens == 77
    assert answer.usage.completion_tokens == 77
    assert tokens == answer.usage.total_tokens
