"""What a finished job tells operations: the "document ready" log line and the job metrics.

Hooked on the job queue's completion (``SqlJobQueue(on_complete=...)``), which calls it once
the transaction that records a job as succeeded has committed, so the pipeline itself stays
free of reporting. By then an ``ingest`` job has committed its document version (the commit
made it searchable; ``complete`` comes right after it) and left what this needs on the job:
the stage timings it recorded and, as its final progress, the chunk count
(``set_stage("index", n, n)``). A job that did nothing new (``skipped``: the version was
superseded, deleted, or committed by an earlier attempt) is neither logged nor measured.
"""

from __future__ import annotations

import logging

from ragd.jobs.queue import CompletionObserver, Job
from ragd.ops.metrics import Metrics
from ragd.stores.catalog import INGEST_JOB

__all__ = ["job_observer"]

logger = logging.getLogger(__name__)


def job_observer(metrics: Metrics) -> CompletionObserver:
    """The completion observer that logs each document made ready and feeds ``metrics``
    (stage durations by kind, chunks indexed)."""

    def completed(job: Job) -> None:
        timings = dict(job.timings)
        if timings.get("skipped"):
            return
        ingest = job.kind == INGEST_JOB
        chunks = job.progress_total if ingest else 0
        metrics.job_succeeded(job.kind, timings, chunks)
        if ingest:
            logger.info("document ready", extra={
                "document_id": job.payload.get("document_id"),
                "version": job.payload.get("version"),
                "tenant_id": job.tenant_id,
                "job_id": job.id,
                "attempt": job.attempts,
                "chunks": chunks,
                "timings": timings,
            })

    return completed
