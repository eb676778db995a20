"""Prometheus metrics, one registry per app (never the process-global default registry).

Request metrics are labelled by route *template* (``/api/v1/tenant/users/{user_id}``), never
by raw path, so ids cannot blow up the number of series. Gauges that mirror live state
(memory, caches, models) are read at scrape time by a custom collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _LiveCollector(Collector):
    """Reads gauges from callables at scrape time."""

    def __init__(self, sources: list[Callable[[], Iterable[Any]]]) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Any]:
        for source in self._sources:
            yield from source()


class Metrics:
    """All of ragd's metrics. Services record through the methods; ``render`` scrapes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "ragd_http_requests", "HTTP requests by route template and status.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.http_latency = Histogram(
            "ragd_http_request_duration_seconds", "HTTP request latency.",
            ["method", "route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.auth = Counter(
            "ragd_auth", "Authentication outcomes by method or failure reason.",
            ["outcome", "reason"], registry=self.registry,
        )
        self.model_loads = Counter(
            "ragd_model_loads", "Model loads by model and outcome.",
            ["model", "outcome"], registry=self.registry,
        )
        self.model_load_seconds = Histogram(
            "ragd_model_load_duration_seconds", "Time to load a model.",
            ["model"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.model_unloads = Counter(
            "ragd_model_unloads", "Model unloads by model and reason.",
            ["model", "reason"], registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "ragd_model_inference_duration_seconds", "Time of one model call (a batch).",
            ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self._live: list[Callable[[], Iterable[Any]]] = []
        self.registry.register(_LiveCollector(self._live))

    def add_live_source(self, source: Callable[[], Iterable[Any]]) -> None:
        """Register a callable yielding metric families, evaluated at every scrape."""
        self._live.append(source)

    # -- recording ---------------------------------------------------------------------------

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_latency.labels(method, route).observe(seconds)

    def auth_success(self, method: str) -> None:
        self.auth.labels("success", method).inc()

    def auth_failure(self, reason: str) -> None:
        self.auth.labels("failure", reason).inc()

    # RegistryObserver protocol (ragd.models.registry)
    def on_load(self, name: str, seconds: float, ok: bool) -> None:
        self.model_loads.labels(name, "ok" if ok else "failed").inc()
        if ok:
            self.model_load_seconds.labels(name).observe(seconds)

    def on_unload(self, name: str, reason: str) -> None:
        self.model_unloads.labels(name, reason).inc()

    def on_inference(self, name: str, seconds: float) -> None:
        self.inference_seconds.labels(name).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def gauge(name: str, documentation: str, value: float, **labels: str) -> GaugeMetricFamily:
    """One gauge family with a single sample (labels optional)."""
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    family.add_metric(list(labels.values()), value)
    return family


def labelled_gauge(
    name: str, documentation: str, label: str, values: dict[str, float]
) -> GaugeMetricFamily:
    """A gauge family with one sample per ``label`` value."""
    return _fill(GaugeMetricFamily(name, documentation, labels=[label]), values)


def labelled_counter(
    name: str, documentation: str, label: str, values: dict[str, float]
) -> CounterMetricFamily:
    """A counter family with one sample per ``label`` value."""
    return _fill(CounterMetricFamily(name, documentation, labels=[label]), values)


_Family = TypeVar("_Family", GaugeMetricFamily, CounterMetricFamily)


def _fill(family: _Family, values: dict[str, float]) -> _Family:
    for key, value in values.items():
        family.add_metric([key], value)
    return family
