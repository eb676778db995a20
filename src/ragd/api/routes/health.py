"""Liveness and readiness probes: unauthenticated, cheap, no secrets."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ragd.api.deps import DatabaseDep
from ragd.api.errors import error_response
from ragd.api.routing import ApiRoute
from ragd.db import migrate

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/health", tags=["health"], route_class=ApiRoute)


@router.get("/live")
async def live() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(db: DatabaseDep) -> dict[str, Any] | JSONResponse:
    """The database answers and its schema is at the revision this build expects."""
    try:
        revision = await migrate.current_revision(db)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        logger.warning("readiness: database unreachable", extra={"error": type(exc).__name__})
        revision = None
        database = "failed"
    else:
        database = "ok"
    migrations = "ok" if revision == migrate.HEAD_REVISION else "pending"
    if database != "ok" or migrations != "ok":
        problem = "database unreachable" if database != "ok" else "migrations pending"
        return error_response(
            503,
            "not_ready",
            problem,
            details=[
                {"check": "database", "status": database},
                {"check": "migrations", "status": migrations},
            ],
        )
    return {"status": "ready", "checks": {"database": database, "migrations": migrations}}
