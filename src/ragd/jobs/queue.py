"""A durable, generic job queue: jobs are database rows claimed under a lease.

The queue knows nothing about what a job does. A worker loop looks like::

    job = await queue.claim(worker_id, ["ingest"])
    ...for each stage...
        if not await queue.heartbeat(job.id, worker_id):
            stop: the lease was lost or cancellation was requested
        await queue.set_stage(job.id, worker_id, "embed", done, total)
    await queue.complete(job.id, worker_id, timings)   # or fail(...) / mark_cancelled(...)

A worker that dies stops heartbeating; once its lease expires another worker claims the job
again (a new attempt), so every stage must be idempotent.

**Time.** Every time the queue writes or compares (``run_after``, lease expiry, heartbeats,
backoff, ``finished_at``) comes from one clock, read inside the transaction that uses it: an
injected one (tests), else the database's (:func:`ragd.db.clock.database_now`: PostgreSQL's
clock, so hosts whose clocks disagree neither steal live leases nor keep dead ones; the host's
on SQLite, where every process shares one host). A job that a producer added in its own
transaction (:func:`new_job_row`) carries the producer host's time; it is due at once
whatever that clock said (a first attempt whose ``run_after`` is not after its
``created_at`` was never deferred), so a producer whose clock runs ahead does not hold its
jobs back; deferrals (backoff, release) are the queue's own, on its clock.

**Scope and position.** A claimer may restrict its claim to a set of job ids (a client that
runs the jobs it enqueued itself, ``ragd ingest --local``, leaves everyone else's alone), at most
:data:`MAX_CLAIM_IDS` of them per claim. A queued job's position is the number of its tenant's
queued jobs ahead of it in claim order (oldest first within a tenant): one count over the index
``ix_jobs_queue`` (status, tenant, created_at, id).

**Wake-up.** On PostgreSQL every transaction that adds a job, or queues one again at once,
sends ``NOTIFY`` on :data:`JOBS_CHANNEL` (payload: the job's kind), delivered when it commits;
worker pools that listen claim at once instead of at their next poll.

**Watching it.** :meth:`SqlJobQueue.depth` reads how many jobs wait and run, by kind, and how
many run past their lease (stuck: their worker died or stalled, and no worker has reclaimed
them), from the rows at the moment of the call, so every replica reports the same figures; it
counts at most :data:`DEPTH_SCAN_LIMIT` jobs per status, so its cost stays bounded however
long the backlog. An ``on_complete`` observer sees every job that succeeds, after the
transaction that records it has committed.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, cast, runtime_checkable

from sqlalchemy import (
    Select,
    and_,
    bindparam,
    delete,
    event,
    func,
    or_,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, aliased

from ragd.db.clock import database_now
from ragd.db.cursor import encode_cursor, newest_first
from ragd.db.engine import Database
from ragd.db.listen import channel_name, notify_on_commit
from ragd.db.tables import JobRow, UTCDateTime, utcnow
from ragd.errors import Conflict, InvalidInput, NotFound

logger = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "running", "succeeded", "failed", "cancelled")

#: Retry backoff: ``BACKOFF_BASE * 2 ** (attempt - 1)``, capped at ``BACKOFF_MAX``.
BACKOFF_BASE = timedelta(seconds=2)
BACKOFF_MAX = timedelta(minutes=5)
#: Called with the session and the finished job, in the transaction that ends it as failed or
#: cancelled (by its worker, or by the queue when the worker died on its last attempt), so
#: whatever the job was producing never looks "in progress" after the job has ended.
Finaliser = Callable[[AsyncSession, "Job"], Awaitable[None]]


@runtime_checkable
class ClaimObserver(Protocol):
    """A finaliser that also sees each job of its kind being claimed, in the claim's own
    transaction (the ingestion catalog marks the job's document "processing" there, instead
    of in a write transaction of its own)."""

    async def claimed(self, s: AsyncSession, job: Job) -> None: ...


#: A job's error text is kept to this many characters.
MAX_ERROR_CHARS = 4000
#: The wake-up a job's kind is announced on when it becomes due at once (a PostgreSQL
#: channel: :data:`JOBS_CHANNEL`).
JOBS = "jobs"
JOBS_CHANNEL = channel_name(JOBS)
#: The most job ids one claim may be restricted to (a bound on the statement's size: a client
#: with more jobs passes its oldest unfinished ones, which are the ones claim order wants).
MAX_CLAIM_IDS = 500
#: Where the queue reads the time (an injected clock; None: the database's).
Clock = Callable[[], datetime]
#: Jobs counted per status at most by :meth:`SqlJobQueue.depth` (beyond: ``capped``).
DEPTH_SCAN_LIMIT = 100_000
#: Called with each job that succeeded, once its transaction has committed (never raises
#: into the queue: a failing observer is logged).
CompletionObserver = Callable[["Job"], None]


@dataclass(frozen=True, slots=True)
class Job:
    """An immutable snapshot of one job row."""

    id: str
    tenant_id: str
    kind: str
    payload: Mapping[str, Any]
    status: JobStatus
    stage: str | None
    progress_done: int
    progress_total: int
    attempts: int
    max_attempts: int
    error: str | None
    run_after: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    timings: Mapping[str, float]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of :meth:`JobQueue.list`; pass ``next_cursor`` back for the next page."""

    items: tuple[Job, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """The queue at one moment, by the queue's clock.

    ``jobs``: (status, kind) → how many, for the statuses that are work to do or being done
    (``queued``, ``running``); ``capped``: a status had :data:`DEPTH_SCAN_LIMIT` jobs or more
    and its counts stop there. ``stuck``: running jobs whose lease has expired;
    ``stuck_for_seconds``: how long ago the oldest of those leases expired (None: none).
    """

    jobs: Mapping[tuple[JobStatus, str], int]
    capped: bool
    stuck: int
    stuck_for_seconds: float | None


@dataclass(frozen=True, slots=True)
class Stuck:
    """Running jobs whose lease has expired (their worker died or stalled, and no worker
    has reclaimed them yet), and how long ago the oldest of those leases expired."""

    jobs: int
    for_seconds: float | None


def backoff_delay(attempts: int) -> timedelta:
    """The wait before retrying a job that has failed ``attempts`` times (>= 1)."""
    exponent = max(attempts - 1, 0)
    # Compare exponents, not values: 2 ** 1000 seconds would overflow timedelta.
    if exponent >= 16:
        return BACKOFF_MAX
    delay: timedelta = BACKOFF_BASE * (1 << exponent)
    return min(delay, BACKOFF_MAX)


class JobQueue(Protocol):
    """The contract every job queue implements.

    * Tenant-facing methods (``get``, ``list``, ``cancel``, ``retry``) take ``tenant_id`` and
      never see or change another tenant's job: a foreign id is ``None``, with no side effect.
    * Worker-facing methods (``heartbeat``, ``set_stage``, ``complete``, ``fail``,
      ``mark_cancelled``) act only while ``worker_id`` holds the job's lease. They return
      False, changing nothing, when the lease was taken over by another worker or the job is
      no longer running, so a worker that was presumed dead cannot overwrite the new owner.
    * ``claim`` is atomic: no two claimers, in any process, get the same job attempt.
    * ``worker_id`` identifies one worker incarnation (e.g. host, pid and a random suffix):
      a restarted worker must not reuse the id of the one that died.
    """

    async def enqueue(
        self, tenant_id: str, kind: str, payload: Mapping[str, Any], *, max_attempts: int = 3
    ) -> Job: ...

    async def claim(
        self, worker_id: str, kinds: Sequence[str], *, job_ids: Collection[str] | None = None
    ) -> Job | None:
        """Take a due job of one of ``kinds``: a queued one whose ``run_after`` has passed,
        or a running one whose lease expired. None when there is nothing to do.

        Fair between tenants: the job comes from the tenant with the fewest running jobs
        (live leases), then the one whose latest job was claimed longest ago (never: first),
        then the one whose due job is oldest; within a tenant, a job whose worker died first,
        then the oldest (FIFO). So a tenant's backlog takes no more than its share of the
        workers while another tenant has work, and leaves them all when it is alone.

        ``job_ids`` (at most :data:`MAX_CLAIM_IDS`; :class:`InvalidInput` beyond) restricts
        the claim to those jobs, oldest first: any other job, however old, is left for other
        claimers. An empty collection claims nothing."""
        ...

    async def heartbeat(self, job_id: str, worker_id: str) -> bool:
        """Extend the lease. False means stop: the lease was lost or cancel was requested."""
        ...

    async def is_cancel_requested(self, job_id: str) -> bool: ...

    async def set_stage(
        self, job_id: str, worker_id: str, stage: str, done: int, total: int
    ) -> bool: ...

    async def complete(
        self,
        job_id: str,
        worker_id: str,
        timings: Mapping[str, float] | None = None,
        *,
        stage: tuple[str, int, int] | None = None,
    ) -> bool:
        """Mark the job succeeded, with its timings and, if given, its final
        ``(stage, done, total)`` (saving a progress write)."""
        ...

    async def completed(self, tenant_id: str, job_id: str) -> None:
        """Run the completion observer for a job another transaction marked succeeded."""
        ...

    async def fail(
        self, job_id: str, worker_id: str, error: str, *, retryable: bool = True
    ) -> bool:
        """Requeue with backoff while attempts remain and ``retryable``; else mark failed."""
        ...

    async def mark_cancelled(self, job_id: str, worker_id: str) -> bool:
        """The worker stopped because cancellation was requested."""
        ...

    async def release(self, job_id: str, worker_id: str, *, delay: timedelta) -> bool:
        """Put the job back, due after ``delay``, without using up the attempt: the attempt
        could not run for a reason that says nothing about the job (the database was busy)."""
        ...

    async def cancel(self, tenant_id: str, job_id: str) -> Job | None:
        """Queued: cancelled at once. Running: cancellation requested, the worker stops
        between stages. Finished jobs are returned unchanged."""
        ...

    async def retry(self, tenant_id: str, job_id: str) -> Job | None:
        """Queue a failed or cancelled job again with its attempts reset; :class:`Conflict`
        for a job in any other state."""
        ...

    async def get(self, tenant_id: str, job_id: str) -> Job | None: ...

    async def position(self, tenant_id: str, job_id: str) -> int | None:
        """How many of the tenant's queued jobs are ahead of this queued job in claim order
        (created first; all kinds, due or backing off). None when the job is not queued, or
        not the tenant's."""
        ...

    async def list(
        self,
        tenant_id: str,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """Newest first."""
        ...


class SqlJobQueue:
    """:class:`JobQueue` over SQLAlchemy.

    On SQLite every state change runs in ``Database.transaction()`` (``BEGIN IMMEDIATE``),
    which serialises claimers across connections and processes. On PostgreSQL the claim
    query uses ``FOR UPDATE SKIP LOCKED``: a claimer passes over the rows other claimers hold
    and takes the next due one, so concurrent workers neither wait on one row nor get the
    same job.

    Every other state change decides on the job row it read (whose lease it is, whether the
    job is queued, running or finished), so it reads the row through its lock (``FOR
    UPDATE``; nothing on SQLite, where the transaction already holds the database). On
    PostgreSQL's READ COMMITTED a plain read could be stale by the time the write lands: a
    worker whose lease was just taken over would complete, fail or extend the new owner's
    attempt, a cancel would end a job a worker just claimed, a retry would queue again a job
    already retried and claimed. A locked read waits for a concurrent writer of the row and
    then re-checks its conditions against what that writer committed (a lease now held by
    another worker is simply not found). The job is the only row the queue locks, before
    anything its finaliser writes (the job's document): the order of
    ``ragd.stores._sql_locks`` (collection, job, document). A claim never waits for these
    locks: it passes the row by, and a later claim takes it if it is still due then.

    **Fair claims** (see :meth:`JobQueue.claim`): one statement ranks one candidate per
    tenant with work, its oldest due job, plus the jobs whose lease expired
    (:func:`fair_candidates_query`: index steps per tenant with work, never a walk over a
    backlog), then the claimer locks the first candidate it can, by id, checking again
    that it is due. On PostgreSQL a candidate another claimer holds or has just taken is
    passed by for the next tenant's; only when every candidate is held does the claimer
    take, in the same order of tenants, the next due job it can lock (a second job of a
    tenant already being served). A ranking read a moment before a concurrent claim
    committed can only make that claim less fair, never take a job twice: the lock decides.

    ``clock`` replaces the database's clock (see the module docstring); tests inject one to
    move time instead of waiting for it.
    """

    def __init__(
        self,
        db: Database,
        *,
        lease_seconds: float = 30,
        clock: Clock | None = None,
        finalisers: Mapping[str, Finaliser] | None = None,
        on_complete: CompletionObserver | None = None,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self._finalisers = dict(finalisers or {})
        self._on_complete = on_complete
        self._db = db
        self._lease = timedelta(seconds=lease_seconds)
        self._clock = clock

    async def _now(self, s: AsyncSession) -> datetime:
        """The time for this transaction's reads and writes."""
        return self._clock() if self._clock is not None else await database_now(s)

    # -- producers and tenants -------------------------------------------------------------

    async def enqueue(
        self, tenant_id: str, kind: str, payload: Mapping[str, Any], *, max_attempts: int = 3
    ) -> Job:
        if max_attempts < 1:
            raise InvalidInput("max_attempts must be at least 1")
        if not kind or len(kind) > 32:
            raise InvalidInput("job kind must be 1 to 32 characters")
        try:
            return await self._insert(tenant_id, kind, payload, max_attempts)
        except IntegrityError:
            # The only constraint an insert can break is the tenant foreign key.
            raise NotFound("tenant not found", code="tenant_not_found") from None

    async def _insert(
        self, tenant_id: str, kind: str, payload: Mapping[str, Any], max_attempts: int
    ) -> Job:
        async with self._db.transaction() as s:
            now = await self._now(s)
            row = new_job_row(tenant_id, kind, payload, max_attempts=max_attempts, now=now)
            s.add(row)
            await s.flush()
            return job_from_row(row)

    async def get(self, tenant_id: str, job_id: str) -> Job | None:
        async with self._db.read() as s:
            row = await _tenant_row(s, tenant_id, job_id)
            return None if row is None else job_from_row(row)

    async def position(self, tenant_id: str, job_id: str) -> int | None:
        # One statement: the job (queued, the tenant's) and a correlated count of the
        # tenant's queued jobs before it, a range of ix_jobs_queue.
        ahead = aliased(JobRow)
        count = (
            select(func.count())
            .select_from(ahead)
            .where(
                ahead.tenant_id == tenant_id,
                ahead.status == "queued",
                tuple_(ahead.created_at, ahead.id) < tuple_(JobRow.created_at, JobRow.id),
            )
            .scalar_subquery()
        )
        query = select(count).where(
            JobRow.id == job_id, JobRow.tenant_id == tenant_id, JobRow.status == "queued"
        )
        async with self._db.read() as s:
            found = (await s.execute(query)).first()
        return None if found is None else int(found[0])

    async def list(
        self,
        tenant_id: str,
        *,
        status: JobStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        if not 1 <= limit <= 500:
            raise InvalidInput("limit must be between 1 and 500")
        if status is not None and status not in JOB_STATUSES:
            raise InvalidInput(f"unknown job status {status!r}")
        query = select(JobRow).where(JobRow.tenant_id == tenant_id)
        if status is not None:
            query = query.where(JobRow.status == status)
        query = newest_first(query, JobRow.created_at, JobRow.id, cursor).limit(limit + 1)
        async with self._db.read() as s:
            rows = (await s.scalars(query)).all()
        items = tuple(job_from_row(row) for row in rows[:limit])
        next_cursor = (
            encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
        )
        return JobPage(items=items, next_cursor=next_cursor)

    async def cancel(self, tenant_id: str, job_id: str) -> Job | None:
        async with self._db.transaction() as s:
            now = await self._now(s)
            row = await _tenant_row(s, tenant_id, job_id, lock=True)
            if row is None:
                return None
            if row.status == "queued":
                row.status = "cancelled"
                row.finished_at = now
                row.updated_at = now
                await self._finished(s, row)
            elif row.status == "running" and not row.cancel_requested:
                row.cancel_requested = True
                row.updated_at = now
            await s.flush()
            return job_from_row(row)

    async def retry(self, tenant_id: str, job_id: str) -> Job | None:
        async with self._db.transaction() as s:
            now = await self._now(s)
            row = await _tenant_row(s, tenant_id, job_id, lock=True)
            if row is None:
                return None
            if row.status not in ("failed", "cancelled"):
                raise Conflict(
                    f"only failed or cancelled jobs can be retried (this one is {row.status})",
                    code="job_not_retryable",
                )
            row.status = "queued"
            row.attempts = 0
            row.error = None
            row.stage = None
            row.progress_done = 0
            row.progress_total = 0
            row.cancel_requested = False
            row.lease_owner = None
            row.lease_expires_at = None
            row.run_after = now
            row.finished_at = None
            row.updated_at = now
            await s.flush()
            await announce_job(s, row.kind)
            return job_from_row(row)

    # -- workers ---------------------------------------------------------------------------

    async def claim(
        self, worker_id: str, kinds: Sequence[str], *, job_ids: Collection[str] | None = None
    ) -> Job | None:
        if not worker_id or len(worker_id) > 64:
            raise InvalidInput("worker_id must be 1 to 64 characters")
        if job_ids is not None and len(job_ids) > MAX_CLAIM_IDS:
            raise InvalidInput(f"a claim takes at most {MAX_CLAIM_IDS} job ids")
        if not kinds or (job_ids is not None and not job_ids):
            return None
        async with self._db.transaction() as s:
            now = await self._now(s)
            chosen: Select[Any] | None = None
            if job_ids is not None:
                # The claimer's own jobs (ragd ingest --local): oldest first, no fairness.
                chosen = (
                    select(JobRow)
                    .where(JobRow.kind.in_(list(kinds)), _due(now),
                           JobRow.id.in_(list(job_ids)))
                    .order_by(JobRow.created_at, JobRow.id)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                )
            while True:
                row: JobRow | None = (
                    await self._next_due(s, kinds, now) if chosen is None
                    else (await s.scalars(chosen)).first()
                )
                if row is None:
                    return None
                if row.status == "running":
                    # The previous owner died (or stalled past its lease) mid-attempt.
                    if row.cancel_requested:
                        _finish(row, "cancelled", now)
                        await self._finished(s, row)
                        continue
                    if row.attempts >= row.max_attempts:
                        _finish(row, "failed", now)
                        row.error = (
                            f"worker lost (lease expired) on attempt {row.attempts} "
                            f"of {row.max_attempts}"
                        )
                        await self._finished(s, row)
                        continue
                row.status = "running"
                row.lease_owner = worker_id
                row.lease_expires_at = now + self._lease
                row.claimed_at = now
                row.attempts += 1
                row.updated_at = now
                await s.flush()
                job = job_from_row(row)
                hook = self._finalisers.get(row.kind)
                if isinstance(hook, ClaimObserver):
                    await hook.claimed(s, job)
                return job

    async def _next_due(
        self, s: AsyncSession, kinds: Sequence[str], now: datetime
    ) -> JobRow | None:
        """The due job the fair ranking puts first among those this claimer can lock."""
        ranked = (await s.execute(_fair_candidates(tuple(kinds)), {_NOW: now})).all()
        for job_id, _ in ranked:
            row = (
                await s.scalars(_lockable(tuple(kinds)), {"job_id": job_id, _NOW: now})
            ).first()
            if row is not None:
                return row
        if s.get_bind().dialect.name != "postgresql":
            return None  # nothing is skipped on SQLite: every candidate was due
        # Other claimers hold every candidate: the next job of a tenant, in the same order.
        for tenant_id in dict.fromkeys(tenant_id for _, tenant_id in ranked):
            query = (
                select(JobRow)
                .where(
                    JobRow.tenant_id == tenant_id, JobRow.kind.in_(list(kinds)),
                    _queued_and_due(JobRow, now),
                )
                .order_by(JobRow.created_at, JobRow.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            row = (await s.scalars(query)).first()
            if row is not None:
                return row
        return None

    async def prune(self, older_than: timedelta) -> int:
        """Delete finished jobs (succeeded, failed, cancelled) that ended before
        ``now - older_than``; returns how many. Queued and running jobs are never touched.

        One statement, so no lock to take first: PostgreSQL checks its conditions again on a
        row another transaction is changing once that one commits (a job retried meanwhile
        is no longer finished, and stays)."""
        async with self._db.transaction() as s:
            cutoff = await self._now(s) - older_than
            result = await s.execute(
                delete(JobRow).where(
                    JobRow.status.in_(("succeeded", "failed", "cancelled")),
                    JobRow.finished_at < cutoff,
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def _finished(self, s: AsyncSession, row: JobRow) -> None:
        """A job ended failed or cancelled: run its kind's finaliser in the same transaction."""
        await s.flush()
        finaliser = self._finalisers.get(row.kind)
        if finaliser is not None:
            await finaliser(s, job_from_row(row))

    async def heartbeat(self, job_id: str, worker_id: str) -> bool:
        async with self._db.transaction() as s:
            now = await self._now(s)
            row = await _owned_row(s, job_id, worker_id)
            if row is None:
                return False
            row.lease_expires_at = now + self._lease
            row.updated_at = now
            return not row.cancel_requested

    async def is_cancel_requested(self, job_id: str) -> bool:
        async with self._db.read() as s:
            flag = await s.scalar(select(JobRow.cancel_requested).where(JobRow.id == job_id))
            return bool(flag)

    async def set_stage(
        self, job_id: str, worker_id: str, stage: str, done: int, total: int
    ) -> bool:
        async with self._db.transaction() as s:
            now = await self._now(s)
            row = await _owned_row(s, job_id, worker_id)
            if row is None:
                return False
            row.stage = stage
            row.progress_done = done
            row.progress_total = total
            # Reporting progress proves the worker is alive: extend the lease too.
            row.lease_expires_at = now + self._lease
            row.updated_at = now
            return True

    async def complete(
        self,
        job_id: str,
        worker_id: str,
        timings: Mapping[str, float] | None = None,
        *,
        stage: tuple[str, int, int] | None = None,
    ) -> bool:
        async with self._db.transaction() as s:
            now = await self._now(s)
            row = await _owned_row(s, job_id, worker_id)
            if row is None:
                return False
            mark_succeeded(row, now, timings, stage)
            await s.flush()
            finished = job_from_row(row)
        self._completed(finished)
        return True

    async def completed(self, tenant_id: str, job_id: str) -> None:
        """Tell the completion observer of a job that another transaction marked succeeded
        (:func:`mark_succeeded`: the version commit that also ends its ingest job)."""
        job = await self.get(tenant_id, job_id)
        if job is not None and job.status == "succeeded":
            self._completed(job)

    def _completed(self, job: Job) -> None:
        if self._on_complete is not None:
            try:
                self._on_complete(job)
            except Exception:  # noqa: BLE001 - an observer must not undo a recorded success
                logger.exception("job completion observer failed", extra={"job_id": job.id})

    async def depth(self) -> QueueDepth:
        """Jobs queued and running by kind, and those running past their lease (see
        :class:`QueueDepth`): a few aggregate reads over the status index, each bounded by
        :data:`DEPTH_SCAN_LIMIT` rows."""
        jobs: dict[tuple[JobStatus, str], int] = {}
        capped = False
        async with self._db.read() as s:
            now = await self._now(s)
            active: tuple[JobStatus, ...] = ("queued", "running")
            for status in active:
                scanned = (
                    select(JobRow.kind).where(JobRow.status == status)
                    .limit(DEPTH_SCAN_LIMIT).subquery()
                )
                rows = (await s.execute(
                    select(scanned.c.kind, func.count()).group_by(scanned.c.kind)
                )).all()
                counts = {str(kind): cast(int, count) for kind, count in rows}
                jobs.update(((status, kind), count) for kind, count in counts.items())
                capped = capped or sum(counts.values()) >= DEPTH_SCAN_LIMIT
            stuck = await _stuck(s, now)
        return QueueDepth(jobs=jobs, capped=capped, stuck=stuck.jobs,
                          stuck_for_seconds=stuck.for_seconds)

    async def stuck(self) -> Stuck:
        """Only the running jobs past their lease (one small read: a health check's)."""
        async with self._db.read() as s:
            return await _stuck(s, await self._now(s))

    async def fail(
        self, job_id: str, worker_id: str, error: str, *, retryable: bool = True
    ) -> bool:
        async with self._db.transaction() as s:
            now = await self._now(s)
            row = await _owned_row(s, job_id, worker_id)
            if row is None:
                return False
            row.error = error[:MAX_ERROR_CHARS]
            if row.cancel_requested:
                _finish(row, "cancelled", now)
                await self._finished(s, row)
            elif retryable and row.attempts < row.max_attempts:
                row.status = "queued"
                row.run_after = now + backoff_delay(row.attempts)
                row.lease_owner = None
                row.lease_expires_at = None
                row.updated_at = now
            else:
                _finish(row, "failed", now)
                await self._finished(s, row)
            return True

    async def release(self, job_id: str, worker_id: str, *, delay: timedelta) -> bool:
        async with self._db.transaction() as s:
            now = await self._now(s)
            row = await _owned_row(s, job_id, worker_id)
            if row is None:
                return False
            if row.cancel_requested:
                _finish(row, "cancelled", now)
                await self._finished(s, row)
                return True
            row.status = "queued"
            row.attempts = max(0, row.attempts - 1)
            row.run_after = now + delay
            row.lease_owner = None
            row.lease_expires_at = None
            row.updated_at = now
            if delay <= timedelta(0):
                await announce_job(s, row.kind)
            return True

    async def mark_cancelled(self, job_id: str, worker_id: str) -> bool:
        async with self._db.transaction() as s:
            now = await self._now(s)
            row = await _owned_row(s, job_id, worker_id)
            if row is None:
                return False
            _finish(row, "cancelled", now)
            await self._finished(s, row)
            return True


# -- helpers -------------------------------------------------------------------------------


#: The name of the bound parameter that carries the queue's time in cached statements.
_NOW = "now"


def _due(now: Any) -> Any:
    """Claimable at ``now``: queued and due (or never deferred: a producer's clock may be
    ahead of the queue's), or running on an expired lease."""
    return or_(
        _queued_and_due(JobRow, now),
        and_(JobRow.status == "running", JobRow.lease_expires_at <= now),
    )


def _queued_and_due(job: Any, now: Any) -> Any:
    return and_(
        job.status == "queued",
        or_(job.run_after <= now, and_(job.attempts == 0, job.run_after <= job.created_at)),
    )


def fair_candidates_query(kinds: Sequence[str], now: datetime) -> Select[str, str]:
    """:func:`_fair_candidates` with ``now`` bound (to compile or explain it)."""
    return _fair_candidates(tuple(kinds)).params({_NOW: now})


@functools.lru_cache(maxsize=16)
def _fair_candidates(kinds: tuple[str, ...]) -> Select[str, str]:
    """The jobs a fair claim may take (see :meth:`JobQueue.claim`), as (id, tenant id),
    best first: each tenant's oldest due queued job of ``kinds``, and every job of ``kinds``
    whose lease expired (few: one per dead worker), ranked by their tenant's running jobs
    (live leases), its latest claim (never first), then their age. Nothing is locked.

    Every read is an index step: the tenants with queued jobs come from a recursive loose
    scan of ``ix_jobs_queue`` (the first queued job of the next tenant after the previous
    one, in index order: one step per tenant however long its backlog); a tenant's oldest
    due job, running count, latest claim, and a candidate's age are look-ups by tenant or
    id. (A tenant whose queued jobs are all of other kinds costs a walk over them; every
    ragd worker handles every kind.)

    Built once per ``kinds``, with ``now`` a bound parameter: SQLAlchemy then compiles it
    once, where building it anew for every claim cost ~8 ms of the event loop (its cache
    key alone), inside the SQLite writer lane."""
    now = bindparam(_NOW, type_=UTCDateTime())

    def first_queued_tenant(after: Any) -> Any:
        scan = aliased(JobRow, name="scan")
        query = select(scan.tenant_id).where(scan.status == "queued")
        if after is not None:
            query = query.where(scan.tenant_id > after)
        # Ordered as ix_jobs_queue is (not min()), so a planner reads that index rather than
        # the tenant index filtered by status, which would step over finished jobs.
        return query.order_by(scan.tenant_id, scan.created_at, scan.id).limit(1)

    tenants = select(
        first_queued_tenant(None).scalar_subquery().label("tenant_id")
    ).cte("queued_tenants", recursive=True)
    tenants = tenants.union_all(
        select(first_queued_tenant(tenants.c.tenant_id).scalar_subquery())
        .where(tenants.c.tenant_id.is_not(None))
    )
    head = aliased(JobRow, name="head")
    oldest_due = (
        select(head.id)
        .where(
            head.tenant_id == tenants.c.tenant_id, head.kind.in_(kinds),
            _queued_and_due(head, now),
        )
        .order_by(head.created_at, head.id)
        .limit(1)
        .scalar_subquery()
    )
    expired = aliased(JobRow, name="expired")
    candidates = union_all(
        select(oldest_due.label("job_id"), tenants.c.tenant_id.label("tenant_id"))
        .where(tenants.c.tenant_id.is_not(None)),
        select(expired.id, expired.tenant_id).where(
            expired.status == "running", expired.lease_expires_at <= now,
            expired.kind.in_(kinds),
        ),
    ).cte("candidates")
    live = aliased(JobRow, name="live")
    running = (
        select(func.count())
        .select_from(live)
        .where(
            live.status == "running", live.tenant_id == candidates.c.tenant_id,
            live.lease_expires_at > now,
        )
        .scalar_subquery()
    )
    served = aliased(JobRow, name="served")
    last_claim = (
        select(served.claimed_at)
        .where(served.tenant_id == candidates.c.tenant_id, served.claimed_at.is_not(None))
        .order_by(served.claimed_at.desc())
        .limit(1)
        .scalar_subquery()
    )
    job = aliased(JobRow, name="job")
    age = select(job.created_at).where(job.id == candidates.c.job_id).scalar_subquery()
    return (
        select(candidates.c.job_id, candidates.c.tenant_id)
        .where(candidates.c.job_id.is_not(None))
        .order_by(running, last_claim.nulls_first(), age, candidates.c.job_id)
    )


@functools.lru_cache(maxsize=16)
def _lockable(kinds: tuple[str, ...]) -> Select[JobRow]:
    """The job (bound parameter ``job_id``), locked, if it is still due at ``now`` and no
    other claimer holds it (``SKIP LOCKED``). On PostgreSQL a row another claimer took since
    the ranking was read is checked again as that claimer committed it, and is no longer
    due."""
    now = bindparam(_NOW, type_=UTCDateTime())
    return (
        select(JobRow)
        .where(JobRow.id == bindparam("job_id"), JobRow.kind.in_(list(kinds)), _due(now))
        .with_for_update(skip_locked=True)
    )


async def _stuck(s: AsyncSession, now: datetime) -> Stuck:
    count, oldest = (await s.execute(
        select(func.count(), func.min(JobRow.lease_expires_at)).where(
            JobRow.status == "running", JobRow.lease_expires_at <= now
        )
    )).one()
    if oldest is None:
        return Stuck(jobs=int(count or 0), for_seconds=None)
    expired = oldest if oldest.tzinfo is not None else oldest.replace(tzinfo=UTC)
    return Stuck(jobs=int(count or 0), for_seconds=max(0.0, (now - expired).total_seconds()))


async def announce_job(session: AsyncSession, kind: str) -> None:
    """Tell the listening worker pools (PostgreSQL ``NOTIFY``, sent when the transaction of
    ``session`` commits, dropped if it rolls back; nothing on SQLite) that a ``kind`` job is
    due now."""
    await notify_on_commit(session, JOBS, kind)


@event.listens_for(JobRow, "after_insert")
def _announce_inserted(_mapper: Mapper[JobRow], connection: Connection, row: JobRow) -> None:
    """Every job row inserted, by the queue or by a producer in its own transaction
    (:func:`new_job_row`), is announced in that transaction: no producer can forget to.
    (A flush event gets the session's connection, not the session: the statement is
    :func:`announce_job`'s, sent directly.)"""
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_notify(:channel, :kind)"), {"channel": JOBS_CHANNEL, "kind": row.kind}
        )


async def _tenant_row(
    s: AsyncSession, tenant_id: str, job_id: str, *, lock: bool = False
) -> JobRow | None:
    """The tenant's job; ``lock``: read through its row lock, for a write that depends on
    its state (see :class:`SqlJobQueue`)."""
    query = select(JobRow).where(JobRow.id == job_id, JobRow.tenant_id == tenant_id)
    return (await s.scalars(_locked(query) if lock else query)).first()


async def _owned_row(s: AsyncSession, job_id: str, worker_id: str) -> JobRow | None:
    """The job, locked, if ``worker_id`` still holds its lease.

    An expired lease that nobody has taken over yet still counts as held: the worker is
    evidently alive, and letting it finish is better than wasting the attempt. Holding the
    row lock keeps it that way until the write commits (a claimer skips the row); a claim
    that took the lease over first is waited for, and then the job is not the worker's.
    """
    query = select(JobRow).where(
        JobRow.id == job_id, JobRow.status == "running", JobRow.lease_owner == worker_id
    )
    return (await s.scalars(_locked(query))).first()


def _locked(query: Select[JobRow]) -> Select[JobRow]:
    """``query`` reading its rows through their locks (``FOR UPDATE``; nothing on SQLite),
    the values as the last writer committed them even if this session had loaded them."""
    return query.with_for_update().execution_options(populate_existing=True)


def mark_succeeded(
    row: JobRow, now: datetime, timings: Mapping[str, float] | None = None,
    stage: tuple[str, int, int] | None = None,
) -> None:
    """End a running job as succeeded, in the caller's transaction (the caller checked the
    lease: :meth:`SqlJobQueue.complete`, or the version commit of an ingest job, which then
    calls :meth:`SqlJobQueue.completed`)."""
    if stage is not None:
        row.stage, row.progress_done, row.progress_total = stage
    _finish(row, "succeeded", now)
    row.error = None
    row.timings = json.dumps(dict(timings or {}), separators=(",", ":"))


def _finish(row: JobRow, status: JobStatus, now: datetime) -> None:
    row.status = status
    row.finished_at = now
    row.updated_at = now
    row.lease_owner = None
    row.lease_expires_at = None


def new_job_row(
    tenant_id: str, kind: str, payload: Mapping[str, Any], *, max_attempts: int = 3,
    now: datetime | None = None,
) -> JobRow:
    """A queued job row, for producers that enqueue inside their own transaction (so the
    job exists if and only if the change that needs it was committed)."""
    now = now or utcnow()
    return JobRow(
        tenant_id=tenant_id,
        kind=kind,
        payload=json.dumps(dict(payload), separators=(",", ":")),
        status="queued",
        progress_done=0,
        progress_total=0,
        attempts=0,
        max_attempts=max_attempts,
        run_after=now,
        cancel_requested=False,
        timings="{}",
        created_at=now,
        updated_at=now,
    )


def job_from_row(row: JobRow) -> Job:
    """The immutable :class:`Job` snapshot of a row."""
    return Job(
        id=row.id,
        tenant_id=row.tenant_id,
        kind=row.kind,
        payload=json.loads(row.payload),
        status=cast(JobStatus, row.status),
        stage=row.stage,
        progress_done=row.progress_done,
        progress_total=row.progress_total,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        error=row.error,
        run_after=row.run_after,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        cancel_requested=row.cancel_requested,
        timings=json.loads(row.timings),
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_MAX",
    "DEPTH_SCAN_LIMIT",
    "JOBS_CHANNEL",
    "JOB_STATUSES",
    "MAX_CLAIM_IDS",
    "ClaimObserver",
    "Clock",
    "CompletionObserver",
    "Job",
    "JobPage",
    "JobQueue",
    "JobStatus",
    "QueueDepth",
    "SqlJobQueue",
    "Stuck",
    "announce_job",
    "backoff_delay",
    "fair_candidates_query",
    "job_from_row",
    "new_job_row",
]
