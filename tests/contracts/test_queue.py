"""The job queue contract (:class:`~ragd.jobs.queue.JobQueue`, plus ``prune``), run against
every backend: leases, fencing, backoff, release, cancellation, retry, tenants, and claims
racing across coroutines and across real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

import ragd.jobs.queue as queue_module
from ragd.errors import Conflict, InvalidInput, NotFound
from ragd.jobs.factory import ManagedJobQueue
from ragd.jobs.queue import MAX_CLAIM_IDS, Job, new_job_row
from tests.contracts.conftest import Clock
from tests.contracts.site import Site
from tests.waiting import HANG_TIMEOUT

KIND = "test"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def queue(site: Site, clock: Clock) -> ManagedJobQueue:
    """The queue on the test's clock (every job here is enqueued by the queue itself)."""
    return site.queue(clock=clock)


async def _claim(queue: ManagedJobQueue, worker: str = "w1") -> Job:
    job = await queue.claim(worker, [KIND])
    assert job is not None
    return job


async def _get(queue: ManagedJobQueue, tenant: str, job_id: str) -> Job:
    job = await queue.get(tenant, job_id)
    assert job is not None
    return job


# -- the happy path ---------------------------------------------------------------------------


async def test_enqueue_claim_complete(queue: ManagedJobQueue, tenant: str) -> None:
    job = await queue.enqueue(tenant, KIND, {"document_id": "d1", "n": [1, 2]})
    assert job.status == "queued" and job.attempts == 0 and job.lease_owner is None
    assert job.payload == {"document_id": "d1", "n": [1, 2]}

    claimed = await _claim(queue, "w1")
    assert claimed.id == job.id
    assert claimed.status == "running"
    assert claimed.attempts == 1
    assert claimed.lease_owner == "w1"
    assert claimed.lease_expires_at is not None and claimed.lease_expires_at > claimed.updated_at
    assert await queue.claim("w2", [KIND]) is None  # leased, not due

    assert await queue.set_stage(job.id, "w1", "parse", 3, 10) is True
    staged = await _get(queue, tenant, job.id)
    assert (staged.stage, staged.progress_done, staged.progress_total) == ("parse", 3, 10)
    assert await queue.heartbeat(job.id, "w1") is True

    assert await queue.complete(job.id, "w1", {"parse": 0.5, "embed": 1.25}) is True
    done = await _get(queue, tenant, job.id)
    assert done.status == "succeeded"
    assert done.timings == {"parse": 0.5, "embed": 1.25}
    assert done.finished_at is not None and done.lease_owner is None
    assert await queue.claim("w1", [KIND]) is None
    # Finished: worker calls are refused.
    assert await queue.complete(job.id, "w1") is False
    assert await queue.heartbeat(job.id, "w1") is False


async def test_claims_are_fifo_and_filtered_by_kind(queue: ManagedJobQueue, tenant: str) -> None:
    ids = [(await queue.enqueue(tenant, KIND, {"i": i})).id for i in range(5)]
    other = await queue.enqueue(tenant, "other", {})
    claimed = [(await _claim(queue)).id for _ in range(5)]
    assert claimed == ids
    assert await queue.claim("w1", [KIND]) is None
    assert await queue.claim("w1", []) is None
    assert (await _claim_kind(queue, "other")).id == other.id


async def _claim_kind(queue: ManagedJobQueue, kind: str) -> Job:
    job = await queue.claim("w1", [kind])
    assert job is not None
    return job


# -- claims restricted to job ids, queue positions ----------------------------------------------


async def test_a_claim_restricted_to_job_ids_takes_only_those(
    queue: ManagedJobQueue, tenant: str, other_tenant: str, clock: Clock
) -> None:
    """A client running its own jobs (``ragd ingest --local``) leaves the backlog alone."""
    backlog = [await queue.enqueue(other_tenant, KIND, {}), await queue.enqueue(tenant, KIND, {})]
    mine = [(await queue.enqueue(tenant, KIND, {"i": i})).id for i in range(3)]
    later = await queue.enqueue(tenant, KIND, {})

    assert await queue.claim("w1", [KIND], job_ids=[]) is None
    assert await queue.claim("w1", ["other"], job_ids=mine) is None  # kinds still apply
    claimed = [
        job.id for job in [await queue.claim("w1", [KIND], job_ids=set(mine)) for _ in mine]
        if job is not None
    ]
    assert claimed == mine  # oldest first among the ids given
    assert await queue.claim("w1", [KIND], job_ids=mine) is None
    for job in [*backlog, later]:
        assert (await _get(queue, job.tenant_id, job.id)).status == "queued"

    # A restricted claimer takes over an expired lease only on its own jobs.
    clock.advance(31)
    assert await queue.claim("w2", [KIND], job_ids=[later.id]) is not None
    retaken = await queue.claim("w2", [KIND], job_ids=mine[:1])
    assert retaken is not None and retaken.id == mine[0] and retaken.attempts == 2

    with pytest.raises(InvalidInput):
        await queue.claim("w1", [KIND], job_ids=[f"j{i}" for i in range(MAX_CLAIM_IDS + 1)])
    # The bound itself is accepted (the statement takes that many ids on every backend).
    many = [f"j{i}" for i in range(MAX_CLAIM_IDS - 1)] + [backlog[1].id]
    bounded = await queue.claim("w1", [KIND], job_ids=many)
    assert bounded is not None and bounded.id == backlog[1].id
    # Unrestricted claims still see the whole queue.
    assert (await _claim(queue)).id == backlog[0].id


async def test_position_counts_the_tenants_queued_jobs_ahead(
    queue: ManagedJobQueue, tenant: str, other_tenant: str, clock: Clock
) -> None:
    mine = []
    theirs = []
    for i in range(3):  # interleaved with another tenant's jobs, which never count
        mine.append(await queue.enqueue(tenant, KIND if i else "other", {"i": i}))
        theirs.append(await queue.enqueue(other_tenant, KIND, {"i": i}))
    assert [await queue.position(tenant, j.id) for j in mine] == [0, 1, 2]  # any kind counts
    assert [await queue.position(other_tenant, j.id) for j in theirs] == [0, 1, 2]
    # Another tenant's job, or no job: no position, as for a job that is not queued.
    assert await queue.position(other_tenant, mine[0].id) is None
    assert await queue.position(tenant, "no-such-job") is None

    # The first one runs: it has no position, and the others move up.
    assert (await _claim_kind(queue, "other")).id == mine[0].id
    assert [await queue.position(tenant, j.id) for j in mine] == [None, 0, 1]
    # It fails and is queued again (backing off): it is ahead again, as its age says.
    assert await queue.fail(mine[0].id, "w1", "boom") is True
    assert [await queue.position(tenant, j.id) for j in mine] == [0, 1, 2]
    # Cancelled and finished jobs do not count.
    await queue.cancel(tenant, mine[1].id)
    assert [await queue.position(tenant, j.id) for j in mine] == [0, None, 1]
    clock.advance(10)
    assert (await _claim_kind(queue, "other")).id == mine[0].id
    assert await queue.complete(mine[0].id, "w1") is True
    assert [await queue.position(tenant, j.id) for j in mine] == [None, None, 0]
    assert [await queue.position(other_tenant, j.id) for j in theirs] == [0, 1, 2]


async def test_position_of_jobs_created_at_the_same_instant_follows_claim_order(
    site: Site, queue: ManagedJobQueue, tenant: str
) -> None:
    """Jobs a producer adds in its own transaction may share a timestamp; claims then take
    them by id, and the positions say the same."""
    same = datetime(2026, 1, 1, tzinfo=UTC)
    async with site.db.transaction() as s:
        rows = [new_job_row(tenant, KIND, {"i": i}, now=same) for i in range(4)]
        s.add_all(rows)
        await s.flush()
        ids = [row.id for row in rows]
    positions = {job_id: await queue.position(tenant, job_id) for job_id in ids}
    claim_order = [(await _claim(queue)).id for _ in ids]
    assert [positions[job_id] for job_id in claim_order] == [0, 1, 2, 3]


# -- retries ----------------------------------------------------------------------------------


async def test_backoff_then_failed_after_max_attempts(
    queue: ManagedJobQueue, tenant: str, clock: Clock
) -> None:
    job = await queue.enqueue(tenant, KIND, {}, max_attempts=3)

    for attempt, delay in ((1, 2), (2, 4)):
        claimed = await _claim(queue)
        assert claimed.attempts == attempt
        assert await queue.fail(job.id, "w1", f"boom {attempt}") is True
        requeued = await _get(queue, tenant, job.id)
        assert requeued.status == "queued" and requeued.error == f"boom {attempt}"
        assert requeued.lease_owner is None
        assert requeued.run_after - requeued.updated_at == timedelta(seconds=delay)
        clock.advance(delay - 0.1)
        assert await queue.claim("w1", [KIND]) is None  # still backing off
        clock.advance(0.2)

    last = await _claim(queue)
    assert last.attempts == 3
    assert await queue.fail(job.id, "w1", "boom 3") is True
    failed = await _get(queue, tenant, job.id)
    assert failed.status == "failed" and failed.error == "boom 3"
    assert failed.finished_at is not None
    clock.advance(3600)
    assert await queue.claim("w1", [KIND]) is None


async def test_non_retryable_failure_is_final(queue: ManagedJobQueue, tenant: str) -> None:
    job = await queue.enqueue(tenant, KIND, {}, max_attempts=5)
    await _claim(queue)
    assert await queue.fail(job.id, "w1", "not a PDF", retryable=False) is True
    failed = await _get(queue, tenant, job.id)
    assert (failed.status, failed.error, failed.attempts) == ("failed", "not a PDF", 1)


async def test_a_released_job_keeps_its_attempts_and_waits_its_delay(
    queue: ManagedJobQueue, tenant: str, clock: Clock
) -> None:
    """A busy database is no fault of the job: released three times on its last allowed
    attempt, it is neither failed nor counted."""
    job = await queue.enqueue(tenant, KIND, {}, max_attempts=1)
    for _ in range(3):
        claimed = await _claim(queue)
        assert claimed.attempts == 1
        assert await queue.release(job.id, "w1", delay=timedelta(seconds=2)) is True
        back = await _get(queue, tenant, job.id)
        assert (back.status, back.attempts, back.lease_owner) == ("queued", 0, None)
        assert back.run_after - back.updated_at == timedelta(seconds=2)
        clock.advance(1.9)
        assert await queue.claim("w1", [KIND]) is None  # not due yet
        clock.advance(0.2)
    await _claim(queue)
    assert await queue.release(job.id, "someone-else", delay=timedelta(seconds=2)) is False
    assert await queue.complete(job.id, "w1") is True


async def test_releasing_a_job_whose_cancel_was_requested_cancels_it(
    queue: ManagedJobQueue, tenant: str
) -> None:
    job = await queue.enqueue(tenant, KIND, {})
    await _claim(queue)
    assert await queue.cancel(tenant, job.id) is not None
    assert await queue.release(job.id, "w1", delay=timedelta(seconds=2)) is True
    assert (await _get(queue, tenant, job.id)).status == "cancelled"


# -- leases -----------------------------------------------------------------------------------


async def test_expired_lease_is_reclaimed_and_old_worker_is_fenced(
    site: Site, tenant: str, clock: Clock
) -> None:
    a = site.queue(clock=clock)
    b = site.another_process().queue(clock=clock)
    job = await a.enqueue(tenant, KIND, {})
    await _claim(a, "worker-a")

    clock.advance(20)
    assert await b.claim("worker-b", [KIND]) is None  # lease still valid
    assert await a.heartbeat(job.id, "worker-a") is True  # extends to +30 from now
    clock.advance(20)
    assert await b.claim("worker-b", [KIND]) is None

    clock.advance(11)  # worker-a went silent past its lease
    taken = await b.claim("worker-b", [KIND])
    assert taken is not None and taken.id == job.id
    assert taken.lease_owner == "worker-b" and taken.attempts == 2

    # worker-a wakes up: every state change is refused and nothing moves.
    assert await a.heartbeat(job.id, "worker-a") is False
    assert await a.set_stage(job.id, "worker-a", "embed", 1, 1) is False
    assert await a.complete(job.id, "worker-a") is False
    assert await a.fail(job.id, "worker-a", "late") is False
    assert await a.mark_cancelled(job.id, "worker-a") is False
    current = await _get(a, tenant, job.id)
    assert (current.status, current.lease_owner, current.stage, current.error) == (
        "running", "worker-b", None, None
    )

    assert await b.complete(job.id, "worker-b") is True
    assert (await _get(b, tenant, job.id)).status == "succeeded"


async def test_lost_lease_on_last_attempt_fails_the_job(
    queue: ManagedJobQueue, tenant: str, clock: Clock
) -> None:
    job = await queue.enqueue(tenant, KIND, {}, max_attempts=1)
    await _claim(queue, "crashy")
    clock.advance(31)
    assert await queue.claim("w2", [KIND]) is None
    failed = await _get(queue, tenant, job.id)
    assert failed.status == "failed"
    assert failed.error is not None and "lease expired" in failed.error


async def test_twenty_concurrent_claimers_get_distinct_jobs(
    queue: ManagedJobQueue, tenant: str
) -> None:
    ids = {(await queue.enqueue(tenant, KIND, {"i": i})).id for i in range(20)}

    first_round = await asyncio.gather(*(queue.claim(f"w{i}", [KIND]) for i in range(20)))
    claimed = [job.id for job in first_round if job is not None]
    assert len(claimed) == 20 and set(claimed) == ids

    # And draining a larger queue with 20 looping workers claims every job exactly once.
    more = {(await queue.enqueue(tenant, KIND, {"i": i})).id for i in range(60)}

    async def worker(name: str) -> list[str]:
        got: list[str] = []
        while (job := await queue.claim(name, [KIND])) is not None:
            got.append(job.id)
            assert await queue.complete(job.id, name) is True
        return got

    results = await asyncio.gather(*(worker(f"loop-{i}") for i in range(20)))
    all_claimed = [job_id for got in results for job_id in got]
    assert sorted(all_claimed) == sorted(more)


# -- real processes ---------------------------------------------------------------------------

#: A child process builds the backend's queue the way the suite does (run from the repository
#: root, so ``tests`` imports).
_QUEUE = textwrap.dedent(
    """
    from ragd.db.engine import Database
    from ragd.db.tables import utcnow
    from tests.contracts.backends import BACKENDS

    def open_queue(backend: str, url: str, lease_seconds: float = 30):
        db = Database(url)
        queue = BACKENDS[backend]().queue(
            db, lease_seconds=lease_seconds, clock=utcnow, finalisers={}
        )
        return db, queue
    """
)

_DRAIN_SCRIPT = _QUEUE + textwrap.dedent(
    """
    import asyncio, sys

    def say(word: str) -> None:
        sys.stdout.write(word + "\\n")
        sys.stdout.flush()

    def hear(word: str) -> None:
        line = sys.stdin.readline().strip()
        if line != word:
            raise SystemExit(f"expected {word!r} from the test, got {line!r}")

    async def main(backend: str, url: str, worker: str) -> None:
        db, queue = open_queue(backend, url)
        await db.ping()
        say("ready")
        hear("go")
        claimed = []
        while (job := await queue.claim(worker, ["test"])) is not None:
            claimed.append(job.id)
            if len(claimed) == 1:
                say("holding")  # both processes hold a job before either drains on
                hear("drain")
            assert await queue.complete(job.id, worker)
        await db.dispose()
        say(" ".join(claimed))

    asyncio.run(main(*sys.argv[1:]))
    """
)

_CLAIM_AND_HANG_SCRIPT = _QUEUE + textwrap.dedent(
    """
    import asyncio, sys

    async def main(backend: str, url: str) -> None:
        db, queue = open_queue(backend, url, lease_seconds=3600)
        job = await queue.claim("doomed", ["test"])
        sys.stdout.write(f"{job.id if job else ''}\\n")
        sys.stdout.flush()
        await asyncio.Event().wait()  # "working" until killed, never heartbeating

    asyncio.run(main(*sys.argv[1:]))
    """
)


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _expect(proc: subprocess.Popen[str], word: str) -> None:
    """The child's next line is ``word`` (its stderr otherwise)."""
    assert proc.stdout is not None and proc.stderr is not None
    async with asyncio.timeout(HANG_TIMEOUT):
        line = await asyncio.to_thread(proc.stdout.readline)
    if line.strip() != word:
        proc.kill()
        raise AssertionError(f"expected {word!r}, got {line!r}: {proc.stderr.read()}")


def _tell(procs: list[subprocess.Popen[str]], word: str) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(word + "\n")
        proc.stdin.flush()


@pytest.mark.slow
async def test_two_processes_never_claim_the_same_job(
    site: Site, queue: ManagedJobQueue, tenant: str
) -> None:
    ids = {(await queue.enqueue(tenant, KIND, {"i": i})).id for i in range(50)}
    url = site.settings.database_url
    procs = [_spawn(_DRAIN_SCRIPT, site.backend.name, url, f"proc-{n}") for n in range(2)]
    try:
        # Both import and connect, then start together so their claims interleave; each then
        # holds its first job until the other holds one too, so neither drains alone.
        for proc in procs:
            await _expect(proc, "ready")
        _tell(procs, "go")
        for proc in procs:
            await _expect(proc, "holding")
        _tell(procs, "drain")
        outputs = await asyncio.gather(
            *(asyncio.to_thread(p.communicate, timeout=HANG_TIMEOUT) for p in procs)
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    per_process = [out.split() for out, _ in outputs]
    claimed = [job_id for got in per_process for job_id in got]
    assert len(claimed) == len(set(claimed)) == 50
    assert all(per_process), "one process drained the queue alone: no race was tested"
    assert set(claimed) == ids
    page = await queue.list(tenant, status="succeeded", limit=100)
    assert len(page.items) == 50


@pytest.mark.slow
async def test_killed_worker_job_is_reclaimed_after_lease_expiry(
    site: Site, tenant: str
) -> None:
    queue = site.queue(lease_seconds=3600)
    job = await queue.enqueue(tenant, KIND, {"doc": "x"})
    proc = _spawn(_CLAIM_AND_HANG_SCRIPT, site.backend.name, site.settings.database_url)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(HANG_TIMEOUT):
            line = await asyncio.to_thread(proc.stdout.readline)
        assert line.strip() == job.id, proc.stderr.read() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, HANG_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    orphan = await _get(queue, tenant, job.id)
    assert (orphan.status, orphan.lease_owner) == ("running", "doomed")

    # While its hour-long lease runs, nobody else may take the dead worker's job ...
    assert await queue.claim("survivor", [KIND]) is None
    # ... and once it has run out (a survivor whose clock is past it), the next claim does.
    later = site.queue(
        lease_seconds=3600, clock=lambda: datetime.now(UTC) + timedelta(seconds=3601)
    )
    reclaimed = await later.claim("survivor", [KIND])
    assert reclaimed is not None and reclaimed.id == job.id
    assert reclaimed.attempts == 2 and reclaimed.lease_owner == "survivor"
    assert await later.complete(job.id, "survivor") is True
    assert (await _get(queue, tenant, job.id)).status == "succeeded"


# -- cancellation and retry -------------------------------------------------------------------


async def test_cancel_queued_job_is_immediate(queue: ManagedJobQueue, tenant: str) -> None:
    job = await queue.enqueue(tenant, KIND, {})
    cancelled = await queue.cancel(tenant, job.id)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    assert await queue.claim("w1", [KIND]) is None


async def test_cancel_running_job_is_honoured_by_the_worker(
    queue: ManagedJobQueue, tenant: str
) -> None:
    job = await queue.enqueue(tenant, KIND, {})
    await _claim(queue)
    assert await queue.is_cancel_requested(job.id) is False

    requested = await queue.cancel(tenant, job.id)
    assert requested is not None
    assert (requested.status, requested.cancel_requested) == ("running", True)
    assert await queue.is_cancel_requested(job.id) is True
    assert await queue.heartbeat(job.id, "w1") is False  # "stop between stages"

    assert await queue.mark_cancelled(job.id, "w1") is True
    final = await _get(queue, tenant, job.id)
    assert final.status == "cancelled" and final.lease_owner is None


async def test_failing_after_cancel_request_ends_cancelled_not_requeued(
    queue: ManagedJobQueue, tenant: str
) -> None:
    job = await queue.enqueue(tenant, KIND, {})
    await _claim(queue)
    await queue.cancel(tenant, job.id)
    assert await queue.fail(job.id, "w1", "interrupted") is True
    assert (await _get(queue, tenant, job.id)).status == "cancelled"


async def test_cancel_requested_job_with_dead_worker_ends_cancelled(
    queue: ManagedJobQueue, tenant: str, clock: Clock
) -> None:
    job = await queue.enqueue(tenant, KIND, {})
    await _claim(queue)
    await queue.cancel(tenant, job.id)
    clock.advance(31)
    assert await queue.claim("w2", [KIND]) is None
    assert (await _get(queue, tenant, job.id)).status == "cancelled"


async def test_cancel_finished_job_changes_nothing(queue: ManagedJobQueue, tenant: str) -> None:
    job = await queue.enqueue(tenant, KIND, {})
    await _claim(queue)
    await queue.complete(job.id, "w1")
    after = await queue.cancel(tenant, job.id)
    assert after is not None and after.status == "succeeded" and not after.cancel_requested


async def test_retry_requeues_failed_and_cancelled_jobs(
    queue: ManagedJobQueue, tenant: str
) -> None:
    job = await queue.enqueue(tenant, KIND, {}, max_attempts=1)
    await _claim(queue)
    await queue.set_stage(job.id, "w1", "parse", 1, 2)
    await queue.fail(job.id, "w1", "bad")
    assert (await _get(queue, tenant, job.id)).status == "failed"

    retried = await queue.retry(tenant, job.id)
    assert retried is not None
    assert (retried.status, retried.attempts, retried.error, retried.stage) == (
        "queued", 0, None, None
    )
    assert retried.finished_at is None
    again = await _claim(queue, "w2")
    assert again.id == job.id and again.attempts == 1

    with pytest.raises(Conflict):
        await queue.retry(tenant, job.id)  # running
    await queue.mark_cancelled(job.id, "w2")
    retried_cancelled = await queue.retry(tenant, job.id)
    assert retried_cancelled is not None and retried_cancelled.status == "queued"
    assert not retried_cancelled.cancel_requested


# -- tenants and listing ----------------------------------------------------------------------


async def test_tenant_isolation(queue: ManagedJobQueue, tenant: str, other_tenant: str) -> None:
    queued = await queue.enqueue(tenant, KIND, {"secret": "acme"})
    failed = await queue.enqueue(tenant, "other", {}, max_attempts=1)
    assert (await _claim_kind(queue, "other")).id == failed.id
    await queue.fail(failed.id, "w1", "x")

    assert await queue.get(other_tenant, queued.id) is None
    assert await queue.cancel(other_tenant, queued.id) is None
    assert await queue.retry(other_tenant, failed.id) is None
    assert (await queue.list(other_tenant)).items == ()

    assert (await _get(queue, tenant, queued.id)).status == "queued"
    assert (await _get(queue, tenant, failed.id)).status == "failed"
    assert await queue.get(tenant, "no-such-job") is None


async def test_list_pages_newest_first_with_status_filter(
    queue: ManagedJobQueue, tenant: str
) -> None:
    ids = [(await queue.enqueue(tenant, KIND, {"i": i})).id for i in range(5)]
    await _claim(queue)  # the oldest one is now running

    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await queue.list(tenant, limit=2, cursor=cursor)
        seen.extend(job.id for job in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids[::-1]

    queued = await queue.list(tenant, status="queued")
    assert [job.id for job in queued.items] == ids[:0:-1]
    running = await queue.list(tenant, status="running")
    assert [job.id for job in running.items] == ids[:1]

    with pytest.raises(InvalidInput):
        await queue.list(tenant, cursor="not-a-cursor")
    with pytest.raises(InvalidInput):
        await queue.list(tenant, limit=0)


async def test_deleting_a_tenant_deletes_its_jobs(
    site: Site, queue: ManagedJobQueue, tenant: str
) -> None:
    job = await queue.enqueue(tenant, KIND, {})
    async with site.db.transaction() as s:
        await s.execute(text("DELETE FROM tenants WHERE id = :id"), {"id": tenant})
    async with site.db.read() as s:
        remaining = (await s.execute(text("SELECT count(*) FROM jobs"))).scalar_one()
    assert remaining == 0
    assert await queue.get(tenant, job.id) is None


async def test_enqueue_validates_its_input(queue: ManagedJobQueue, tenant: str) -> None:
    with pytest.raises(NotFound):
        await queue.enqueue("no-such-tenant", KIND, {})
    with pytest.raises(InvalidInput):
        await queue.enqueue(tenant, KIND, {}, max_attempts=0)
    with pytest.raises(InvalidInput):
        await queue.enqueue(tenant, "k" * 33, {})
    assert (await queue.list(tenant)).items == ()


async def test_prune_removes_only_old_finished_jobs(
    queue: ManagedJobQueue, tenant: str, clock: Clock
) -> None:
    done = await queue.enqueue(tenant, KIND, {})
    assert await queue.complete((await _claim(queue)).id, "w1")
    cancelled = await queue.enqueue(tenant, KIND, {})
    await queue.cancel(tenant, cancelled.id)
    waiting = await queue.enqueue(tenant, KIND, {})
    clock.advance(3600)
    recent = await queue.enqueue(tenant, KIND, {})
    running = await _claim(queue, "w2")
    assert running.id == waiting.id
    assert await queue.prune(timedelta(minutes=30)) == 2
    assert await queue.get(tenant, done.id) is None
    assert await queue.get(tenant, cancelled.id) is None
    assert (await _get(queue, tenant, waiting.id)).status == "running"
    assert (await _get(queue, tenant, recent.id)).status == "queued"
    assert await queue.prune(timedelta(minutes=30)) == 0


# -- watching the queue -----------------------------------------------------------------------


async def test_depth_counts_waiting_and_running_jobs_by_kind_and_finds_stuck_ones(
    queue: ManagedJobQueue, tenant: str, other_tenant: str, clock: Clock
) -> None:
    """Every tenant's jobs, read from the rows (any replica gives the same figures);
    finished jobs are not depth; a running job past its lease is stuck until its worker
    heartbeats again or another worker reclaims it."""
    empty = await queue.depth()
    assert (empty.jobs, empty.capped, empty.stuck, empty.stuck_for_seconds) == ({}, False, 0, None)
    for owner in (tenant, tenant, other_tenant):
        await queue.enqueue(owner, KIND, {})
    await queue.enqueue(tenant, "other", {})
    await queue.enqueue(tenant, "other", {})
    finished = await queue.claim("w0", ["other"])
    assert finished is not None and await queue.complete(finished.id, "w0")
    running = await _claim(queue, "w1")
    depth = await queue.depth()
    assert depth.jobs == {("queued", KIND): 2, ("queued", "other"): 1, ("running", KIND): 1}
    assert (depth.stuck, depth.stuck_for_seconds) == (0, None)

    clock.advance(30 + 5)  # the lease was 30 s: its worker stopped beating 5 s ago
    stuck = await queue.depth()
    assert stuck.stuck == 1 and stuck.jobs == depth.jobs
    assert stuck.stuck_for_seconds is not None and 5 <= stuck.stuck_for_seconds < 6
    assert (await queue.stuck()).jobs == 1
    assert await queue.heartbeat(running.id, "w1")  # alive after all: not stuck any more
    assert (await queue.depth()).stuck == 0


async def test_a_completion_observer_sees_each_succeeded_job_after_its_commit(
    site: Site, tenant: str, clock: Clock
) -> None:
    seen: list[Job] = []

    queue = site.queue(clock=clock, on_complete=seen.append)
    first = await queue.enqueue(tenant, KIND, {"document_id": "d1"})
    await _claim(queue)
    assert await queue.set_stage(first.id, "w1", "index", 7, 7)
    assert await queue.complete(first.id, "w1", {"parse": 0.5, "index": 0.25})
    assert [(j.id, j.status, j.timings, j.progress_total) for j in seen] == [
        (first.id, "succeeded", {"parse": 0.5, "index": 0.25}, 7)
    ]
    assert seen[0].payload == {"document_id": "d1"} and seen[0].tenant_id == tenant
    # Failures, and calls that change nothing, are not completions.
    second = await queue.enqueue(tenant, KIND, {})
    await _claim(queue)
    assert await queue.fail(second.id, "w1", "boom", retryable=False)
    assert not await queue.complete(first.id, "w1")
    assert len(seen) == 1

    def broken(job: Job) -> None:
        raise RuntimeError("observer bug")

    failing = site.queue(clock=clock, on_complete=broken)
    third = await failing.enqueue(tenant, KIND, {})
    await _claim(failing)
    assert await failing.complete(third.id, "w1")  # recorded in spite of the observer
    assert (await _get(failing, tenant, third.id)).status == "succeeded"


async def test_depth_counts_a_bounded_number_of_jobs_per_status(
    queue: ManagedJobQueue, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However long the backlog, a scrape reads at most the bound per status, and says
    its figure is a floor."""
    monkeypatch.setattr(queue_module, "DEPTH_SCAN_LIMIT", 3)
    for _ in range(2):
        await queue.enqueue(tenant, KIND, {})
    assert (await queue.depth()).capped is False
    for _ in range(3):
        await queue.enqueue(tenant, "other", {})
    capped = await queue.depth()
    assert capped.capped is True and sum(capped.jobs.values()) == 3
