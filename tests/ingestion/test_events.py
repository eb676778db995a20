"""The "document ready" log line: one per document version committed, from a real ingestion
run, with the document, the tenant, the chunk count and the stage timings the job recorded."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.ingestion.conftest import app_client, new_tenant, upload_text, wait_job

TEXT = ("Basalt columns form when thick lava flows cool slowly and contract. The cracks meet "
        "at angles near 120 degrees, so the columns are mostly hexagonal.")


async def test_a_committed_version_is_logged_as_ready_with_its_figures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ragd.ingestion.events")
    async with app_client(tmp_path / "data") as client:
        tenant = await new_tenant(client)
        r = await upload_text(client, tenant, "volcano", TEXT)
        assert r.status_code == 202, r.text
        job = await wait_job(client, tenant, r.json()["job_id"])
        assert job["status"] == "succeeded", job
        document_id = r.json()["document_id"]
        document = (await client.get(f"/api/v1/documents/{document_id}",
                                     headers=tenant.headers)).json()
        # The same content again is a duplicate: nothing is committed, nothing logged.
        again = await upload_text(client, tenant, "volcano", TEXT)
        assert again.json()["duplicate"] is True

    ready = [rec for rec in caplog.records if rec.getMessage() == "document ready"]
    assert len(ready) == 1
    record = ready[0].__dict__
    assert (record["document_id"], record["tenant_id"], record["version"]) == (
        document_id, tenant.tenant_id, 1
    )
    assert (record["job_id"], record["attempt"]) == (job["id"], 1)
    assert record["chunks"] == document["chunk_count"] >= 1
    assert record["timings"] == job["timings"]
    assert {"parse", "chunk", "embed", "keywords", "index", "total"} <= set(record["timings"])
