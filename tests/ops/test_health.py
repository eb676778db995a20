"""The health rule (``ops/health.py``): which figures make a process degraded or critical,
and that every status other than ok carries its reasons."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ragd.ops.health import Assessment, Provider, assess, worst

MB = 2**20
FALLBACK = Provider("extractive", "extractive", breaker_open=False, failing=False)


def _assess(**overrides: Any) -> Assessment:
    figures: dict[str, Any] = {
        "database_error": None, "rss": 100 * MB, "soft_limit": 1000 * MB,
        "emergency_limit": 2000 * MB, "failed_models": [], "providers": [FALLBACK],
        "stuck_jobs": 0, "stuck_for_seconds": None, "uptime_seconds": 12.0,
    }
    figures.update(overrides)
    return assess(**figures)


def _codes(found: Assessment) -> list[tuple[str, str | None]]:
    return [(reason.code, reason.subject) for reason in found.reasons]


def test_all_well_is_ok_with_no_reasons() -> None:
    found = _assess()
    assert found.status == "ok" and found.reasons == []
    assert [(c.name, c.status) for c in found.checks] == [
        ("database", "ok"), ("memory", "ok"), ("models", "ok"), ("llm", "ok"), ("jobs", "ok"),
        ("uptime", "ok"),
    ]


def test_memory_at_the_soft_and_at_the_emergency_limit() -> None:
    soft = _assess(rss=1000 * MB)
    assert (soft.status, _codes(soft)) == ("degraded", [("memory_above_soft_limit", None)])
    assert "1000 MB" in soft.reasons[0].message
    assert _assess(rss=1000 * MB - 1).status == "ok"
    emergency = _assess(rss=2000 * MB)
    assert (emergency.status, _codes(emergency)) == (
        "critical", [("memory_above_emergency", None)]
    )


def test_every_language_model_down_and_each_open_breaker() -> None:
    a_fails = Provider("a", "openai", breaker_open=False, failing=True)
    b_open = Provider("b", "anthropic", breaker_open=True, failing=True)
    b_fine = Provider("b", "anthropic", breaker_open=False, failing=False)
    # One failing provider among healthy ones: answers still come from a model.
    assert _assess(providers=[a_fails, b_fine, FALLBACK]).status == "ok"
    # One open breaker: degraded, naming it.
    one_open = _assess(providers=[b_open, Provider("c", "openai", False, False), FALLBACK])
    assert (one_open.status, _codes(one_open)) == ("degraded", [("llm_breaker_open", "b")])
    # Every configured one failing or open.
    down = _assess(providers=[a_fails, b_open, FALLBACK])
    assert down.status == "degraded"
    assert _codes(down) == [("llm_providers_down", None), ("llm_breaker_open", "b")]
    assert "a, b" in down.reasons[0].message and "extractive" in down.reasons[0].message
    # The extractive fallback alone is not "every provider down": none is configured.
    assert _assess(providers=[FALLBACK]).status == "ok"


def test_stuck_jobs_failed_models_and_an_unreachable_database() -> None:
    stuck = _assess(stuck_jobs=2, stuck_for_seconds=95.4)
    assert (stuck.status, _codes(stuck)) == ("degraded", [("jobs_stuck", None)])
    assert "2 job(s)" in stuck.reasons[0].message and "95 s ago" in stuck.reasons[0].message
    models = _assess(failed_models=["embedder", "keywords"])
    assert _codes(models) == [("model_failed", "embedder"), ("model_failed", "keywords")]
    db = _assess(database_error="OperationalError", stuck_jobs=1)
    assert db.status == "critical"
    assert _codes(db) == [("database_unreachable", None), ("jobs_stuck", None)]


_providers = st.lists(
    st.builds(Provider, name=st.sampled_from(["a", "b", "c"]),
              kind=st.sampled_from(["openai", "anthropic", "extractive"]),
              breaker_open=st.booleans(), failing=st.booleans()),
    max_size=4,
)


@given(
    rss=st.integers(0, 3000), failed=st.lists(st.sampled_from(["embedder", "keywords"])),
    providers=_providers, stuck=st.integers(0, 3), database=st.sampled_from([None, "Error"]),
)
def test_the_status_is_the_worst_reason_and_ok_means_no_reason(
    rss: int, failed: list[str], providers: list[Provider], stuck: int, database: str | None
) -> None:
    found = _assess(rss=rss * MB, failed_models=failed, providers=providers, stuck_jobs=stuck,
                    stuck_for_seconds=1.0 if stuck else None, database_error=database)
    assert found.status == worst([reason.status for reason in found.reasons])
    assert found.status == worst([check.status for check in found.checks])
    assert (found.status == "ok") == (found.reasons == [])
    assert all(reason.message for reason in found.reasons)
