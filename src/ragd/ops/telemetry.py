"""Live gauges for ``/metrics``: memory, caches and models, read at scrape time; the job
queue's families, built from what the queue read for a scrape."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily

from ragd.ops.cache import ByteLRUCache
from ragd.ops.memory import MemoryManager, ModelCache, read_process_memory
from ragd.ops.metrics import Metrics, gauge, labelled_counter, labelled_gauge


class LiveRuntime(Protocol):
    """What the live metrics read of the model runtime (``ragd.models.runtime.ModelRuntime``):
    a Protocol, so that ops/ never imports models/ (which builds on ops/)."""

    @property
    def query_cache(self) -> ByteLRUCache[Any, Any]: ...

    @property
    def keyword_cache(self) -> ByteLRUCache[Any, Any]: ...

    @property
    def registry(self) -> ModelCache: ...


def install_live_metrics(metrics: Metrics, *, runtime: LiveRuntime, memory: MemoryManager) -> None:
    """Expose process memory, thresholds, cache and model state as Prometheus families."""

    def memory_families() -> Iterator[Any]:
        sample = read_process_memory()
        yield gauge("ragd_memory_rss_bytes", "Resident set size of this process.", sample.rss)
        yield gauge("ragd_memory_vms_bytes", "Virtual memory size of this process.", sample.vms)
        yield gauge("ragd_memory_percent", "RSS as a percentage of system memory.",
                    sample.percent)
        yield gauge("ragd_memory_soft_limit_bytes", "Soft cleanup threshold.", memory.soft_bytes)
        yield gauge("ragd_memory_emergency_limit_bytes", "Emergency cleanup threshold.",
                    memory.emergency_bytes)
        levels: dict[str, float] = {"soft": 0, "emergency": 0}
        for event in memory.events:
            levels[event.level] = levels.get(event.level, 0) + 1
        yield labelled_counter("ragd_memory_cleanups", "Cleanups in the recent history.",
                               "level", levels)

    def cache_families() -> Iterator[Any]:
        stats = [cache.stats() for cache in (runtime.query_cache, runtime.keyword_cache)]
        yield labelled_counter("ragd_cache_hits", "Cache hits.", "cache",
                               {s.name: s.hits for s in stats})
        yield labelled_counter("ragd_cache_misses", "Cache misses.", "cache",
                               {s.name: s.misses for s in stats})
        yield labelled_counter("ragd_cache_evictions", "Cache evictions.", "cache",
                               {s.name: s.evictions for s in stats})
        yield labelled_gauge("ragd_cache_bytes", "Bytes held by each cache.", "cache",
                             {s.name: s.bytes for s in stats})
        yield labelled_gauge("ragd_cache_entries", "Entries in each cache.", "cache",
                             {s.name: s.entries for s in stats})

    def model_families() -> Iterator[Any]:
        stats = runtime.registry.stats()
        yield labelled_gauge("ragd_model_loaded", "1 when the model is loaded.", "model",
                             {s.name: float(s.state == "loaded") for s in stats})
        yield labelled_gauge("ragd_model_in_flight", "Calls running on the model.", "model",
                             {s.name: s.in_flight for s in stats})
        yield labelled_gauge("ragd_model_rss_delta_bytes", "RSS growth measured at load.",
                             "model", {s.name: s.rss_delta_bytes or 0 for s in stats})

    metrics.add_live_source(memory_families)
    metrics.add_live_source(cache_families)
    metrics.add_live_source(model_families)


def queue_families(
    jobs: Mapping[tuple[str, str], int], *, kinds: Iterable[str], stuck: int, capped: bool
) -> list[Any]:
    """The job queue's depth as read from the database for one scrape: jobs by status
    (``queued``, ``running``) and kind, with a zero sample for each known ``kinds`` so a
    drained queue reads 0 rather than vanishing; jobs running past their lease; whether a
    status was counted only up to the queue's bound."""
    depth = GaugeMetricFamily(
        "ragd_jobs", "Jobs waiting (queued) and being worked on (running), from the database.",
        labels=["status", "kind"],
    )
    values = {(status, kind): 0 for status in ("queued", "running") for kind in kinds}
    values.update(jobs)
    for (status, kind), count in sorted(values.items()):
        depth.add_metric([status, kind], count)
    return [
        depth,
        gauge("ragd_jobs_stuck", "Jobs running past their lease (worker dead or stalled).",
              stuck),
        gauge("ragd_jobs_depth_capped",
              "1 when a status had more jobs than a scrape counts (its figure is a floor).",
              float(capped)),
    ]
