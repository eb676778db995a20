"""The job queue family's factory, keyed on the database backend (``db/backends.py``).

The queue lives in the database it coordinates through (claims, leases, finalisers in the
transaction that ends a job), so its backend is the database's: SQL rows with leases on
SQLite, the same rows with ``SKIP LOCKED`` on PostgreSQL, where leases run on the server's
clock (no clock is injected here) and every job that becomes due is announced with
``NOTIFY`` (``jobs.queue.JOBS_CHANNEL``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Protocol

from ragd.db.backends import POSTGRESQL, SQLITE, choose
from ragd.db.engine import Database
from ragd.jobs.queue import (
    CompletionObserver,
    Finaliser,
    JobQueue,
    QueueDepth,
    SqlJobQueue,
    Stuck,
)
from ragd.settings import Settings

__all__ = ["QUEUES", "ManagedJobQueue", "build_job_queue"]


class ManagedJobQueue(JobQueue, Protocol):
    """A :class:`JobQueue` plus the housekeeping its owner runs (not part of the contract
    producers and workers rely on)."""

    async def prune(self, older_than: timedelta) -> int:
        """Delete finished jobs that ended before ``now - older_than``; returns how many.
        Queued and running jobs are never touched."""
        ...

    async def depth(self) -> QueueDepth:
        """Jobs queued and running by kind, and those running past their lease, read from
        the shared rows now (the same on every replica), at a bounded cost."""
        ...

    async def stuck(self) -> Stuck:
        """Only the jobs running past their lease (cheap enough for every health check)."""
        ...


QueueBuilder = Callable[
    [Database, Settings, Mapping[str, Finaliser], CompletionObserver | None], ManagedJobQueue
]


def _sql_queue(
    db: Database, settings: Settings, finalisers: Mapping[str, Finaliser],
    on_complete: CompletionObserver | None,
) -> ManagedJobQueue:
    return SqlJobQueue(
        db, lease_seconds=settings.ingestion.lease_seconds, finalisers=finalisers,
        on_complete=on_complete,
    )


QUEUES: Mapping[str, QueueBuilder] = {SQLITE: _sql_queue, POSTGRESQL: _sql_queue}


def build_job_queue(
    settings: Settings, db: Database, *, finalisers: Mapping[str, Finaliser] | None = None,
    on_complete: CompletionObserver | None = None,
) -> ManagedJobQueue:
    """The durable job queue; ``finalisers`` (by job kind) run in the transaction that ends
    a job of that kind as failed or cancelled; ``on_complete`` sees each job that succeeded."""
    return choose(settings.database_url, QUEUES, "job queue")(
        db, settings, finalisers or {}, on_complete
    )
