"""``/api/v1/jobs`` over real HTTP: fields, listing, cancel, retry and failed parses."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragd.container import build_workers
from tests.conftest import assert_error
from tests.ingestion.conftest import (
    Tenant,
    app_client,
    new_tenant,
    upload_file,
    upload_text,
    wait_job,
)
from tests.waiting import eventually

JOB_FIELDS = {
    "id", "kind", "status", "stage", "progress", "attempts", "max_attempts", "error",
    "cancel_requested", "document_id", "collection_id", "timings", "run_after", "created_at",
    "updated_at", "finished_at",
}
#: ``GET /jobs/{id}`` adds the queue position.
JOB_DETAIL_FIELDS = JOB_FIELDS | {"queue_position"}


async def _get(client: httpx.AsyncClient, tenant: Tenant, path: str) -> Any:
    r = await client.get(path, headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def _document_settled(
    client: httpx.AsyncClient, tenant: Tenant, document_id: str
) -> Any:
    """The document once it has left queued/processing."""

    async def settled() -> Any:
        document = await _get(client, tenant, f"/api/v1/documents/{document_id}")
        return document if document["status"] not in ("queued", "processing") else None

    return await eventually(settled, what=f"document {document_id} settled")


async def test_job_fields_and_listing(ingest_client: httpx.AsyncClient) -> None:
    client = ingest_client
    tenant = await new_tenant(client)
    h = tenant.headers
    r = await upload_text(client, tenant, "t", "# Pumps\n\nHow to service the pumps.")
    assert r.status_code == 202
    job_id, document_id = r.json()["job_id"], r.json()["document_id"]
    job = await wait_job(client, tenant, job_id)
    assert set(job) == JOB_DETAIL_FIELDS and job["queue_position"] is None
    document = await _get(client, tenant, f"/api/v1/documents/{document_id}")
    assert job["id"] == job_id and job["kind"] == "ingest"
    assert job["status"] == "succeeded" and job["error"] is None
    assert job["stage"] == "index"
    assert job["progress"] == {"done": document["chunk_count"], "total": document["chunk_count"]}
    assert job["attempts"] == 1 and job["max_attempts"] == 3
    assert job["cancel_requested"] is False
    assert job["document_id"] == document_id
    assert job["finished_at"] is not None and job["finished_at"] >= job["created_at"]
    assert {"parse", "chunk", "embed", "index"} <= set(job["timings"])
    assert all(isinstance(v, float) and v >= 0 for v in job["timings"].values())
    # The document's timings are recorded by the commit itself (so without "index").
    assert {"parse", "chunk", "embed"} <= set(document["timings"])

    ids = [job_id]
    for i in range(3):
        r = await upload_text(client, tenant, f"t{i}", f"Text {i} about valves and gauges.")
        ids.append(r.json()["job_id"])
    for other in ids[1:]:
        assert (await wait_job(client, tenant, other))["status"] == "succeeded"

    listed = await _get(client, tenant, "/api/v1/jobs?status=succeeded")
    assert {j["id"] for j in listed["items"]} == set(ids)
    assert all(set(j) == JOB_FIELDS for j in listed["items"])
    for status in ("queued", "running", "failed", "cancelled"):
        listed = await _get(client, tenant, f"/api/v1/jobs?status={status}")
        assert listed["items"] == [], status
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/api/v1/jobs", params=params, headers=h)
        assert r.status_code == 200, r.text
        seen.extend(j["id"] for j in r.json()["items"])
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))  # newest first, each once

    for params in ({"status": "bogus"}, {"limit": 0}, {"limit": 1000}, {"cursor": "zzz"}):
        assert_error(await client.get("/api/v1/jobs", params=params, headers=h), 422)
    for method, path in (("GET", "/api/v1/jobs/nope"), ("POST", "/api/v1/jobs/nope/cancel"),
                         ("POST", "/api/v1/jobs/nope/retry")):
        assert_error(await client.request(method, path, headers=h), 404, "job_not_found")
    assert_error(await client.get("/api/v1/jobs/" + "j" * 65, headers=h), 422)


async def test_cancel_and_retry_a_queued_job(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data", ingestion={"workers": 0}) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        tenant = await new_tenant(client)
        h = tenant.headers
        r = await upload_text(client, tenant, "t", "Cancelled text about lighthouses.")
        job_id, document_id = r.json()["job_id"], r.json()["document_id"]
        queued = await _get(client, tenant, f"/api/v1/jobs/{job_id}")
        assert queued["status"] == "queued" and queued["attempts"] == 0
        assert queued["queue_position"] == 0
        assert queued["finished_at"] is None and queued["stage"] is None
        assert queued["progress"] == {"done": 0, "total": 0}
        listed = await _get(client, tenant, "/api/v1/jobs?status=queued")
        assert [j["id"] for j in listed["items"]] == [job_id]

        r = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=h)
        assert r.status_code == 200, r.text
        cancelled = r.json()
        assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
        assert cancelled["attempts"] == 0
        assert await _get(client, tenant, f"/api/v1/jobs/{job_id}") == {
            **cancelled, "queue_position": None,
        }
        document = await _get(client, tenant, f"/api/v1/documents/{document_id}")
        assert document["status"] == "cancelled" and document["error"]
        assert document["searchable"] is False
        # Cancelling again changes nothing.
        r = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=h)
        assert r.status_code == 200 and r.json() == cancelled
        listed = await _get(client, tenant, "/api/v1/jobs?status=cancelled")
        assert [j["id"] for j in listed["items"]] == [job_id]

        r = await client.post(f"/api/v1/jobs/{job_id}/retry", headers=h)
        assert r.status_code == 200, r.text
        retried = r.json()
        assert retried["status"] == "queued" and retried["attempts"] == 0
        assert retried["error"] is None and retried["finished_at"] is None
        document = await _get(client, tenant, f"/api/v1/documents/{document_id}")
        assert document["status"] == "queued" and document["error"] is None
        # A queued job cannot be retried.
        assert_error(await client.post(f"/api/v1/jobs/{job_id}/retry", headers=h),
                     409, "job_not_retryable")

        pool = build_workers(services, 1)
        pool.start()
        try:
            done = await wait_job(client, tenant, job_id)
        finally:
            await pool.stop()
        assert done["status"] == "succeeded" and done["attempts"] == 1
        document = await _get(client, tenant, f"/api/v1/documents/{document_id}")
        assert document["status"] == "ready" and document["searchable"] is True
        check = await services.indexes.verify(tenant.tenant_id)
        assert check.ok and check.chunks == document["chunk_count"] > 0

        assert_error(await client.post(f"/api/v1/jobs/{job_id}/retry", headers=h),
                     409, "job_not_retryable")
        r = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=h)
        assert r.status_code == 200 and {**r.json(), "queue_position": None} == done
        assert await _get(client, tenant, f"/api/v1/jobs/{job_id}") == done
        document_after = await _get(client, tenant, f"/api/v1/documents/{document_id}")
        assert document_after == document


async def test_queue_position_counts_the_tenants_queued_jobs_ahead(tmp_path: Path) -> None:
    """No worker runs, so nothing leaves the queue unless the test claims it."""
    async with app_client(tmp_path / "data", ingestion={"workers": 0}) as client:
        queue = client.app.state.services.queue  # type: ignore[attr-defined]
        acme, globex = await new_tenant(client), await new_tenant(client)
        mine: list[str] = []
        for i in range(3):  # interleaved with another tenant's uploads, which never count
            r = await upload_text(client, acme, f"a{i}", f"Acme text {i} about pumps.")
            mine.append(r.json()["job_id"])
            await upload_text(client, globex, f"g{i}", f"Globex text {i} about valves.")

        async def positions(tenant: Tenant, ids: list[str]) -> list[Any]:
            return [(await _get(client, tenant, f"/api/v1/jobs/{j}"))["queue_position"]
                    for j in ids]

        assert await positions(acme, mine) == [0, 1, 2]
        # A worker takes the second one: running, no position; the third moves up.
        claimed = await queue.claim("test-worker", ["ingest"], job_ids=[mine[1]])
        assert claimed is not None and claimed.id == mine[1]
        assert await queue.set_stage(mine[1], "test-worker", "embed", 3, 10) is True
        running = await _get(client, acme, f"/api/v1/jobs/{mine[1]}")
        assert running["status"] == "running" and running["queue_position"] is None
        assert (running["stage"], running["progress"]) == ("embed", {"done": 3, "total": 10})
        assert await positions(acme, mine) == [0, None, 1]
        # Cancelled: gone from the queue.
        r = await client.post(f"/api/v1/jobs/{mine[0]}/cancel", headers=acme.headers)
        assert r.status_code == 200, r.text
        assert await positions(acme, mine) == [None, None, 0]
        # Another tenant's job is a 404, its position never shown.
        assert_error(await client.get(f"/api/v1/jobs/{mine[2]}", headers=globex.headers),
                     404, "job_not_found")
        listed = await _get(client, acme, "/api/v1/jobs?status=queued")
        assert [j["id"] for j in listed["items"]] == [mine[2]]
        assert "queue_position" not in listed["items"][0]


async def test_unparseable_document_fails_without_retries(
    ingest_client: httpx.AsyncClient,
) -> None:
    client = ingest_client
    tenant = await new_tenant(client)
    h = tenant.headers
    r = await upload_file(client, tenant, "a.pdf", b"%PDF-1.7\n garbage", "application/pdf")
    assert r.status_code == 202, r.text
    job_id, document_id = r.json()["job_id"], r.json()["document_id"]
    job = await wait_job(client, tenant, job_id)
    assert job["status"] == "failed", job
    assert job["attempts"] == 1
    assert isinstance(job["error"], str) and job["error"]
    document = await _document_settled(client, tenant, document_id)
    assert document["status"] == "failed"
    assert document["searchable"] is False and document["chunk_count"] == 0
    assert document["active_version"] is None
    assert isinstance(document["error"], str) and document["error"] == job["error"]
    assert "pdf" in document["error"].lower() or "parse" in document["error"].lower()
    chunks = await _get(client, tenant, f"/api/v1/documents/{document_id}/chunks")
    assert chunks == {"items": [], "next_cursor": None}
    listed = await _get(client, tenant, "/api/v1/documents?status=failed")
    assert [d["id"] for d in listed["items"]] == [document_id]
    listed = await _get(client, tenant, "/api/v1/jobs?status=failed")
    assert [j["id"] for j in listed["items"]] == [job_id]

    # A failed job can be retried; it fails the same way, once.
    r = await client.post(f"/api/v1/jobs/{job_id}/retry", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "queued"
    again = await wait_job(client, tenant, job_id)
    assert again["status"] == "failed" and again["attempts"] == 1
    document = await _document_settled(client, tenant, document_id)
    assert document["status"] == "failed" and document["error"]

    # Re-uploading the same bytes after a failure is not silently a duplicate of a failed
    # document: PUT of identical content re-ingests it.
    r = await client.put(f"/api/v1/documents/{document_id}",
                         files={"file": ("a.pdf", b"%PDF-1.7\n garbage", "application/pdf")},
                         headers=h)
    assert r.status_code == 202, r.text
    assert (await wait_job(client, tenant, r.json()["job_id"]))["status"] == "failed"

    # POSTing the same bytes again queues the failed document again (same document, new
    # job) instead of answering "duplicate" with a document that will never be ingested.
    r = await upload_file(client, tenant, "a.pdf", b"%PDF-1.7\n garbage", "application/pdf")
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["duplicate"] is False and body["document_id"] == document_id
    assert body["job_id"] not in (job_id, None) and body["status"] == "queued"
    assert (await wait_job(client, tenant, body["job_id"]))["status"] == "failed"
    listed = await _get(client, tenant, "/api/v1/documents")
    assert [d["id"] for d in listed["items"]] == [document_id]


async def test_document_is_failed_once_its_job_reports_failed(
    ingest_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = ingest_client
    catalog = client.app.state.services.catalog  # type: ignore[attr-defined]
    original = catalog.finish_version
    checked = asyncio.Event()

    async def held_finish_version(*args: Any, **kwargs: Any) -> None:
        # A document write outside the job's own transaction lands only after the test has
        # read the document: it can never be what makes the check below pass.
        await checked.wait()
        await original(*args, **kwargs)

    monkeypatch.setattr(catalog, "finish_version", held_finish_version)
    tenant = await new_tenant(client)
    r = await upload_file(client, tenant, "a.pdf", b"%PDF-1.7\n garbage", "application/pdf")
    try:
        job = await wait_job(client, tenant, r.json()["job_id"])
        assert job["status"] == "failed"
        document = await _get(client, tenant, f"/api/v1/documents/{r.json()['document_id']}")
        assert document["status"] == "failed", document
    finally:
        checked.set()
