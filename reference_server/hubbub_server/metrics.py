"""Prometheus metrics of one app (its own registry: nothing global).

Requests (count and latency by route and status), streams open now, LLM tokens and cost by model
(from the runtime's ``usage`` events, so any runtime the app serves is counted), and component
health.

Under ``hubbub serve --workers N`` the metrics add up over the workers, so every scrape, whichever
worker answers it, reports the same totals: ``serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh directory before the workers start, prometheus-client then keeps every worker's values in
files there, and a scrape merges them (its multiprocess mode). Counters and histograms add up,
dead workers included; ``hubbub_active_streams`` adds up the live workers; component health is
the most recent value any live worker has measured (the scraping worker measures it then).
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from hubbub.models import RuntimeHealth, Usage

__all__ = ["Metrics"]

_HEALTH_VALUE = {"ok": 1.0, "degraded": 0.5, "down": 0.0}


MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""The environment variable that switches prometheus-client to its multiprocess mode (read by
prometheus-client when it is imported; ``hubbub serve --workers`` sets it for its workers)."""


class Metrics:
    """The app's metrics.

    :param multiprocess_dir: where every process of a multi-process server keeps its values
        (default: ``$PROMETHEUS_MULTIPROC_DIR``, the directory prometheus-client itself uses);
        ``None`` when this process serves alone.
    """

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir or os.environ.get(MULTIPROCESS_DIR) or None
        """The shared directory of a multi-process server, else ``None``."""
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
            "hubbub_active_streams",
            "Streaming responses open now.",
            registry=self.registry,
            multiprocess_mode="livesum",
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
            multiprocess_mode="livemostrecent",
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
        if usage.cost:  # exact up to here; a float only at the metrics edge
            children[2].inc(float(usage.cost))

    def render(self, health: RuntimeHealth | None = None) -> bytes:
        """The text exposition format, with component health refreshed from ``health``."""
        if health is not None:
            self.health.labels("runtime").set(_HEALTH_VALUE[health.status])
            for name, component in health.components.items():
                self.health.labels(name).set(_HEALTH_VALUE[component.status])
        registry = self.registry
        if self.multiprocess_dir is not None:  # every worker's values, merged
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        data: Any = generate_latest(registry)
        return bytes(data)

    def close(self) -> None:
        """This process stops serving: in a multi-process server, its gauges of live processes
        (open streams, health) stop counting; its counters still do."""
        if self.multiprocess_dir is not None:
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]
