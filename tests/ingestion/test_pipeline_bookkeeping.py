"""An ingest job ends in the transaction that commits its version: there is no moment where
the version is searchable and the job still running. A job found running with its version
already committed (a job of an older release, which recorded its end separately) only
finishes its bookkeeping: the document is not parsed, embedded or committed again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from ragd.app import create_app
from ragd.errors import Busy
from ragd.ingestion.pipeline import IngestionPipeline
from ragd.stores.catalog import INGEST_JOB
from tests.ingestion.conftest import ingest_settings, new_tenant, upload_text


class BusyWhenCompleting:
    """The real queue, except that recording a job's end meets a busy database once."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def complete(self, *args: Any, **kwargs: Any) -> bool:
        self.refused += 1
        raise Busy()


async def test_the_version_commit_ends_the_job_and_a_rerun_only_does_bookkeeping(
    tmp_path: Path,
) -> None:
    settings = ingest_settings(
        tmp_path / "data", ingestion={"workers": 0, "keywords_enabled": False}
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://ragd.test") as client:
            tenant = await new_tenant(client)
            accepted = (await upload_text(
                client, tenant, "harbour", "Cranes unload containers in the harbour at dawn."
            )).json()
            services = app.state.services
            flaky = BusyWhenCompleting(services.queue)
            first = IngestionPipeline(services.catalog, flaky, services.runtime,
                                      services.indexes, settings.ingestion)
            second = IngestionPipeline(services.catalog, services.queue, services.runtime,
                                       services.indexes, settings.ingestion)
            try:
                job = await services.queue.claim("host-1-aaaa-0", [INGEST_JOB])
                assert job is not None and job.id == accepted["job_id"]
                await first.run(job, "host-1-aaaa-0")
                assert flaky.refused == 0  # no separate write recorded the end
                document = await services.catalog.get_document(
                    tenant.tenant_id, accepted["document_id"]
                )
                assert document is not None and document.status == "ready"
                done = await services.queue.get(tenant.tenant_id, job.id)
                assert done is not None and done.status == "succeeded"
                assert done.finished_at is not None
                assert (done.stage, done.progress_done) == ("index", document.chunk_count)
                assert {"parse", "chunk", "embed", "index", "total"} <= set(done.timings)
                committed = document.timings
                chunk_ids = [c.id for c in await services.catalog.list_chunks(
                    tenant.tenant_id, document.id)]

                # A job of an older release: its version committed, its end not recorded.
                async with services.db.transaction() as s:
                    await s.execute(text(
                        "UPDATE jobs SET status = 'queued', finished_at = NULL WHERE id = :id"
                    ), {"id": job.id})
                retried = await services.queue.claim("host-2-bbbb-0", [INGEST_JOB])
                assert retried is not None and retried.id == job.id
                await second.run(retried, "host-2-bbbb-0")
                done = await services.queue.get(tenant.tenant_id, job.id)
                assert done is not None and done.status == "succeeded"
                assert done.timings == {"skipped": 1.0}  # nothing was processed again
                after = await services.catalog.get_document(tenant.tenant_id, document.id)
                assert after is not None and after.status == "ready"
                assert after.timings == committed
                assert [c.id for c in await services.catalog.list_chunks(
                    tenant.tenant_id, document.id)] == chunk_ids
                found = await client.post("/api/v1/search", headers=tenant.headers,
                                          json={"query": "harbour cranes"})
                assert found.json()["results"][0]["document_id"] == document.id
            finally:
                await first.close()
                await second.close()
