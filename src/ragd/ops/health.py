"""The one rule for "how is this process doing": checks and machine-readable reasons.

:func:`assess` is pure: the HTTP layer gathers the figures (a database ping, the RSS sample,
the model registry, the LLM router's provider status, the job queue's stuck jobs) and this
module decides. A status is ``ok`` unless a reason says otherwise; every reason that is not
``ok`` names itself with a stable ``code`` (for alerting rules) and a human ``message``
(with the figures behind it), and ``subject`` when it is about one model or provider.

Reasons, by code:

==============================  ==========  ============================================
code                            status      when
==============================  ==========  ============================================
``database_unreachable``        critical    the database did not answer a ping
``memory_above_emergency``      critical    RSS at or above the emergency limit
``memory_above_soft_limit``     degraded    RSS at or above the soft limit
``model_failed``                degraded    a model's last load failed (one per model)
``llm_providers_down``          degraded    every configured language-model provider is
                                            failing or has its breaker open: answers come
                                            from the extractive fallback
``llm_breaker_open``            degraded    a provider's breaker is open (one per provider)
``jobs_stuck``                  degraded    jobs running past their lease (their worker
                                            died or stalled and none has reclaimed them)
==============================  ==========  ============================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Assessment", "Check", "Provider", "Reason", "Status", "assess", "worst"]

Status = Literal["ok", "degraded", "critical"]
_RANK: dict[Status, int] = {"ok": 0, "degraded": 1, "critical": 2}
MIB = 2**20


@dataclass(frozen=True, slots=True)
class Reason:
    """Why the status is not ``ok``."""

    code: str
    status: Status
    message: str
    subject: str | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """One named check: its status and the figures behind it."""

    name: str
    status: Status
    detail: str


@dataclass(frozen=True, slots=True)
class Provider:
    """An LLM provider of the chain as health sees it (``kind`` ``extractive`` is the local
    fallback: never down, and not a configured language model)."""

    name: str
    kind: str
    breaker_open: bool
    failing: bool


@dataclass(frozen=True, slots=True)
class Assessment:
    status: Status
    checks: list[Check] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)


def worst(statuses: Sequence[Status]) -> Status:
    """The most severe of ``statuses`` (``ok`` for none)."""
    return max(statuses, key=_RANK.__getitem__, default="ok")


def assess(
    *,
    database_error: str | None,
    rss: int,
    soft_limit: int,
    emergency_limit: int,
    failed_models: Sequence[str],
    providers: Sequence[Provider],
    stuck_jobs: int,
    stuck_for_seconds: float | None,
    uptime_seconds: float,
) -> Assessment:
    """Checks (database, memory, models, llm, jobs, uptime) and the reasons behind them."""
    checks: list[Check] = []
    reasons: list[Reason] = []

    if database_error is None:
        checks.append(Check("database", "ok", "reachable"))
    else:
        checks.append(Check("database", "critical", database_error))
        reasons.append(Reason("database_unreachable", "critical",
                              f"the database did not answer ({database_error})"))

    figures = (f"rss {rss / MIB:.0f} MB; soft {soft_limit / MIB:.0f} MB, "
               f"emergency {emergency_limit / MIB:.0f} MB")
    if rss >= emergency_limit:
        checks.append(Check("memory", "critical", figures))
        reasons.append(Reason(
            "memory_above_emergency", "critical",
            f"RSS {rss / MIB:.0f} MB is at or above the emergency limit "
            f"({emergency_limit / MIB:.0f} MB)",
        ))
    elif rss >= soft_limit:
        checks.append(Check("memory", "degraded", figures))
        reasons.append(Reason(
            "memory_above_soft_limit", "degraded",
            f"RSS {rss / MIB:.0f} MB is at or above the soft limit ({soft_limit / MIB:.0f} MB)",
        ))
    else:
        checks.append(Check("memory", "ok", figures))

    checks.append(Check(
        "models", "degraded" if failed_models else "ok",
        f"failed: {', '.join(failed_models)}" if failed_models else "no failed models",
    ))
    reasons.extend(
        Reason("model_failed", "degraded", f"model {name} failed to load", subject=name)
        for name in failed_models
    )

    models = [p for p in providers if p.kind != "extractive"]
    down = [p.name for p in models if p.breaker_open or p.failing]
    opened = [p.name for p in models if p.breaker_open]
    if models and len(down) == len(models):
        reasons.append(Reason(
            "llm_providers_down", "degraded",
            f"every configured LLM provider is failing or has its breaker open "
            f"({', '.join(down)}): answers come from the extractive fallback",
        ))
    reasons.extend(
        Reason("llm_breaker_open", "degraded",
               f"the circuit breaker of LLM provider {name} is open", subject=name)
        for name in opened
    )
    if not models:
        llm_detail = "no language-model provider configured (extractive answers only)"
    elif down:
        llm_detail = f"failing or open: {', '.join(down)} of {len(models)}"
    else:
        llm_detail = f"{len(models)} provider(s), none failing"
    llm_status: Status = "degraded" if opened or (models and len(down) == len(models)) else "ok"
    checks.append(Check("llm", llm_status, llm_detail))

    if stuck_jobs:
        since = "" if stuck_for_seconds is None else (
            f", the oldest lease expired {stuck_for_seconds:.0f} s ago"
        )
        checks.append(Check("jobs", "degraded", f"{stuck_jobs} running past their lease"))
        reasons.append(Reason(
            "jobs_stuck", "degraded",
            f"{stuck_jobs} job(s) running past their lease{since}: their worker died or "
            f"stalled and no worker has reclaimed them (is a worker running?)",
        ))
    else:
        checks.append(Check("jobs", "ok", "none running past its lease"))

    checks.append(Check("uptime", "ok", f"{uptime_seconds:.0f} s"))
    return Assessment(status=worst([c.status for c in checks]), checks=checks, reasons=reasons)
