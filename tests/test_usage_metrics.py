"""The metrics count each reply's tokens and its exact cost by model (a float only at the
metrics edge)."""

from __future__ import annotations

from decimal import Decimal

from prometheus_client.parser import text_string_to_metric_families

from hubbub.models import Usage
from hubbub_server.metrics import Metrics


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return None


def test_tokens_and_cost_are_counted_by_model() -> None:
    metrics = Metrics()
    metrics.record_usage(
        "gpt-4o-mini",
        Usage(prompt_tokens=1000, completion_tokens=10, cost=Decimal("0.000156")),
    )
    metrics.record_usage(
        "gpt-4o-mini",
        Usage(prompt_tokens=500, completion_tokens=5, cost=Decimal("0.000078")),
    )
    metrics.record_usage("offline/echo", Usage(prompt_tokens=7, cost=Decimal(0)))
    metrics.record_usage("mystery", Usage(prompt_tokens=3))  # price unknown: no cost
    text = metrics.render().decode()
    tokens = "hubbub_llm_tokens_total"
    assert sample(text, tokens, model="gpt-4o-mini", kind="prompt") == 1500
    assert sample(text, tokens, model="gpt-4o-mini", kind="completion") == 15
    assert sample(text, tokens, model="mystery", kind="prompt") == 3
    cost = sample(text, "hubbub_llm_cost_usd_total", model="gpt-4o-mini")
    assert cost is not None
    assert abs(cost - 0.000234) < 1e-12
    assert sample(text, "hubbub_llm_cost_usd_total", model="offline/echo") == 0
    assert sample(text, "hubbub_llm_cost_usd_total", model="mystery") == 0
