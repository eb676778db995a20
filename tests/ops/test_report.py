"""Optimisation report rules over plain snapshots."""

from __future__ import annotations

from typing import Any

from ragd.ops.report import build_report

MB = 2**20
NOW = 1_000_000.0


def _memory(rss_mb: float, caches: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "sample": {"rss": rss_mb * MB},
        "thresholds": {"soft_bytes": 1536 * MB, "emergency_bytes": 2048 * MB},
        "caches": caches or [],
    }


def _ids(report: dict[str, Any]) -> list[str]:
    return [rec["id"] for rec in report["recommendations"]]


def test_quiet_system_has_no_recommendations() -> None:
    report = build_report(memory=_memory(100), models=[], now=NOW, uptime_seconds=5)
    assert report["status"] == "ok" and report["recommendations"] == []


def test_memory_levels() -> None:
    near = build_report(memory=_memory(1300), models=[], now=NOW, uptime_seconds=1)
    assert _ids(near) == ["memory-near-soft"]
    assert "85 %" in near["recommendations"][0]["title"]
    assert near["recommendations"][0]["evidence"]["rss_mb"] == 1300
    soft = build_report(memory=_memory(1600), models=[], now=NOW, uptime_seconds=1)
    assert _ids(soft) == ["memory-soft"] and soft["status"] == "attention"
    hard = build_report(memory=_memory(2100), models=[], now=NOW, uptime_seconds=1)
    assert _ids(hard) == ["memory-emergency"] and hard["status"] == "critical"


def test_idle_model_and_failed_model_and_slow_embedder() -> None:
    models = [
        {"name": "reranker", "kind": "reranker", "state": "loaded",
         "last_used_at": NOW - 3 * 3600, "idle_ttl": 6 * 3600, "rss_delta_bytes": 80 * MB},
        {"name": "embedder", "kind": "embedder", "state": "loaded", "last_used_at": NOW - 5,
         "idle_ttl": 1800, "p95_ms": 900.0, "variant": "fp32-fallback"},
        {"name": "broken", "kind": "reranker", "state": "failed", "last_error": "no model.onnx"},
        {"name": "cold", "kind": "embedder", "state": "not_loaded"},
    ]
    report = build_report(memory=_memory(100), models=models, now=NOW, uptime_seconds=1)
    assert _ids(report) == ["model-failed-broken", "embed-slow-embedder", "model-idle-reranker"]
    idle = report["recommendations"][2]
    assert idle["title"] == "reranker idle 3.0 h: lower its TTL"
    assert idle["evidence"]["rss_delta_mb"] == 80
    assert "quantised" in report["recommendations"][1]["title"]


def test_cache_rules_need_enough_lookups() -> None:
    caches = [
        {"name": "query", "hits": 1, "misses": 500, "evictions": 0, "bytes": 10},
        {"name": "keywords", "hits": 50, "misses": 200, "evictions": 180, "max_bytes": 100},
        {"name": "young", "hits": 0, "misses": 10, "evictions": 0},
    ]
    report = build_report(memory=_memory(100, caches), models=[], now=NOW, uptime_seconds=1)
    assert _ids(report) == ["cache-cold-query", "cache-small-keywords"]
