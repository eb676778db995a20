"""The optimisation report: recommendations derived from live figures, each with evidence.

A pure function over snapshots, so every rule is testable with plain data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "critical"]

#: A loaded model unused for this long, with a longer idle TTL, is worth unloading sooner.
IDLE_HINT_SECONDS = 3600.0
#: RSS at this fraction of the soft threshold deserves a warning before cleanups start.
RSS_WARN_FRACTION = 0.8
#: Embedding batches slower than this at p95 suggest the quantised model or smaller batches.
SLOW_EMBED_P95_MS = 250.0
#: A cache with at least this many lookups and a hit rate below the floor is not earning its RAM.
CACHE_MIN_LOOKUPS = 200
CACHE_HIT_FLOOR = 0.05


@dataclass(frozen=True, slots=True)
class Recommendation:
    id: str
    severity: Severity
    title: str
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)


def build_report(
    *,
    memory: dict[str, Any],
    models: list[dict[str, Any]],
    now: float,
    uptime_seconds: float,
) -> dict[str, Any]:
    """Recommendations (most severe first) from a memory snapshot and model stats.

    ``memory`` is :meth:`ragd.ops.memory.MemoryManager.snapshot`; ``models`` are the registry's
    stats as dicts; ``now`` is wall-clock time (``time.time()``).
    """
    found: list[Recommendation] = []
    found += _memory_rules(memory)
    found += _model_rules(models, now)
    found += _cache_rules(memory.get("caches", []))
    order = {"critical": 0, "warning": 1, "info": 2}
    found.sort(key=lambda rec: (order[rec.severity], rec.id))
    status = "ok"
    if any(rec.severity == "critical" for rec in found):
        status = "critical"
    elif any(rec.severity == "warning" for rec in found):
        status = "attention"
    return {
        "status": status,
        "generated_at": now,
        "uptime_seconds": round(uptime_seconds, 1),
        "recommendations": [asdict(rec) for rec in found],
    }


def _mb(value: float) -> float:
    return round(value / 2**20, 1)


def _memory_rules(memory: dict[str, Any]) -> list[Recommendation]:
    sample = memory.get("sample") or {}
    thresholds = memory.get("thresholds") or {}
    rss = float(sample.get("rss", 0))
    soft = float(thresholds.get("soft_bytes", 0))
    emergency = float(thresholds.get("emergency_bytes", 0))
    if not rss or not soft:
        return []
    evidence = {"rss_mb": _mb(rss), "soft_mb": _mb(soft), "emergency_mb": _mb(emergency)}
    if emergency and rss >= emergency:
        return [Recommendation(
            "memory-emergency", "critical", "RSS is above the emergency threshold",
            "Every model and cache is being dropped to recover. Reduce model count, batch sizes "
            "or cache budgets, or raise memory.emergency_limit_mb if the host has room.",
            evidence,
        )]
    if rss >= soft:
        return [Recommendation(
            "memory-soft", "warning", "RSS is above the soft threshold",
            "Idle models are unloaded and caches trimmed at every check. Lower model idle TTLs "
            "or cache budgets.",
            evidence,
        )]
    if rss >= RSS_WARN_FRACTION * soft:
        share = round(100 * rss / soft)
        return [Recommendation(
            "memory-near-soft", "info", f"RSS is at {share} % of the soft threshold",
            "Cleanups start at the soft threshold; consider shorter idle TTLs for rarely used "
            "models.",
            evidence,
        )]
    return []


def _model_rules(models: list[dict[str, Any]], now: float) -> list[Recommendation]:
    found: list[Recommendation] = []
    for model in models:
        name = str(model.get("name"))
        state = model.get("state")
        if state == "failed":
            found.append(Recommendation(
                f"model-failed-{name}", "critical", f"Model {name} failed to load",
                "Requests needing it fail until a retry succeeds; check its configuration.",
                {"last_error": model.get("last_error"), "failures": model.get("failures"),
                 "next_retry_at": model.get("next_retry_at")},
            ))
            continue
        if state != "loaded":
            continue
        last_used = model.get("last_used_at")
        ttl = float(model.get("idle_ttl") or 0)
        if last_used is not None:
            idle = now - float(last_used)
            if idle >= IDLE_HINT_SECONDS and (ttl == 0 or ttl > idle):
                hours = round(idle / 3600, 1)
                found.append(Recommendation(
                    f"model-idle-{name}", "info", f"{name} idle {hours} h: lower its TTL",
                    "It stays in memory until its idle TTL passes; a shorter TTL frees its RAM "
                    "sooner, at the cost of a reload on next use.",
                    {"idle_seconds": round(idle), "idle_ttl_seconds": ttl,
                     "rss_delta_mb": _mb(float(model.get("rss_delta_bytes") or 0))},
                ))
        p95 = model.get("p95_ms")
        if model.get("kind") == "embedder" and p95 is not None and float(p95) > SLOW_EMBED_P95_MS:
            variant = str(model.get("variant") or "")
            hint = (
                "enable the quantised model (models.quantize=true)"
                if "fp32" in variant
                else "lower models.max_batch or models.max_tokens"
            )
            found.append(Recommendation(
                f"embed-slow-{name}", "warning", f"Embedding p95 is high: {hint}",
                "Slow embedding batches delay ingestion and every query.",
                {"p95_ms": round(float(p95), 1), "variant": variant or None},
            ))
    return found


def _cache_rules(caches: list[dict[str, Any]]) -> list[Recommendation]:
    found: list[Recommendation] = []
    for cache in caches:
        hits, misses = int(cache.get("hits", 0)), int(cache.get("misses", 0))
        lookups = hits + misses
        name = str(cache.get("name"))
        if lookups >= CACHE_MIN_LOOKUPS and hits / lookups < CACHE_HIT_FLOOR:
            found.append(Recommendation(
                f"cache-cold-{name}", "info", f"Cache {name} rarely hits",
                "It holds memory without saving work; shrink or disable it.",
                {"hits": hits, "misses": misses, "bytes": cache.get("bytes")},
            ))
        evictions = int(cache.get("evictions", 0))
        if lookups >= CACHE_MIN_LOOKUPS and evictions > hits and hits / lookups >= CACHE_HIT_FLOOR:
            found.append(Recommendation(
                f"cache-small-{name}", "info", f"Cache {name} evicts more than it serves",
                "A larger budget would keep more useful entries.",
                {"hits": hits, "evictions": evictions, "max_bytes": cache.get("max_bytes")},
            ))
    return found
