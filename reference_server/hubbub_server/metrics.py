"""Prometheus metrics of one app (its own registry: nothing global).

Requests (count and latency by route and status), streams open now, LLM tokens and cost by model
(from the runtime's ``usage`` events, so any runtime the app serves is counted), and component
health.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from hubbub.models import RuntimeHealth, Usage

__all__ = ["Metrics"]

_HEALTH_VALUE = {"ok": 1.0, "degraded": 0.5, "down": 0.0}


class Metrics:
    """The app's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "hubbub_http_requests",
            "HTTP requests handled.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hubbub_http_request_duration_seconds",
            "Time to the response's first byte.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.streams = Gauge(
            "hubbub_active_streams", "Streaming responses open now.", registry=self.registry
        )
        self.tokens = Counter(
            "hubbub_llm_tokens", "LLM tokens consumed.", ["model", "kind"], registry=self.registry
        )
        self.cost = Counter(
            "hubbub_llm_cost_usd",
            "Estimated LLM cost in US dollars.",
            ["model"],
            registry=self.registry,
        )
        # labels() looks its child up on every call; the hot path keeps its own maps.
        self._latency: dict[tuple[str, str], Any] = {}
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._tokens: dict[str, tuple[Any, Any, Any]] = {}
        self.health = Gauge(
            "hubbub_component_health",
            "Component health: 1 ok, 0.5 degraded, 0 down.",
            ["component"],
            registry=self.registry,
        )

    def observe_latency(self, method: str, route: str, seconds: float) -> None:
        """Record a request's time to first byte."""
        child = self._latency.get((method, route))
        if child is None:
            child = self._latency[(method, route)] = self.latency.labels(method, route)
        child.observe(seconds)

    def count_request(self, method: str, route: str, status: int) -> None:
        """Count a finished request."""
        child = self._requests.get((method, route, status))
        if child is None:
            child = self.requests.labels(method, route, str(status))
            self._requests[(method, route, status)] = child
        child.inc()

    def record_usage(self, model: str, usage: Usage) -> None:
        """Count one LLM reply's tokens and cost (from the runtime's ``usage`` events)."""
        children = self._tokens.get(model)
        if children is None:
            children = self._tokens[model] = (
                self.tokens.labels(model, "prompt"),
                self.tokens.labels(model, "completion"),
                self.cost.labels(model),
            )
        children[0].inc(usage.prompt_tokens)
        children[1].inc(usage.completion_tokens)
        if usage.cost_usd:
            children[2].inc(usage.cost_usd)

    def render(self, health: RuntimeHealth | None = None) -> bytes:
        """The text exposition format, with component health refreshed from ``health``."""
        if health is not None:
            self.health.labels("runtime").set(_HEALTH_VALUE[health.status])
            for name, component in health.components.items():
                self.health.labels(name).set(_HEALTH_VALUE[component.status])
        data: Any = generate_latest(self.registry)
        return bytes(data)
