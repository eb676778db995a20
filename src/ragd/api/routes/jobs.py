"""``/api/v1/jobs``: background jobs of the caller's tenant (ingestion, deletion)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from ragd.api.deps import CurrentPrincipal, IngestionDep, QueueDep
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.payloads import JobDetail, JobOut, JobPage
from ragd.api.routing import ApiRoute
from ragd.errors import NotFound
from ragd.jobs.queue import JobStatus

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=ERROR_RESPONSES, route_class=ApiRoute)

JobId = Annotated[str, Path(min_length=1, max_length=64, openapi_examples={
    "job": {"summary": "A job id (from an upload's job_id)",
            "value": "5d2f8a1c-7b3e-4c9d-8e6f-1a2b3c4d5e6f"},
})]


@router.get("")
async def list_jobs(
    principal: CurrentPrincipal,
    queue: QueueDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> JobPage:
    page = await queue.list(
        principal.tenant_id, status=status, limit=limit, cursor=cursor
    )
    return JobPage(items=[JobOut.of(job) for job in page.items], next_cursor=page.next_cursor)


@router.get("/{job_id}")
async def get_job(job_id: JobId, principal: CurrentPrincipal, queue: QueueDep) -> JobDetail:
    """Follow a background job, such as the ingestion of an uploaded document.

    Send the `job_id` an upload answered with. The answer is the job: its `status`
    (`queued`, `running`, then `succeeded`, `failed` or `cancelled`), the `stage` running
    (`parse`, `chunk`, `embed`, `index`) with its `progress`, and `error` if it failed. While
    it is queued, `queue_position` says how many of the tenant's queued jobs are ahead of it
    (they are claimed oldest first). Ask again every second or so until it has finished.

    Next: once an ingestion job has `succeeded` its document is searchable, so
    `POST /api/v1/search` or `POST /api/v1/chat`; if it `failed`,
    `POST /api/v1/jobs/{job_id}/retry` queues it again."""
    # The position first: shown only if the job read after it is still queued, so a job
    # claimed in between is reported running, without a stale position.
    position = await queue.position(principal.tenant_id, job_id)
    job = await queue.get(principal.tenant_id, job_id)
    if job is None:
        raise NotFound("job not found", code="job_not_found")
    return JobDetail.at(job, position)


@router.post("/{job_id}/cancel")
async def cancel_job(
    job_id: JobId, principal: CurrentPrincipal, ingestion: IngestionDep
) -> JobOut:
    """A queued job is cancelled at once; a running one stops before its next stage
    (``cancel_requested`` is true until then). Finished jobs are returned unchanged."""
    return JobOut.of(await ingestion.cancel_job(principal.tenant_id, job_id))


@router.post("/{job_id}/retry")
async def retry_job(
    job_id: JobId, principal: CurrentPrincipal, ingestion: IngestionDep
) -> JobOut:
    """Queue a failed or cancelled job again (409 for any other state)."""
    return JobOut.of(await ingestion.retry_job(principal.tenant_id, job_id))
