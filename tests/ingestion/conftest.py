"""Helpers for ingestion tests: an app with in-process workers, upload and wait helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragd.app import create_app
from ragd.settings import Settings
from tests.conftest import bearer, make_settings, register
from tests.waiting import eventually

FINISHED = ("succeeded", "failed", "cancelled")


@dataclass
class Tenant:
    """A registered tenant admin with a collection."""

    headers: dict[str, str]
    tenant_id: str
    collection_id: str


def ingest_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for ingestion tests: fast polling. The lease is long (heartbeats every 20 s):
    a loaded machine must not let a second worker reclaim a job that is still running."""
    ingestion = {"poll_interval_seconds": 0.05, "lease_seconds": 60.0}
    ingestion.update(overrides.pop("ingestion", {}))
    return make_settings(data_dir, ingestion=ingestion, **overrides)


@pytest.fixture
def ingest_app_settings(tmp_path: Path) -> Settings:
    return ingest_settings(tmp_path / "data")


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client for an app whose lifespan runs (so its worker pool is on); the app is
    reachable as ``client.app``."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://ragd.test", timeout=120
        ) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@asynccontextmanager
async def app_client(data_dir: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Like the ``ingest_client`` fixture, with settings overrides."""
    async with client_for(ingest_settings(data_dir, **overrides)) as client:
        yield client


@pytest.fixture
async def ingest_client(ingest_app_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client for an app with in-process workers (see :func:`client_for`)."""
    async with client_for(ingest_app_settings) as client:
        yield client


async def new_tenant(client: httpx.AsyncClient, collection: str = "docs") -> Tenant:
    """Register a tenant and create one collection in it."""
    body = await register(client)
    headers = bearer(body["access_token"])
    me = (await client.get("/api/v1/auth/me", headers=headers)).json()
    response = await client.post("/api/v1/collections", json={"name": collection},
                                 headers=headers)
    assert response.status_code == 201, response.text
    return Tenant(headers=headers, tenant_id=me["tenant_id"],
                  collection_id=response.json()["id"])


async def upload_file(
    client: httpx.AsyncClient, tenant: Tenant, name: str, data: bytes,
    content_type: str = "application/octet-stream", *, collection_id: str | None = None,
    metadata: str | None = None,
) -> httpx.Response:
    form: dict[str, str] = {"collection_id": collection_id or tenant.collection_id}
    if metadata is not None:
        form["metadata"] = metadata
    return await client.post(
        "/api/v1/documents", files={"file": (name, data, content_type)}, data=form,
        headers=tenant.headers,
    )


async def upload_text(
    client: httpx.AsyncClient, tenant: Tenant, title: str, text: str, **extra: Any
) -> httpx.Response:
    body = {"collection_id": tenant.collection_id, "title": title, "text": text, **extra}
    return await client.post("/api/v1/documents", json=body, headers=tenant.headers)


async def wait_job(
    client: httpx.AsyncClient, tenant: Tenant, job_id: str,
    timeout: float = 120.0,  # noqa: ASYNC109 - a hang guard, not a cancel scope
) -> dict[str, Any]:
    """Poll the job until it is finished; return its final JSON."""

    async def finished() -> dict[str, Any] | None:
        response = await client.get(f"/api/v1/jobs/{job_id}", headers=tenant.headers)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job if job["status"] in FINISHED else None

    return await eventually(finished, timeout=timeout, what=f"job {job_id} finished")


async def all_chunks(
    client: httpx.AsyncClient, tenant: Tenant, document_id: str
) -> list[dict[str, Any]]:
    """Every chunk of the document's searchable version, following the cursor."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(f"/api/v1/documents/{document_id}/chunks",
                                    params=params, headers=tenant.headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            return items
