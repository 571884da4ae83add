"""Budgets through the real server (``hubbub serve`` over HTTP, the offline provider): 50
concurrent chat completions against a budget for 10 get exactly 10 answers and 40 problems
(402), the spending recorded never passes the budget and equals what the answers reported, and
``GET /api/usage`` shows it; also across two processes sharing a real Redis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_support import LiveServer, assert_problem, running, running_pair
from redis_support import RedisServer

from hubbub.llm.tokens import TokenCounter
from hubbub.models import Message

MAX_TOKENS = 5
PROMPT = " ".join(["the quick brown fox jumps over the lazy dog"] * 25)  # ~225 tokens


async def reservation() -> int:
    """What one request reserves: its prompt's tokens (as hubbub counts them) + max_tokens."""
    prompt = await TokenCounter().count_prompt(
        "offline/echo", [Message(role="user", content=PROMPT)]
    )
    return prompt + MAX_TOKENS


def budget_toml(budget: int, extra: str = "") -> str:
    return f"""
[llm]
default_model = "offline/echo"

[budgets.user]
tokens = {budget}
period = "day"
{extra}
"""


async def fire(urls: list[str], key: str, count: int) -> list[httpx.Response]:
    """``count`` chat completions at once, spread over ``urls``."""
    body = {
        "model": "offline/echo",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
    }
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(trust_env=False, timeout=60, limits=limits) as client:
        return list(
            await asyncio.gather(
                *(
                    client.post(
                        f"{urls[i % len(urls)]}/v1/chat/completions", json=body, headers=headers
                    )
                    for i in range(count)
                )
            )
        )


def check_outcome(responses: list[httpx.Response], budget: int) -> int:
    """Exactly 10 answers and 40 refusals; return the tokens the answers reported."""
    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert (len(served), len(refused)) == (10, 40), [r.status_code for r in refused][:5]
    for response in refused:
        body = assert_problem(response, 402)
        assert body["code"] == "budget_exceeded"
        assert (body["budget"], body["unit"], body["limit"]) == ("user", "tokens", str(budget))
        assert int(body["used"]) <= budget
        assert 1 <= int(response.headers["retry-after"]) <= 86_400
    return sum(r.json()["usage"]["total_tokens"] for r in served)


def usage(server: LiveServer, key: str) -> dict[str, Any]:
    with server.client(key) as client:
        response = client.get("/api/usage")
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_fifty_concurrent_requests_against_a_budget_for_ten(tmp_path: Path) -> None:
    each = await reservation()
    budget = 10 * each + each // 2
    with running(tmp_path, budget_toml(budget), keys=("alice",)) as server:
        _, key = server.keys["alice"]
        responses = await fire([server.url], key, 50)
        reported = check_outcome(responses, budget)
        report = usage(server, key)
    assert report["total_tokens"] == reported  # what was recorded is what the answers said
    assert reported <= budget
    [user] = [b for b in report["budgets"] if b["scope"] == "user"]
    assert user["period"] == "day"
    assert user["tokens"] == {"used": reported, "reserved": 0, "limit": budget}
    assert user["cost"]["limit"] is None
    assert float(user["resets_at"]) > 0
    assert report["cost"] == "0"  # the offline models are free


async def test_a_budget_holds_across_two_processes_sharing_redis(tmp_path: Path) -> None:
    each = await reservation()
    budget = 10 * each + each // 2
    redis = RedisServer(tmp_path / "redis").start()
    try:
        extra = f'[budgets]\nbackend = "redis"\n\n[redis]\nurl = "{redis.url}"\n'
        toml = budget_toml(budget).replace("[budgets.user]", extra + "\n[budgets.user]")
        with running_pair(tmp_path, toml) as (a, b):
            _, key = a.keys["alice"]
            responses = await fire([a.url, b.url], key, 50)
            reported = check_outcome(responses, budget)
            seen_by_a, seen_by_b = usage(a, key), usage(b, key)
    finally:
        redis.stop()
    assert seen_by_a == seen_by_b  # one ledger
    assert seen_by_a["total_tokens"] == reported <= budget


def test_usage_without_budgets_counts_the_callers_spending(tmp_path: Path) -> None:
    with running(
        tmp_path, '[llm]\ndefault_model = "offline/echo"\n', keys=("alice", "bob")
    ) as server:
        _, alice = server.keys["alice"]
        _, bob = server.keys["bob"]
        with server.client(alice) as client:
            answer = client.post(
                "/v1/chat/completions",
                json={"model": "offline/echo", "messages": [{"role": "user", "content": "hi"}]},
            )
        assert answer.status_code == 200
        mine, theirs = usage(server, alice), usage(server, bob)
    assert mine["total_tokens"] == answer.json()["usage"]["total_tokens"] > 0
    assert mine["budgets"] == []
    assert mine["period"] == "month"
    assert theirs["total_tokens"] == 0  # each caller sees their own


def test_usage_needs_a_caller(tmp_path: Path) -> None:
    with running(tmp_path, "", keys=("alice",)) as server, server.client() as anonymous:
        assert_problem(anonymous.get("/api/usage"), 401)


@pytest.mark.parametrize(
    "toml", ["[budgets.user]\ntokens = 0\n", '[budgets.key]\nperiod = "day"\n']
)
def test_a_bad_budget_is_refused_at_startup(tmp_path: Path, toml: str) -> None:
    server = LiveServer(tmp_path, toml)
    done = server.hubbub("config", "check")
    assert done.returncode != 0
    assert "budgets." in done.stderr + done.stdout


def test_a_stream_past_the_budget_is_refused_before_it_starts(tmp_path: Path) -> None:
    body = {
        "model": "offline/echo",
        "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 20,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    # the first reserves its prompt + 20 and uses less; the second no longer fits in 40
    toml = '[llm]\ndefault_model = "offline/echo"\n[budgets.user]\ntokens = 40\n'
    with running(tmp_path, toml, keys=("alice",)) as server:
        _, key = server.keys["alice"]
        with server.client(key) as client:
            first = client.post("/v1/chat/completions", json=body)
            second = client.post("/v1/chat/completions", json=body)
        report = usage(server, key)
    assert first.status_code == 200
    frames = [line for line in first.text.splitlines() if line.startswith("data: {")]
    streamed = json.loads(frames[-1][len("data: ") :])["usage"]["total_tokens"]
    body_ = assert_problem(second, 402)  # a problem, not a 200 with a broken stream
    assert body_["code"] == "budget_exceeded"
    assert report["total_tokens"] == streamed  # the stream was settled to what it used


def chat(client: httpx.Client, max_tokens: int = 5) -> httpx.Response:
    body = {
        "model": "offline/echo",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
    }
    return client.post("/v1/chat/completions", json=body)


def test_a_key_past_its_llm_calls_per_minute_gets_429(tmp_path: Path) -> None:
    toml = '[llm]\ndefault_model = "offline/echo"\n[budgets]\nkey_requests_per_minute = 2\n'
    with running(tmp_path, toml, keys=("alice",)) as server:
        _, first = server.keys["alice"]
        _, second = server.create_key("alice")
        statuses: list[int] = []
        with server.client(first) as client:
            # Two a minute: a 429 comes by the 5th call even if a minute turns meanwhile.
            while len(statuses) < 5:
                response = chat(client)
                statuses.append(response.status_code)
                if response.status_code != 200:
                    break
            assert client.get("/v1/models").status_code == 200  # only LLM calls are counted
        with server.client(second) as other:
            assert chat(other).status_code == 200  # counted per key
    assert statuses[-1] == 429, statuses
    assert 2 <= statuses.count(200) <= 4, statuses
    body = assert_problem(response, 429)
    assert body["code"] == "too_many_requests"
    assert "LLM calls" in body["detail"]
    assert 1 <= int(response.headers["retry-after"]) <= 60


def test_a_key_budget_limits_the_key_and_shows_in_its_usage(tmp_path: Path) -> None:
    toml = '[llm]\ndefault_model = "offline/echo"\n[budgets.key]\ntokens = 30\nperiod = "month"\n'
    with running(tmp_path, toml, keys=("alice",)) as server:
        _, first = server.keys["alice"]
        _, second = server.create_key("alice")
        with server.client(first) as client:
            answered = chat(client, max_tokens=10)  # reserves its prompt + 10 of the 30
            refused = chat(client, max_tokens=25)  # what is left cannot hold this one
            report = client.get("/api/usage").json()
        with server.client(second) as other:
            other_answer = chat(other, max_tokens=25)  # each key has its own budget
            other_report = other.get("/api/usage").json()
    assert answered.status_code == 200
    spent = answered.json()["usage"]["total_tokens"]
    body = assert_problem(refused, 402)
    assert (body["budget"], body["unit"], body["used"], body["limit"]) == (
        "key",
        "tokens",
        str(spent),
        "30",
    )
    [key] = report["budgets"]
    assert (key["scope"], key["period"], key["tokens"]["used"]) == ("key", "month", spent)
    assert report["total_tokens"] == spent
    assert other_answer.status_code == 200
    other_spent = other_answer.json()["usage"]["total_tokens"]
    [other_key] = other_report["budgets"]
    assert other_key["tokens"]["used"] == other_spent
    assert other_report["total_tokens"] == spent + other_spent  # alice's calls, both keys
