"""Prometheus metrics, one registry per app (never the process-global default registry).

Request metrics are labelled by route *template* (``/api/v1/tenant/users/{user_id}``), never
by raw path, so ids cannot blow up the number of series. Gauges that mirror live state
(memory, caches, models) are read at scrape time by a custom collector; families read from
the database at scrape time (the job queue's depth, the same on every replica) are passed to
:meth:`Metrics.render`. Every label takes values from a closed set (modes, stages, job kinds,
configured provider names, error kinds), never from what a client sends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_ANSWER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
_STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
#: Job timings that are flags, not durations.
_NOT_DURATIONS = frozenset({"skipped"})


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
        self.search_seconds = Histogram(
            "ragd_search_duration_seconds", "Search latency (the whole search path).",
            ["mode"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.chat_seconds = Histogram(
            "ragd_chat_duration_seconds",
            "Time to a whole answer (retrieval, the provider chain, citations; streams: "
            "until the last event).",
            ["stream"], buckets=_ANSWER_BUCKETS, registry=self.registry,
        )
        self.llm_outcomes = Counter(
            "ragd_llm_provider_outcomes",
            "LLM provider calls by outcome (ok or the error kind) and providers of a plan "
            "skipped (skipped_breaker_open, skipped_deadline).",
            ["provider", "outcome"], registry=self.registry,
        )
        self.job_stage_seconds = Histogram(
            "ragd_job_stage_duration_seconds",
            "Stage timings of jobs that succeeded in this process (ingest: parse, chunk, "
            "embed, keywords, index, total).",
            ["kind", "stage"], buckets=_STAGE_BUCKETS, registry=self.registry,
        )
        self.chunks_indexed = Counter(
            "ragd_chunks_indexed", "Chunks of document versions committed by this process.",
            registry=self.registry,
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

    def observe_search(self, mode: str, seconds: float) -> None:
        self.search_seconds.labels(mode).observe(seconds)

    def observe_chat(self, stream: bool, seconds: float) -> None:
        self.chat_seconds.labels("true" if stream else "false").observe(seconds)

    def llm_outcome(self, provider: str, outcome: str) -> None:
        self.llm_outcomes.labels(provider, outcome).inc()

    def job_succeeded(self, kind: str, timings: Mapping[str, float], chunks: int = 0) -> None:
        """A job of ``kind`` succeeded with these stage timings (seconds), having committed
        ``chunks`` chunks."""
        for stage, seconds in timings.items():
            if stage not in _NOT_DURATIONS:
                self.job_stage_seconds.labels(kind, stage).observe(seconds)
        if chunks:
            self.chunks_indexed.inc(chunks)

    def render(self, extra: Iterable[Metric] = ()) -> bytes:
        """The exposition text of every metric, plus ``extra`` families read for this
        scrape (from the database)."""
        text = generate_latest(self.registry)
        families = list(extra)
        if families:
            text += generate_latest(_Families(families))
        return text


class _Families(Collector):
    """Families read for one scrape, in the shape ``generate_latest`` collects."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


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
