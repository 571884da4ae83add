"""The budgets middleware in process: reserve before the call, refuse what does not fit (402)
before any provider is called, settle to what was used (a stream cut short included, shielded
from cancellation), release on failure; per-key rate limits (429)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hubbub.budgets import counter
from hubbub.contracts import BudgetLedger, BudgetReservation, BudgetTotals
from hubbub.errors import (
    BudgetExceededError,
    InvalidRequestError,
    ProviderError,
    TooManyRequestsError,
)
from hubbub.llm.tokens import TokenCounter
from hubbub.models import ChatRequest, Message, ModelInfo, Usage
from hubbub.runtime import Runtime
from hubbub.testing import FakeLLM, config_for, delay, error, reply, runtime_for

PROMPT = "tell me about budgets"


def ask(user: str = "alice", *, max_tokens: int | None = 50, **metadata: Any) -> ChatRequest:
    return ChatRequest(
        model="fake/model",
        messages=[Message(role="user", content=PROMPT)],
        max_tokens=max_tokens,
        user=user,
        metadata=dict(metadata),
    )


async def prompt_tokens(model: str = "fake/model") -> int:
    request = ask()
    return await TokenCounter().count_prompt(model, request.messages)


def used(tokens: int, cost: str = "0", *, prompt: int | None = None) -> Usage:
    """What a reply reports: ``tokens`` in all (``prompt`` of them the prompt's)."""
    prompt = tokens // 2 if prompt is None else prompt
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=tokens - prompt,
        total_tokens=tokens,
        cost=Decimal(cost),
    )


def ledger_of(runtime: Runtime) -> BudgetLedger:
    ledger: BudgetLedger = runtime.components("budget_ledger")["memory"]
    return ledger


async def user_day(runtime: Runtime, user: str = "alice") -> BudgetTotals:
    import time

    key = counter("user", user, "day", time.time()).key
    [totals] = await ledger_of(runtime).totals([key])
    return totals


def config(home: Path, toml: str) -> Any:
    return config_for(home, toml)


async def test_fifty_concurrent_requests_against_a_budget_for_ten(tmp_path: Path) -> None:
    reserve = await prompt_tokens() + 50  # what each request reserves: prompt + max_tokens
    budget = 10 * reserve + reserve // 2
    fake = FakeLLM(*(reply("fine", usage=used(reserve)) for _ in range(50)))
    toml = f"[budgets.user]\ntokens = {budget}\n"
    async with runtime_for(config(tmp_path, toml), [fake]) as runtime:
        results = await asyncio.gather(
            *(runtime.llm.complete(ask()) for _ in range(50)), return_exceptions=True
        )
        served = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BudgetExceededError)]
        assert (len(served), len(refused)) == (10, 40)
        assert len(fake.requests) == 10  # the refused never reached the provider
        totals = await user_day(runtime)
    assert totals.tokens == 10 * reserve <= budget
    assert totals.reserved_tokens == 0
    problem = refused[0]
    assert (problem.status, problem.budget, problem.unit, problem.limit) == (
        402,
        "user",
        "tokens",
        str(budget),
    )
    assert problem.retry_after is not None
    assert 0 < problem.retry_after <= 86_400


async def test_the_reply_is_limited_to_what_was_reserved(tmp_path: Path) -> None:
    fake = FakeLLM(reply("fine"))
    toml = "[budgets.user]\ntokens = 100000\n[context]\nreply_tokens = 77\n"
    async with runtime_for(config(tmp_path, toml), [fake]) as runtime:
        await runtime.llm.complete(ask(max_tokens=None))
    assert fake.requests[0].max_tokens == 77  # fake/model says no output limit of its own


async def test_a_failed_call_releases_its_reservation(tmp_path: Path) -> None:
    fake = FakeLLM(error("provider_error", "upstream broke"))
    async with runtime_for(config(tmp_path, "[budgets.user]\ntokens = 1000\n"), [fake]) as rt:
        with pytest.raises(ProviderError):
            await rt.llm.complete(ask())
        totals = await user_day(rt)
    assert (totals.tokens, totals.reserved_tokens) == (0, 0)


async def test_a_stream_cut_short_is_settled_to_what_it_used(tmp_path: Path) -> None:
    words = " ".join(f"word{i}" for i in range(40))
    fake = FakeLLM(reply(words))  # usage comes only with the last chunk: never reached here
    async with runtime_for(config(tmp_path, "[budgets.user]\ntokens = 100000\n"), [fake]) as rt:
        stream = rt.llm.stream(ask(max_tokens=500))
        got = []
        async for chunk in stream:
            got.append(chunk.delta)
            if len(got) == 3:
                break
        await stream.aclose()
        totals = await user_day(rt)
    counter_ = TokenCounter()
    prompt = await prompt_tokens()
    # at least the prompt and the three pieces read; far less than the 500 reserved
    least = prompt + await counter_.count_completion("fake/model", "".join(got))
    assert least <= totals.tokens < prompt + 500
    assert totals.reserved_tokens == 0


class SlowSettle:
    """The runtime's memory ledger, with settle() waiting until the test lets it go."""

    def __init__(self, ledger: BudgetLedger) -> None:
        self.ledger = ledger
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ledger, name)

    async def settle(self, reservation: BudgetReservation, tokens: int, cost: Decimal) -> None:
        self.entered.set()
        await self.go.wait()
        await self.ledger.settle(reservation, tokens, cost)


async def test_settling_survives_the_caller_being_cancelled(tmp_path: Path) -> None:
    fake = FakeLLM(reply("fine", usage=used(42)))
    async with runtime_for(config(tmp_path, "[budgets.user]\ntokens = 1000\n"), [fake]) as rt:
        middleware = rt.components("llm_middleware")["budgets"]
        slow = SlowSettle(ledger_of(rt))
        middleware._ledger = lambda: slow
        task = asyncio.create_task(rt.llm.complete(ask()))
        await asyncio.wait_for(slow.entered.wait(), 10)
        task.cancel()  # the caller leaves while the usage is being recorded
        with pytest.raises(asyncio.CancelledError):
            await task
        slow.go.set()
        await middleware.aclose()  # waits for the settlement still running
        totals = await user_day(rt)
    assert (totals.tokens, totals.reserved_tokens) == (42, 0)


async def test_usage_is_counted_without_any_budget(tmp_path: Path) -> None:
    fake = FakeLLM(reply("one", usage=used(10)), reply("two", usage=used(15)))
    async with runtime_for(config(tmp_path, ""), [fake]) as rt:
        await rt.llm.complete(ask())
        await rt.llm.complete(ask(key_id="k1"))
        import time

        month = counter("user", "alice", "month", time.time()).key
        key = counter("key", "k1", "month", time.time()).key
        mine, keys = await ledger_of(rt).totals([month, key])
    assert (mine.tokens, keys.tokens) == (25, 15)
    assert fake.requests[0].max_tokens == 50  # nothing reserved: the request is unchanged


class PricedFake(FakeLLM):
    """A fake whose model has prices of its own (overriding the price table)."""

    async def list_models(self) -> Sequence[ModelInfo]:
        return [
            ModelInfo(
                id=self.model,
                provider=self.name,
                input_cost_per_token=Decimal("0.000001"),
                output_cost_per_token=Decimal("0.000002"),
            )
        ]


async def test_a_cost_budget_reserves_at_the_models_prices(tmp_path: Path) -> None:
    prompt = await prompt_tokens()
    each = Decimal("0.000001") * prompt + Decimal("0.000002") * 50  # reserved per request
    budget = each * 3  # exactly three fit
    fake = PricedFake(
        *(reply("ok", usage=used(prompt + 50, str(each), prompt=prompt)) for _ in range(3))
    )
    toml = f'[budgets.user]\ncost = "{budget}"\nperiod = "month"\n'
    async with runtime_for(config(tmp_path, toml), [fake]) as rt:
        for _ in range(3):
            await rt.llm.complete(ask())
        with pytest.raises(BudgetExceededError) as refused:
            await rt.llm.complete(ask())
    assert (refused.value.budget, refused.value.unit) == ("user", "cost")
    assert Decimal(refused.value.used) == budget  # exact: three times the price, no float error
    assert len(fake.requests) == 3


async def test_per_key_requests_per_minute(tmp_path: Path) -> None:
    fake = FakeLLM(*(reply("ok") for _ in range(4)))
    toml = "[budgets]\nkey_requests_per_minute = 2\n"
    async with runtime_for(config(tmp_path, toml), [fake]) as rt:
        await rt.llm.complete(ask(key_id="k1"))
        await rt.llm.complete(ask(key_id="k1"))
        with pytest.raises(TooManyRequestsError) as limited:
            await rt.llm.complete(ask(key_id="k1"))
        await rt.llm.complete(ask(key_id="k2"))  # another key has its own count
        await rt.llm.complete(ask())  # and calls without a key are not limited per key
    assert limited.value.retry_after is not None
    assert 1 <= limited.value.retry_after <= 60
    assert len(fake.requests) == 4


async def test_per_key_tokens_per_minute_count_what_was_used(tmp_path: Path) -> None:
    prompt = await prompt_tokens()
    fake = FakeLLM(*(reply("ok", usage=used(prompt + 1)) for _ in range(3)))
    limit = 2 * (prompt + 50)  # room for two reservations of prompt + max_tokens
    toml = f"[budgets]\nkey_tokens_per_minute = {limit}\n"
    async with runtime_for(config(tmp_path, toml), [fake]) as rt:
        first = asyncio.create_task(rt.llm.complete(ask(key_id="k1")))
        await rt.llm.complete(ask(key_id="k1"))
        await first
        # each used prompt + 1 tokens: corrected down, so a third fits in the same minute
        await rt.llm.complete(ask(key_id="k1"))
    assert len(fake.requests) == 3


async def test_a_call_alone_past_the_keys_tokens_per_minute_is_invalid(tmp_path: Path) -> None:
    """Waiting would never let it through: a 422 saying why, not a 429 forever."""
    prompt = await prompt_tokens()
    fake = FakeLLM(reply("ok", usage=used(prompt + 1)))
    limit = prompt + 50
    toml = f"[budgets]\nkey_tokens_per_minute = {limit}\nkey_requests_per_minute = 2\n"
    async with runtime_for(config(tmp_path, toml), [fake]) as rt:
        for _ in range(3):  # refused each time, and never counted as a call of the minute
            with pytest.raises(InvalidRequestError) as refused:
                await rt.llm.complete(ask(key_id="k1", max_tokens=limit))
        await rt.llm.complete(ask(key_id="k1"))  # prompt + 50: fits
    assert refused.value.status == 422
    message = str(refused.value)
    assert f"may use up to {prompt + limit} tokens" in message
    assert f"limit of {limit} tokens per minute" in message
    assert "smaller max_tokens" in message
    assert len(fake.requests) == 1


async def test_a_slow_call_holds_its_reservation_until_it_ends(tmp_path: Path) -> None:
    reserve = await prompt_tokens() + 50
    fake = FakeLLM(delay(0.3), reply("slow", usage=used(reserve)), reply("next"))
    toml = f"[budgets.user]\ntokens = {reserve}\n"
    async with runtime_for(config(tmp_path, toml), [fake]) as rt:
        slow = asyncio.create_task(rt.llm.complete(ask()))
        await asyncio.sleep(0.05)
        with pytest.raises(BudgetExceededError):
            await rt.llm.complete(ask())  # the slow one holds the whole budget
        await slow
        assert (await user_day(rt)).tokens == reserve


def test_periods_are_utc_days_and_months() -> None:
    from datetime import UTC, datetime

    from hubbub.budgets import period_bounds

    def at(*parts: int) -> float:
        return datetime(*parts, tzinfo=UTC).timestamp()

    new_year = at(2027, 1, 1)
    assert period_bounds("day", at(2026, 12, 31, 23, 59, 59)) == ("d20261231", new_year)
    assert period_bounds("month", at(2026, 12, 31, 23, 59, 59)) == ("m202612", new_year)
    assert period_bounds("day", new_year) == ("d20270101", at(2027, 1, 2))
    assert period_bounds("month", at(2028, 2, 29, 12)) == ("m202802", at(2028, 3, 1))


def test_budgets_are_configured_and_documented_as_tables(tmp_path: Path) -> None:
    import tomllib

    from hubbub.config.reference import render_example_toml, render_markdown
    from hubbub.errors import ConfigError

    toml = '[budgets.global]\ncost = "5.00"\n[budgets.key]\ntokens = 10\nperiod = "month"\n'
    budgets = config(tmp_path, toml).budgets
    assert (budgets.global_.cost, budgets.key.tokens, budgets.key.period) == (
        Decimal("5.00"),
        10,
        "month",
    )
    for bad in ('[budgets.user]\nperiod = "day"\n', '[budgets.user]\ncost = "-1"\n'):
        with pytest.raises(ConfigError, match="budgets"):
            config(tmp_path, bad)
    page = render_markdown()
    for table in ("user", "key", "global"):
        assert f"### `[budgets.{table}]`" in page
    example = render_example_toml()
    # the example's budget tables, uncommented, are a valid configuration
    block = example.split("# [budgets.user]", 1)[1].split("\n\n\n", 1)[0]
    lines = ["[budgets.user]", *(line[2:] for line in block.splitlines() if line.startswith("# "))]
    shown = "\n".join(line for line in lines if "=" in line or line.startswith("["))
    assert "[budgets.global]" in shown
    parsed = tomllib.loads(shown.replace('cost = "..."', 'cost = "1"'))
    assert set(parsed["budgets"]) == {"user", "key", "global"}


async def test_budgets_without_a_ledger_stop_startup_with_the_reason(tmp_path: Path) -> None:
    from hubbub.errors import ComponentError

    toml = '[plugins]\ndisabled = ["memory_ledger"]\n[budgets.user]\ntokens = 10\n'
    with pytest.raises(ComponentError, match="memory_ledger plugin disabled"):
        async with runtime_for(config(tmp_path, toml)):
            pass
    # without budgets, no ledger simply means nothing is counted
    async with runtime_for(config(tmp_path, '[plugins]\ndisabled = ["memory_ledger"]\n')) as rt:
        from hubbub.middleware import LLMMiddlewareBase

        assert [type(m) for m in rt.llm.middleware] == [LLMMiddlewareBase]  # a pass-through


async def test_a_key_budget_limits_each_key_and_shows_in_its_usage(tmp_path: Path) -> None:
    from hubbub.budgets import budget_ledger, usage_report
    from hubbub.models import Principal

    prompt = await prompt_tokens()
    fake = FakeLLM(*(reply("ok", usage=used(prompt + 50)) for _ in range(3)))
    toml = f'[budgets.key]\ntokens = {prompt + 50}\nperiod = "month"\n'
    async with runtime_for(config(tmp_path, toml), [fake]) as rt:
        await rt.llm.complete(ask(key_id="k1"))
        with pytest.raises(BudgetExceededError) as refused:
            await rt.llm.complete(ask(key_id="k1"))
        await rt.llm.complete(ask(key_id="k2"))  # each key has its own budget
        await rt.llm.complete(ask())  # a call without a key has no key budget
        caller = Principal(id="alice", auth_method="api_key", credential_id="k1")
        report = await usage_report(budget_ledger(rt), rt.config.budgets, caller)
        session = Principal(id="alice", auth_method="local", session_id="s", credential_id="s")
        without_key = await usage_report(budget_ledger(rt), rt.config.budgets, session)
    assert refused.value.budget == "key"
    assert report.total_tokens == 3 * (prompt + 50)  # alice's calls, whatever the key
    [key] = report.budgets
    assert (key.scope, key.period, key.tokens.used, key.tokens.limit) == (
        "key",
        "month",
        prompt + 50,
        prompt + 50,
    )
    assert without_key.budgets == []  # a session caller has no key budget to show


async def test_an_unreachable_redis_ledger_refuses_budgeted_calls(tmp_path: Path) -> None:
    from redis_support import RedisServer

    from hubbub.errors import ComponentError

    server = RedisServer(tmp_path / "redis").start()
    fake = FakeLLM(reply("counted only"))
    toml = (
        f'[redis]\nurl = "{server.url}"\ntimeout = 1.0\n[budgets]\nbackend = "redis"\n'
        "[budgets.global]\ntokens = 100000\n"
    )
    try:
        async with runtime_for(config(tmp_path, toml), [fake]) as rt:
            server.stop()
            with pytest.raises(ComponentError, match="Redis budget ledger"):
                await rt.llm.complete(ask())
            assert fake.requests == []  # refused before the provider: nothing uncounted
            health = await rt.health()
            assert health.components["budget_ledger"].status == "down"
    finally:
        server.stop()


async def test_a_cost_budget_uses_the_price_table(tmp_path: Path) -> None:
    from hubbub.llm.pricing import PriceTable

    prices = (await PriceTable.load()).prices("gpt-4o-mini")
    assert prices is not None  # litellm's bundled table knows it
    prompt = await prompt_tokens("fake/gpt-4o-mini")  # o200k_base
    each = prices[0] * prompt + prices[1] * 50  # at most: the prompt and max_tokens
    fake = FakeLLM(
        *(reply("ok", usage=used(prompt + 50, str(each), prompt=prompt)) for _ in range(2)),
        models=("gpt-4o-mini",),  # fake/gpt-4o-mini: priced as gpt-4o-mini
    )
    toml = f'[budgets.user]\ncost = "{each * 2}"\n'
    async with runtime_for(config(tmp_path, toml), [fake]) as rt:
        for _ in range(2):
            await rt.llm.complete(_model(ask(), fake.model))
        with pytest.raises(BudgetExceededError) as refused:
            await rt.llm.complete(_model(ask(), fake.model))
    assert refused.value.unit == "cost"
    assert Decimal(refused.value.used) == each * 2
    assert len(fake.requests) == 2


def _model(request: ChatRequest, model: str) -> ChatRequest:
    request.model = model
    return request
