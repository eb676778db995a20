"""A minimal end-to-end ingestion through the HTTP API (the fuller suites live beside)."""

from __future__ import annotations

import httpx

from tests.ingestion.conftest import all_chunks, new_tenant, upload_text, wait_job


async def test_text_document_is_ingested_and_chunked(ingest_client: httpx.AsyncClient) -> None:
    tenant = await new_tenant(ingest_client)
    text = "# Install\n\nRun the installer and follow the prompts.\n\n# Remove\n\nDelete it."
    response = await upload_text(ingest_client, tenant, "guide", text)
    assert response.status_code == 202, response.text
    job = await wait_job(ingest_client, tenant, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    document = (await ingest_client.get(
        f"/api/v1/documents/{response.json()['document_id']}", headers=tenant.headers
    )).json()
    assert document["status"] == "ready" and document["searchable"] is True
    chunks = await all_chunks(ingest_client, tenant, document["id"])
    assert len(chunks) == document["chunk_count"] >= 1
    assert "installer" in " ".join(chunk["text"] for chunk in chunks)
