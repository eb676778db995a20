"""The job queue's read-then-write under concurrency: a worker whose lease was taken over, a
cancel or a retry racing a claim, a retry racing a prune.

Every write of the queue decides on the job row it read: whose lease it is, whether the job
is queued, running or finished. On SQLite one writer holds the whole database, so what was
read still holds at the write. On PostgreSQL (READ COMMITTED, many writers) the row may
change in between: a stale worker's complete would end the new owner's attempt, a cancel
would mark a job cancelled that a worker just claimed. So the queue reads the row through
its lock. Two kinds of test, as in ``test_races.py``:

* **storms**, on every backend: the racing operations at once through two engines (two
  processes); the rule must hold whatever the interleaving;
* **staged races**, on PostgreSQL: one operation is parked just before it commits, holding
  the job row (:class:`Parking`), its rival starts and is seen waiting for the row in
  ``pg_stat_activity``, then the first commits. The interleaving that broke each rule is
  forced every run; nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from ragd.db.engine import Database
from ragd.errors import Conflict
from ragd.jobs.factory import ManagedJobQueue
from ragd.jobs.queue import Job
from tests.contracts.backends import PostgresBackend
from tests.contracts.conftest import Clock
from tests.contracts.site import Site, open_site
from tests.postgres import PostgresServer
from tests.waiting import eventually

KIND = "test"
LEASE = 30
T = TypeVar("T")


def _start(call: Awaitable[T]) -> asyncio.Task[T]:
    async def run() -> T:
        return await call

    return asyncio.create_task(run())


async def _get(queue: ManagedJobQueue, tenant: str, job_id: str) -> Job:
    job = await queue.get(tenant, job_id)
    assert job is not None
    return job


# == storms: every backend =====================================================================


async def test_stale_workers_completing_while_others_take_over_never_both_win(
    site: Site, tenant: str, clock: Clock
) -> None:
    old = site.queue(clock=clock, lease_seconds=LEASE)
    new = site.another_process().queue(clock=clock, lease_seconds=LEASE)
    jobs = [(await old.enqueue(tenant, KIND, {"i": i})).id for i in range(8)]
    for i in range(8):
        assert (await old.claim(f"old-{i}", [KIND])) is not None
    owners = {job.id: job.lease_owner for job in (await old.list(tenant, limit=10)).items}
    clock.advance(LEASE + 1)  # every old worker went silent past its lease

    completes = [old.complete(job_id, str(owners[job_id])) for job_id in jobs]
    claims = [new.claim(f"new-{i}", [KIND]) for i in range(8)]
    results = await asyncio.gather(*(c for pair in zip(completes, claims, strict=True)
                                     for c in pair))
    completed = dict(zip(jobs, results[0::2], strict=True))
    taken = {job.id: job for job in results[1::2] if isinstance(job, Job)}
    for job_id in jobs:
        current = await _get(old, tenant, job_id)
        # Exactly one of them won: the old worker finished it, or the new one owns it.
        assert completed[job_id] is not (job_id in taken), (current, completed[job_id])
        if job_id in taken:
            assert (current.status, current.lease_owner, current.attempts) == (
                "running", taken[job_id].lease_owner, 2
            )
            assert current.lease_expires_at == taken[job_id].lease_expires_at
        else:
            assert (current.status, current.lease_owner) == ("succeeded", None)


async def test_cancels_racing_claims_leave_no_cancelled_job_with_an_owner(
    site: Site, tenant: str, clock: Clock
) -> None:
    api = site.queue(clock=clock)
    workers = site.another_process().queue(clock=clock)
    jobs = [(await api.enqueue(tenant, KIND, {"i": i})).id for i in range(8)]
    cancels = [api.cancel(tenant, job_id) for job_id in jobs]
    claims = [workers.claim(f"w{i}", [KIND]) for i in range(8)]
    results = await asyncio.gather(*(c for pair in zip(cancels, claims, strict=True)
                                     for c in pair))
    taken = {job.id: job.lease_owner for job in results[1::2] if isinstance(job, Job)}
    for job_id in jobs:
        current = await _get(api, tenant, job_id)
        if job_id in taken:  # claimed before the cancel: the worker is asked to stop
            assert (current.status, current.lease_owner, current.cancel_requested) == (
                "running", taken[job_id], True
            )
            assert current.finished_at is None
        else:  # cancelled before any claim: nobody ever ran it
            assert (current.status, current.lease_owner, current.attempts) == (
                "cancelled", None, 0
            )
            assert current.finished_at is not None


# == staged races: PostgreSQL ==================================================================


class Parking(Database):
    """An engine whose write transactions stop just before they commit (their writes sent,
    their row locks held) until :attr:`go` is set; :attr:`parked` says one got there."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.parked = asyncio.Event()
        self.go = asyncio.Event()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        async with super().transaction() as session:
            yield session
            await session.flush()
            self.parked.set()
            await self.go.wait()


@dataclass
class Stage:
    """One deployment on PostgreSQL: ``one`` and ``two`` are two processes' queues on one
    clock, ``parking`` a third process's queue whose writes park before they commit."""

    site: Site
    clock: Clock
    one: ManagedJobQueue
    two: ManagedJobQueue
    parking: ManagedJobQueue
    _parking_db: Parking
    tenant: str = ""

    async def while_parked(
        self, first: Awaitable[T], rival: Callable[[], Awaitable[Any]]
    ) -> tuple[T, Any]:
        """Run ``first`` on the parking process up to its commit, then ``rival`` until it
        finishes or waits for a lock, then let ``first`` commit; both results."""
        db = self._parking_db
        parked = _start(first)
        await eventually(lambda: db.parked.is_set() or parked.done(),
                         what="the first operation to park before its commit")
        assert not parked.done(), parked.result()
        racing = _start(rival())
        await eventually(lambda: self._settled(racing),
                         what="the rival to finish or wait for the parked row")
        db.go.set()
        return await parked, await racing

    async def _settled(self, task: asyncio.Task[Any]) -> bool:
        if task.done():
            return True
        async with self.site.db.engine.connect() as conn:
            waiting = (await conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ))).scalar_one()
        return int(waiting) >= 1


@pytest.fixture
async def stage(postgres: PostgresServer, tmp_path: Path) -> AsyncIterator[Stage]:
    # ``postgres`` (a session fixture outside the event loop) has started the server.
    site = await open_site(PostgresBackend(), tmp_path / "data")
    parking = Parking(site.settings.database_url)
    clock = Clock()

    def queue(db: Database) -> ManagedJobQueue:
        return site.backend.queue(db, lease_seconds=LEASE, clock=clock, finalisers={})

    try:
        staged = Stage(site, clock, queue(site.db), queue(site.another_process().db),
                       queue(parking), parking)
        staged.tenant = (await site.identity().create_tenant("acme")).id
        yield staged
    finally:
        parking.go.set()
        await parking.dispose()
        await site.close()


#: What a worker may do with its job, each refused once another worker took the lease over.
WORKER_CALLS: dict[str, Callable[[ManagedJobQueue, str, str], Awaitable[bool]]] = {
    "heartbeat": lambda q, job, w: q.heartbeat(job, w),
    "set_stage": lambda q, job, w: q.set_stage(job, w, "embed", 1, 2),
    "complete": lambda q, job, w: q.complete(job, w, {"embed": 1.0}),
    "fail": lambda q, job, w: q.fail(job, w, "late"),
    "fail_final": lambda q, job, w: q.fail(job, w, "late", retryable=False),
    "mark_cancelled": lambda q, job, w: q.mark_cancelled(job, w),
    "release": lambda q, job, w: q.release(job, w, delay=timedelta(seconds=5)),
}


@pytest.mark.parametrize("call", sorted(WORKER_CALLS))
async def test_a_stale_worker_cannot_touch_the_job_a_claim_just_took_over(
    stage: Stage, call: str
) -> None:
    job = await stage.one.enqueue(stage.tenant, KIND, {})
    assert (await stage.one.claim("worker-a", [KIND])) is not None
    stage.clock.advance(LEASE + 1)  # worker-a stalled past its lease
    # worker-b's claim takes the job over and parks before committing; worker-a, awake again,
    # calls the queue meanwhile and waits for the row.
    taken, stale = await stage.while_parked(
        stage.parking.claim("worker-b", [KIND]),
        lambda: WORKER_CALLS[call](stage.two, job.id, "worker-a"),
    )
    assert taken is not None and taken.id == job.id and taken.lease_owner == "worker-b"
    assert stale is False
    current = await _get(stage.one, stage.tenant, job.id)
    assert (current.status, current.lease_owner, current.attempts) == ("running", "worker-b", 2)
    assert current.lease_expires_at == taken.lease_expires_at
    assert (current.stage, current.error, current.finished_at) == (None, None, None)
    assert await stage.one.complete(job.id, "worker-b") is True


async def test_a_cancel_racing_a_claim_asks_the_new_owner_to_stop(stage: Stage) -> None:
    job = await stage.one.enqueue(stage.tenant, KIND, {})
    taken, cancelled = await stage.while_parked(
        stage.parking.claim("worker-b", [KIND]),
        lambda: stage.two.cancel(stage.tenant, job.id),
    )
    assert taken is not None and taken.id == job.id
    assert isinstance(cancelled, Job)
    assert (cancelled.status, cancelled.cancel_requested) == ("running", True)
    current = await _get(stage.one, stage.tenant, job.id)
    assert (current.status, current.lease_owner, current.cancel_requested) == (
        "running", "worker-b", True
    )
    assert current.finished_at is None
    # The owner hears it at its next heartbeat and stops.
    assert await stage.one.heartbeat(job.id, "worker-b") is False
    assert await stage.one.mark_cancelled(job.id, "worker-b") is True
    assert (await _get(stage.one, stage.tenant, job.id)).status == "cancelled"


async def test_a_claim_racing_a_cancel_passes_the_job_by(stage: Stage) -> None:
    job = await stage.one.enqueue(stage.tenant, KIND, {})
    cancelled, taken = await stage.while_parked(
        stage.parking.cancel(stage.tenant, job.id),
        lambda: stage.two.claim("worker-b", [KIND]),
    )
    assert cancelled is not None and cancelled.status == "cancelled"
    assert taken is None  # it skipped the row being cancelled
    assert await stage.two.claim("worker-b", [KIND]) is None
    current = await _get(stage.one, stage.tenant, job.id)
    assert (current.status, current.lease_owner, current.attempts) == ("cancelled", None, 0)


async def _failed_job(stage: Stage) -> str:
    job = await stage.one.enqueue(stage.tenant, KIND, {}, max_attempts=1)
    assert (await stage.one.claim("worker-a", [KIND])) is not None
    assert await stage.one.fail(job.id, "worker-a", "broken") is True
    return job.id


async def test_two_retries_at_once_queue_the_job_once(stage: Stage) -> None:
    job_id = await _failed_job(stage)
    first, second = await stage.while_parked(
        stage.parking.retry(stage.tenant, job_id),
        lambda: _outcome(stage.two.retry(stage.tenant, job_id)),
    )
    assert first is not None and first.status == "queued"
    # The second retry saw the job queued (claimable, perhaps already claimed): refused.
    assert isinstance(second, Conflict) and second.code == "job_not_retryable"


async def test_a_retry_racing_a_prune_finds_the_job_gone(stage: Stage) -> None:
    job_id = await _failed_job(stage)
    stage.clock.advance(3600)
    pruned, retried = await stage.while_parked(
        stage.parking.prune(timedelta(minutes=30)),
        lambda: _outcome(stage.two.retry(stage.tenant, job_id)),
    )
    assert pruned == 1
    assert retried is None
    assert await stage.one.get(stage.tenant, job_id) is None


async def _outcome(call: Awaitable[T]) -> T | BaseException:
    """``call``'s result, or the exception it raised (to assert on)."""
    try:
        return await call
    except Exception as exc:  # noqa: BLE001 - returned for the test to inspect
        return exc


async def test_a_claim_passes_a_tenants_held_job_by_for_the_next_tenants(stage: Stage) -> None:
    """Fair claims racing: the first claim holds A's oldest job (parked before its commit);
    the second, which ranked A first too, finds that job locked and takes B's, not A's next.
    A third, with both held, takes A's next job."""
    other = (await stage.site.identity().create_tenant("globex")).id
    a1 = await stage.one.enqueue(stage.tenant, KIND, {"n": 1})
    a2 = await stage.one.enqueue(stage.tenant, KIND, {"n": 2})
    b1 = await stage.one.enqueue(other, KIND, {"n": 1})

    async def two_more() -> tuple[Job | None, Job | None]:
        second = await stage.two.claim("worker-b", [KIND])
        return second, await stage.one.claim("worker-c", [KIND])

    first, (second, third) = await stage.while_parked(
        stage.parking.claim("worker-a", [KIND]), two_more
    )
    assert first is not None and first.id == a1.id
    assert second is not None and second.id == b1.id
    assert third is not None and third.id == a2.id
