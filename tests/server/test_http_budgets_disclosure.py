"""The global budget through the real server: a caller refused by it (402) learns that it has no
room and when it starts again, never how much the deployment has used nor its limit; ``GET
/api/usage`` shows those figures to admins only, and to everyone that it is exhausted."""

from __future__ import annotations

from pathlib import Path

from live_support import assert_problem, running

from hubbub.llm.tokens import TokenCounter
from hubbub.models import Message

PROMPT = "tell me everything about the budgets of this deployment, in detail"
BODY = {
    "model": "offline/echo",
    "messages": [{"role": "user", "content": PROMPT}],
    "max_tokens": 5,  # the echo is cut at 5 tokens: the call uses all it reserved
}


async def test_only_admins_see_the_global_budgets_figures(tmp_path: Path) -> None:
    prompt = await TokenCounter().count_prompt(
        "offline/echo", [Message(role="user", content=PROMPT)]
    )
    budget = prompt + 5  # room for exactly one call
    toml = f'[llm]\ndefault_model = "offline/echo"\n[budgets.global]\ntokens = {budget}\n'
    with running(tmp_path, toml, keys=("alice",)) as server:
        _, alice = server.keys["alice"]
        created = server.hubbub("keys", "create", "--user", "root", "--admin")
        assert created.returncode == 0, created.stderr
        root = created.stdout.strip().splitlines()[-1]
        with server.client(alice) as client:
            served = client.post("/v1/chat/completions", json=BODY)
            refused = client.post("/v1/chat/completions", json=BODY)
            seen_by_alice = client.get("/api/usage").json()
        with server.client(root) as client:
            seen_by_root = client.get("/api/usage").json()
    assert served.status_code == 200, served.text
    assert served.json()["usage"]["total_tokens"] == budget
    problem = assert_problem(refused, 402)
    assert (problem["code"], problem["budget"], problem["unit"]) == (
        "budget_exceeded",
        "global",
        "tokens",
    )
    assert "used" not in problem
    assert "limit" not in problem
    assert f"of {budget} tokens" not in problem["detail"]
    assert "used or held" not in problem["detail"]
    assert "the global budget has no room" in problem["detail"]
    assert "starts again at" in problem["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    [hidden] = seen_by_alice["budgets"]
    assert hidden["scope"] == "global"
    assert (hidden["tokens"], hidden["cost"], hidden["exhausted"]) == (None, None, True)
    assert hidden["resets_at"] > 0
    assert seen_by_alice["total_tokens"] == budget  # her own spending is hers to see
    [shown] = seen_by_root["budgets"]
    assert shown["exhausted"] is True
    assert shown["tokens"] == {"used": budget, "reserved": 0, "limit": budget}
    assert shown["resets_at"] == hidden["resets_at"]
