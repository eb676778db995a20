"""Liveness and readiness probes: unauthenticated, cheap, no secrets."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ragd.api.deps import SchemaGateDep
from ragd.api.errors import error_response
from ragd.api.routing import ApiRoute
from ragd.db import migrate

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/health", tags=["health"], route_class=ApiRoute)


@router.get("/live")
async def live() -> dict[str, str]:
    """The process is up and serving HTTP."""
    return {"status": "ok"}


#: The migrations check: the recorded revision is this build's head, behind it, or ahead.
_MIGRATIONS = {"current": "ok", "behind": "pending", "ahead": "ahead"}


@router.get("/ready", response_model=None)
async def ready(schema: SchemaGateDep) -> dict[str, Any] | JSONResponse:
    """The database answers, its schema is at the revision this build expects, and the
    start-up work that waited for it (a replica started before ``ragd db upgrade``) is done.

    Each probe reads the revision (one small query). A probe that finds the schema at head
    before the process has noticed asks it to look now, so it turns ready without waiting
    for its next periodic check.
    """
    try:
        revision = await schema.revision()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        logger.warning("readiness: database unreachable", extra={"error": type(exc).__name__})
        revision = None
        database = "failed"
    else:
        database = "ok"
    migrations = _MIGRATIONS[migrate.status_of(revision)]
    startup = "ok" if schema.ready else "pending"
    if migrations == "ok" and startup != "ok":
        schema.poke()
    checks = {"database": database, "migrations": migrations, "startup": startup}
    if any(status != "ok" for status in checks.values()):
        if database != "ok":
            problem = "database unreachable"
        elif migrations == "ahead":
            problem = "the database schema is newer than this server"
        elif migrations != "ok":
            problem = "migrations pending"
        else:
            problem = "starting"
        return error_response(
            503,
            "not_ready",
            problem,
            details=[{"check": check, "status": status} for check, status in checks.items()],
        )
    return {"status": "ready", "checks": checks}
