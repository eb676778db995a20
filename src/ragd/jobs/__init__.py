"""Durable background jobs: a database-backed queue with leases, retries and cancellation."""

from ragd.jobs.queue import (
    BACKOFF_BASE,
    BACKOFF_MAX,
    JOB_STATUSES,
    Job,
    JobPage,
    JobQueue,
    JobStatus,
    SqlJobQueue,
    backoff_delay,
)

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_MAX",
    "JOB_STATUSES",
    "Job",
    "JobPage",
    "JobQueue",
    "JobStatus",
    "SqlJobQueue",
    "backoff_delay",
]
