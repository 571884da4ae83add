"""The global budget's figures are the whole deployment's spending: a refusal by it (402) says
that it has no room and when it starts again, never its used or limit; ``GET /api/usage``'s
report shows them to admins only (others see that it is exhausted and when it resets). A
user's own budget still shows its figures."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from hubbub.budgets import budget_ledger, usage_report
from hubbub.errors import BudgetExceededError
from hubbub.models import ChatRequest, Message, Principal, Usage
from hubbub.testing import FakeLLM, config_for, reply, runtime_for


def ask(user: str) -> ChatRequest:
    return ChatRequest(
        model="fake/model",
        messages=[Message(role="user", content="how much is left?")],
        max_tokens=40,
        user=user,
    )


SPENT = Usage(prompt_tokens=600, completion_tokens=400, total_tokens=1000)

TOML = (
    '[budgets.global]\ntokens = 1000\nperiod = "month"\n'
    '[budgets.user]\ntokens = 5000\nperiod = "day"\n'
)


async def test_the_global_budget_refuses_without_its_figures(tmp_path: Path) -> None:
    fake = FakeLLM(reply("spent it all", usage=SPENT))
    async with runtime_for(config_for(tmp_path, TOML), [fake]) as rt:
        await rt.llm.complete(ask("alice"))  # reserves little, uses the whole global budget
        with pytest.raises(BudgetExceededError) as refused:
            await rt.llm.complete(ask("bob"))
    error = refused.value
    assert (error.status, error.budget, error.unit) == (402, "global", "tokens")
    assert error.extensions() == {"budget": "global", "unit": "tokens"}
    message = str(error)
    assert "1000" not in message  # neither the used nor the limit
    assert "the global budget has no room" in message
    assert "starts again at" in message
    assert error.retry_after is not None
    assert error.retry_after >= 1
    # a user's own budget still shows its figures
    fake = FakeLLM(reply("spent", usage=SPENT))
    toml = '[budgets.user]\ntokens = 1000\nperiod = "day"\n'
    async with runtime_for(config_for(tmp_path / "own", toml), [fake]) as rt:
        await rt.llm.complete(ask("alice"))
        with pytest.raises(BudgetExceededError) as refused:
            await rt.llm.complete(ask("alice"))
    assert refused.value.extensions() == {
        "budget": "user",
        "unit": "tokens",
        "used": "1000",
        "limit": "1000",
    }
    assert "1000 of 1000 tokens" in str(refused.value)


async def test_usage_shows_the_global_figures_to_admins_only(tmp_path: Path) -> None:
    fake = FakeLLM(reply("spent it all", usage=SPENT))
    toml = TOML.replace("tokens = 1000\n", 'tokens = 1000\ncost = "5"\n', 1)
    async with runtime_for(config_for(tmp_path, toml), [fake]) as rt:
        await rt.llm.complete(ask("alice"))
        ledger, config = budget_ledger(rt), rt.config.budgets
        bob = Principal(id="bob", auth_method="api_key", credential_id="k2", roles=["user"])
        root = Principal(id="root", auth_method="local", roles=["user", "admin"])
        seen_by_bob = await usage_report(ledger, config, bob)
        seen_by_root = await usage_report(ledger, config, root)
    [bobs_own, hidden] = seen_by_bob.budgets
    assert (hidden.scope, hidden.tokens, hidden.cost) == ("global", None, None)
    assert hidden.exhausted  # but that it is exhausted, and when it resets, is shown
    assert hidden.resets_at > 0
    assert bobs_own.scope == "user"
    assert bobs_own.tokens is not None
    assert (bobs_own.tokens.used, bobs_own.tokens.limit, bobs_own.exhausted) == (0, 5000, False)
    [_, shown] = seen_by_root.budgets
    assert shown.scope == "global"
    assert shown.exhausted
    assert shown.tokens is not None
    assert shown.cost is not None
    assert (shown.tokens.used, shown.tokens.limit) == (1000, 1000)
    assert (shown.cost.used, shown.cost.limit) == (Decimal(0), Decimal(5))
