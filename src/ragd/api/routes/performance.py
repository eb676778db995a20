"""``/performance/*``: health, memory, models, LLM providers, startup and the optimisation
report (paths kept from the backend ragd replaces), plus ``/metrics`` for Prometheus.

``/performance/health`` is public. The other GETs need a platform admin unless
``RAGD_PUBLIC_PERFORMANCE=true``; the cleanup POSTs always need a platform admin.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from ragd import __version__
from ragd.api.deps import (
    ApiKeyCredential,
    AuthServiceDep,
    BearerCredential,
    DatabaseDep,
    LlmRouterDep,
    MemoryDep,
    MetricsDep,
    PlatformAdmin,
    QueueMonitorDep,
    RuntimeDep,
    SettingsDep,
    StartupDep,
    get_principal,
    require_platform_admin,
)
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.fields import Input
from ragd.api.routing import ApiRoute
from ragd.auth.principal import Principal
from ragd.container import StartupMetrics
from ragd.errors import AuthenticationFailed, InvalidInput, Unavailable
from ragd.generation.router import Router
from ragd.jobs.queue import Stuck
from ragd.models.registry import UnloadResult
from ragd.models.runtime import ModelRuntime
from ragd.ops.health import Provider, Status, assess
from ragd.ops.memory import read_process_memory
from ragd.ops.metrics import CONTENT_TYPE
from ragd.ops.report import build_report
from ragd.ops.telemetry import queue_families
from ragd.stores.catalog import DELETE_COLLECTION_JOB, INGEST_JOB

logger = logging.getLogger(__name__)
router = APIRouter(
    prefix="/performance", tags=["performance"], responses=ERROR_RESPONSES, route_class=ApiRoute
)
metrics_router = APIRouter(tags=["performance"], responses=ERROR_RESPONSES, route_class=ApiRoute)



async def performance_reader(
    settings: SettingsDep, auth: AuthServiceDep, metrics: MetricsDep,
    bearer: BearerCredential, api_key: ApiKeyCredential,
) -> Principal | None:
    """A platform admin, or anyone when ``public_performance`` is on."""
    if settings.public_performance:
        return None
    return await require_platform_admin(await get_principal(auth, metrics, bearer, api_key))


Reader = Annotated[Principal | None, Depends(performance_reader)]


async def sees_details(
    settings: SettingsDep, auth: AuthServiceDep, metrics: MetricsDep,
    bearer: BearerCredential, api_key: ApiKeyCredential,
) -> bool:
    """Whether this caller may see figures: a platform admin, or everyone when
    ``public_performance`` is on. Missing or bad credentials just mean "no"."""
    if settings.public_performance:
        return True
    if not (bearer or api_key):
        return False
    try:
        principal = await get_principal(auth, metrics, bearer, api_key)
    except (AuthenticationFailed, Unavailable):
        return False
    return principal.is_superuser


Details = Annotated[bool, Depends(sees_details)]
#: The job kinds ragd runs (a zero sample each when none is queued or running).
JOB_KINDS = (INGEST_JOB, DELETE_COLLECTION_JOB)


# -- schemas ------------------------------------------------------------------------------


class Check(BaseModel):
    name: str = Field(description="database, memory, models, llm, jobs or uptime.")
    status: Status
    detail: str | None = Field(
        default=None, description="Figures behind the status (platform admins only)."
    )


class HealthReason(BaseModel):
    """Why the status is not ``ok``: one entry per cause."""

    code: str = Field(description=(
        "Stable and machine-readable: database_unreachable, memory_above_emergency "
        "(critical); memory_above_soft_limit, model_failed, llm_providers_down (every "
        "configured LLM provider failing or open: answers come from the extractive "
        "fallback), llm_breaker_open, jobs_stuck (jobs running past their lease) "
        "(degraded)."
    ))
    status: Status
    message: str | None = Field(
        default=None, description="What happened, with its figures (platform admins only)."
    )
    subject: str | None = Field(
        default=None, description="The model or provider concerned (platform admins only)."
    )


class HealthOut(BaseModel):
    """Anyone sees the overall status, each check's status and the reasons' codes; the
    figures (memory, limits, version, uptime, providers, the reasons' messages) need a
    platform admin or ``RAGD_PUBLIC_PERFORMANCE``."""

    status: Status
    checks: list[Check]
    reasons: list[HealthReason] = Field(
        description="Empty when the status is ok; otherwise each cause of it."
    )
    version: str | None = None
    uptime_seconds: float | None = None
    pid: int | None = Field(
        default=None, description="The server process that answered (`ragd serve --workers N` "
        "runs N of them; the figures are that process's own)."
    )
    llm_providers: list[dict[str, Any]] | None = Field(
        default=None, description="The LLM provider chain: name, type, status."
    )


class ModelOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    kind: str
    state: Literal["not_loaded", "loading", "loaded", "failed"]
    load_seconds: float | None
    loaded_at: float | None
    last_used_at: float | None
    use_count: int
    rss_delta_bytes: int | None
    idle_ttl: float
    last_error: str | None
    next_retry_at: float | None
    p50_ms: float | None
    p95_ms: float | None


class ModelsOut(BaseModel):
    models: list[ModelOut]
    embedder: dict[str, Any]
    reranker: str = Field(description='"none" when no cross-encoder is configured.')


class LlmProvider(BaseModel):
    name: str
    type: str
    model: str
    status: Literal["configured", "healthy", "degraded", "open"]
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    calls: int = 0
    successes: int = 0
    errors: dict[str, int] = Field(default_factory=dict)
    last_error: dict[str, str] | None = None
    last_success_at: str | None = None
    breaker: dict[str, Any] = Field(default_factory=dict)


class LlmProvidersOut(BaseModel):
    providers: list[LlmProvider]


class StartupOut(BaseModel):
    started_at: float
    phases: dict[str, float] = Field(description="Seconds spent in each phase, in order.")
    total_seconds: float
    uptime_seconds: float


class MemoryCleanupIn(Input):
    emergency: bool = False


class ModelsCleanupIn(Input):
    names: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, max_length=32, description="Models to unload; all when omitted."
    )


class UnloadOut(BaseModel):
    name: str
    unloaded: bool
    detail: str
    freed_bytes: int
    seconds: float


class ModelsCleanupOut(BaseModel):
    results: list[UnloadOut]
    freed_bytes: int


# -- helpers -------------------------------------------------------------------------------


def _uptime(startup: StartupMetrics) -> float:
    return round(time.time() - startup.started_at, 3)


def _model_dicts(runtime: ModelRuntime) -> list[dict[str, Any]]:
    info = runtime.embedder_info
    models = []
    for stats in runtime.registry.stats():
        data = asdict(stats)
        if stats.kind == "embedder" and info is not None:
            data["variant"] = info.variant
            data["dimension"] = info.dimension
        models.append(data)
    return models


def _unload_out(result: UnloadResult) -> UnloadOut:
    return UnloadOut(name=result.name, unloaded=result.unloaded, detail=result.detail,
                     freed_bytes=result.freed_bytes, seconds=round(result.seconds, 4))


# -- routes ---------------------------------------------------------------------------------


@router.get(
    "/health", response_model_exclude_none=True,
    # Credentials are optional here: they only add the figures.
    openapi_extra={"security": [{}, {"HTTPBearer": []}, {"APIKeyHeader": []}]},
)
async def health(
    db: DatabaseDep, memory: MemoryDep, runtime: RuntimeDep, startup: StartupDep,
    llm_router: LlmRouterDep, queue: QueueMonitorDep, details: Details,
) -> HealthOut:
    """Overall status with its checks and the reasons behind a status that is not ok
    (``ops/health.py`` decides). Public and cheap (a ping and one small read of the running
    jobs); the figures behind it only for platform admins (an anonymous caller learns
    nothing an attacker could size up)."""
    database_error: str | None = None
    stuck = Stuck(jobs=0, for_seconds=None)
    try:
        await db.ping()
        stuck = await queue.stuck()
    except Exception as exc:  # noqa: BLE001 - any failure is a critical check
        database_error = type(exc).__name__
    sample = memory.latest or read_process_memory()
    statuses = llm_router.status()
    found = assess(
        database_error=database_error, rss=sample.rss, soft_limit=memory.soft_bytes,
        emergency_limit=memory.emergency_bytes,
        failed_models=[s.name for s in runtime.registry.stats() if s.state == "failed"],
        providers=[
            Provider(name=p.name, kind=p.kind, breaker_open=p.state == "open",
                     failing=p.failing)
            for p in statuses
        ],
        stuck_jobs=stuck.jobs, stuck_for_seconds=stuck.for_seconds,
        uptime_seconds=_uptime(startup),
    )
    if not details:
        codes = dict.fromkeys((r.code, r.status) for r in found.reasons)
        return HealthOut(
            status=found.status,
            checks=[Check(name=c.name, status=c.status) for c in found.checks],
            reasons=[HealthReason(code=code, status=status) for code, status in codes],
        )
    return HealthOut(
        status=found.status, version=__version__, uptime_seconds=_uptime(startup),
        pid=os.getpid(),
        checks=[Check(name=c.name, status=c.status, detail=c.detail) for c in found.checks],
        reasons=[HealthReason(code=r.code, status=r.status, message=r.message,
                              subject=r.subject)
                 for r in found.reasons],
        llm_providers=[{"name": p.name, "type": p.kind, "status": p.state} for p in statuses],
    )


@router.get("/memory")
async def memory(memory: MemoryDep, _: Reader) -> dict[str, Any]:
    """RSS/VMS/percent, thresholds, caches, per-model memory and recent cleanup events."""
    return memory.snapshot()


@router.get("/models")
async def models(runtime: RuntimeDep, settings: SettingsDep, _: Reader) -> ModelsOut:
    """Every registered model with its state and figures (nothing is loaded by asking)."""
    info = runtime.embedder_info
    embedder: dict[str, Any] = {"name": runtime.embedder_name,
                                "type": settings.models.embedder}
    if info is not None:
        embedder.update(asdict(info))
    return ModelsOut(
        models=[ModelOut(**data) for data in _model_dicts(runtime)],
        embedder=embedder,
        reranker="none" if not runtime.reranker_configured else settings.models.reranker,
    )


def _llm_providers(llm_router: Router) -> list[LlmProvider]:
    return [
        LlmProvider(
            name=status.name, type=status.kind, model=status.model, status=status.state,
            latency_p50_ms=status.latency_p50_ms, latency_p95_ms=status.latency_p95_ms,
            calls=status.calls, successes=status.successes,
            errors=dict(status.errors_by_kind),
            last_error=None if status.last_error is None else asdict(status.last_error),
            last_success_at=status.last_success_at, breaker=asdict(status.breaker),
        )
        for status in llm_router.status()
    ]


@router.get("/llm-providers")
async def llm_providers(llm_router: LlmRouterDep, _: Reader) -> LlmProvidersOut:
    """Each provider of the chain in order: configured | healthy | degraded | open (breaker),
    latency p50/p95 of recent successes, calls, errors by kind, last error and success."""
    return LlmProvidersOut(providers=_llm_providers(llm_router))


@router.get("/startup-metrics")
async def startup_metrics(startup: StartupDep, _: Reader) -> StartupOut:
    return StartupOut(started_at=startup.started_at, phases=dict(startup.phases),
                      total_seconds=startup.total, uptime_seconds=_uptime(startup))


@router.get("/optimization-report")
async def optimization_report(
    memory: MemoryDep, runtime: RuntimeDep, startup: StartupDep, _: Reader
) -> dict[str, Any]:
    """Recommendations derived from the live figures, each with its evidence."""
    return build_report(
        memory=memory.snapshot(),
        models=_model_dicts(runtime),
        now=time.time(),
        uptime_seconds=_uptime(startup),
    )


@router.post("/memory/cleanup")
async def memory_cleanup(
    memory: MemoryDep, admin: PlatformAdmin, body: MemoryCleanupIn | None = None
) -> dict[str, Any]:
    """Run a soft (default) or emergency cleanup now and report what it freed."""
    level: Literal["soft", "emergency"] = (
        "emergency" if body is not None and body.emergency else "soft"
    )
    event = await memory.cleanup(level, reason=f"admin request by {admin.user_id}")
    logger.info("manual memory cleanup", extra={"level": level, "freed": event.freed_bytes})
    return event.to_dict()


@router.post("/models/cleanup")
async def models_cleanup(
    runtime: RuntimeDep, admin: PlatformAdmin, body: ModelsCleanupIn | None = None
) -> ModelsCleanupOut:
    """Unload the named models (all when no names are given); they reload on next use."""
    registry = runtime.registry
    names = body.names if body is not None and body.names is not None else None
    if names is not None:
        unknown = sorted(set(names) - set(registry.names()))
        if unknown:
            raise InvalidInput(
                f"unknown model(s): {', '.join(unknown)}; registered: "
                f"{', '.join(registry.names())}",
                code="unknown_model",
            )
        results = [await registry.unload(name, "admin") for name in dict.fromkeys(names)]
    else:
        results = await registry.unload_all("admin")
    out = [_unload_out(result) for result in results]
    return ModelsCleanupOut(results=out, freed_bytes=sum(item.freed_bytes for item in out))


@metrics_router.get(
    "/metrics", include_in_schema=True,
    responses={200: {"description": "Prometheus text format.",
                     "content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
)
async def prometheus_metrics(
    metrics: MetricsDep, queue: QueueMonitorDep, _: Reader
) -> Response:
    """Prometheus text exposition (same access rule as the other performance GETs). The job
    queue's depth is read from the database for each scrape (so every replica reports the
    same figures), counting at most a bounded number of jobs per status; the other
    families are this process's own."""
    depth = await queue.depth()
    families = queue_families(
        {(status, kind): count for (status, kind), count in depth.jobs.items()},
        kinds=JOB_KINDS, stuck=depth.stuck, capped=depth.capped,
    )
    return Response(metrics.render(families), media_type=CONTENT_TYPE)
