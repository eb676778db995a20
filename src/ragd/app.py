"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ragd import __version__
from ragd.api.console import install_console
from ragd.api.docs import install_api_docs
from ragd.api.errors import install_error_handlers
from ragd.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from ragd.api.openapi import install_openapi
from ragd.api.routes import (
    admin,
    auth,
    chat,
    collections,
    documents,
    health,
    jobs,
    keywords,
    openai_compat,
    performance,
    search,
    session,
    tenant,
)
from ragd.container import Services, StartupMetrics, background, open_services
from ragd.settings import Settings

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
#: Multipart framing and form fields around an uploaded file.
UPLOAD_OVERHEAD_BYTES = 1024 * 1024


StartupHook = Callable[[Services], Awaitable[None]]


def create_app(
    settings: Settings,
    *,
    startup: StartupMetrics | None = None,
    on_startup: StartupHook | None = None,
) -> FastAPI:
    """Build the ASGI app. Nothing stateful is created until the lifespan starts.

    ``on_startup`` runs once the services exist and before requests are served (the CLI
    uses it to bootstrap the first admin and print how to log in); while the database schema
    is behind (``database.migrate_on_start`` off), once it is at head.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings, startup=startup) as services, background(services):
            app.state.services = services
            if on_startup is not None:
                # Before requests are served; or, while the schema is behind (a replica
                # started before `ragd db upgrade`), once it is at head.
                hook = on_startup
                await services.schema.then(lambda: hook(services))
            services.startup.phase("app_ready")
            logger.info(
                "ragd ready" if services.schema.ready else "ragd waiting for the database schema",
                extra={
                    "env": settings.env,
                    "startup_seconds": services.startup.total,
                    "migrated": services.migrations_applied,
                },
            )
            yield
        logger.info("ragd stopped")

    docs = settings.serves_api_docs
    app = FastAPI(
        title="ragd",
        version=__version__,
        summary="Multi-tenant retrieval-augmented generation backend",
        lifespan=lifespan,
        docs_url=None,  # served from local files by install_api_docs
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    install_error_handlers(app)
    install_openapi(app, settings)
    upload_limit = settings.ingestion.max_upload_bytes + UPLOAD_OVERHEAD_BYTES
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        overrides={f"{API_PREFIX}/documents": upload_limit},
    )
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    app.include_router(performance.router)
    app.include_router(performance.metrics_router)
    routers = (auth, session, tenant, admin, keywords, collections, documents, jobs, search, chat)
    for module in routers:
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(openai_compat.router, prefix="/v1")
    install_api_docs(app, settings)
    install_console(app, settings)
    return app
