"""The job queue as the factory builds it on PostgreSQL, shared by processes on several hosts:
leases on the database's clock (a host clock far off changes nothing), claims that skip the
rows other claimers hold, every job claimed once across engines, and NOTIFY at commit.

The queue's contract (injected clock, both backends) is ``tests/contracts/test_queue.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

import ragd.db.clock
import ragd.db.tables
import ragd.jobs.queue
from ragd.db.engine import Database
from ragd.jobs.factory import ManagedJobQueue, build_job_queue
from ragd.jobs.queue import JOBS_CHANNEL, SqlJobQueue, backoff_delay, new_job_row
from ragd.settings import Settings
from ragd.stores.factory import build_identity_store
from tests.conftest import make_settings
from tests.postgres import PostgresServer
from tests.waiting import HANG_TIMEOUT

KIND = "test"
LEASE = timedelta(seconds=30)
DAY = timedelta(days=1)


@dataclass
class Deployment:
    settings: Settings
    dsn: str
    tenant: str
    engines: list[Database]

    def engine(self) -> Database:
        """Another process's engine on the same database."""
        db = Database(self.settings.database_url)
        self.engines.append(db)
        return db

    def queue(self, db: Database) -> ManagedJobQueue:
        return build_job_queue(self.settings, db)


@pytest.fixture
async def deployment(postgres: PostgresServer, tmp_path: Path) -> AsyncIterator[Deployment]:
    url = await postgres.fresh_database("jobs")
    settings = make_settings(tmp_path / "data", database={"url": url},
                             ingestion={"lease_seconds": LEASE.total_seconds()})
    site = Deployment(settings, postgres.dsn(url.rsplit("/", 1)[1]), "", [])
    tenant = await build_identity_store(settings, site.engine()).create_tenant("acme")
    site.tenant = tenant.id
    try:
        yield site
    finally:
        for db in site.engines:
            await db.dispose()


async def _server_now(db: Database) -> datetime:
    async with db.read() as s:
        value = await s.scalar(text("SELECT clock_timestamp()"))
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


def _host_clock_off_by(monkeypatch: pytest.MonkeyPatch, offset: timedelta) -> None:
    """This process's idea of "now" is ``offset`` away from the truth."""
    def skewed() -> datetime:
        return datetime.now(UTC) + offset

    for module in (ragd.db.clock, ragd.db.tables, ragd.jobs.queue):
        monkeypatch.setattr(module, "utcnow", skewed)


# -- the database's clock ---------------------------------------------------------------------


@pytest.mark.parametrize("offset", [DAY, -DAY], ids=["ahead", "behind"])
async def test_leases_follow_the_database_clock_whatever_the_host_clock_says(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, offset: timedelta
) -> None:
    here, there = deployment.engine(), deployment.engine()
    queue, other = deployment.queue(here), deployment.queue(there)
    job = await queue.enqueue(deployment.tenant, KIND, {})
    _host_clock_off_by(monkeypatch, offset)

    before = await _server_now(here)
    claimed = await queue.claim("worker-a", [KIND])
    after = await _server_now(here)
    assert claimed is not None and claimed.id == job.id
    assert claimed.lease_expires_at is not None
    assert before + LEASE <= claimed.lease_expires_at <= after + LEASE
    # A day ahead, the host would think the lease long expired; a day behind, that the job
    # ran a day from now. Neither: the lease runs for LEASE by the server's clock.
    assert await other.claim("worker-b", [KIND]) is None
    assert await queue.heartbeat(job.id, "worker-a") is True
    beat = await queue.get(deployment.tenant, job.id)
    assert beat is not None and beat.lease_expires_at is not None
    assert beat.lease_expires_at >= claimed.lease_expires_at

    before = await _server_now(here)
    assert await queue.fail(job.id, "worker-a", "boom") is True
    after = await _server_now(here)
    requeued = await queue.get(deployment.tenant, job.id)
    assert requeued is not None and requeued.status == "queued"
    backoff = backoff_delay(1)
    assert before + backoff <= requeued.run_after <= after + backoff
    assert await other.claim("worker-b", [KIND]) is None  # still backing off

    # The same claim on the host's own clock, a day ahead, would have taken it at once.
    if offset > timedelta(0):
        hasty = SqlJobQueue(there, lease_seconds=LEASE.total_seconds(),
                            clock=ragd.jobs.queue.utcnow)
        stolen = await hasty.claim("worker-b", [KIND])
        assert stolen is not None and stolen.id == job.id


async def test_a_job_from_a_producer_whose_clock_runs_ahead_is_due_at_once(
    deployment: Deployment,
) -> None:
    db = deployment.engine()
    async with db.transaction() as s:  # as the catalog enqueues, in its own transaction
        row = new_job_row(deployment.tenant, KIND, {}, now=datetime.now(UTC) + DAY)
        s.add(row)
    claimed = await deployment.queue(deployment.engine()).claim("worker", [KIND])
    assert claimed is not None and claimed.id == row.id


# -- claims across engines --------------------------------------------------------------------


async def test_a_claim_skips_the_row_another_transaction_holds(deployment: Deployment) -> None:
    queue = deployment.queue(deployment.engine())
    first = await queue.enqueue(deployment.tenant, KIND, {"n": 1})
    second = await queue.enqueue(deployment.tenant, KIND, {"n": 2})
    holder = await asyncpg.connect(deployment.dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", first.id)
            # Without SKIP LOCKED this claim would wait for the holder (and fail as Busy).
            claimed = await queue.claim("worker", [KIND])
            assert claimed is not None and claimed.id == second.id
        again = await queue.claim("worker", [KIND])
        assert again is not None and again.id == first.id
    finally:
        await holder.close()


async def test_claimers_on_several_engines_claim_every_job_exactly_once(
    deployment: Deployment,
) -> None:
    producer = deployment.queue(deployment.engine())
    ids = {(await producer.enqueue(deployment.tenant, KIND, {"i": i})).id for i in range(150)}
    queues = [deployment.queue(deployment.engine()) for _ in range(3)]

    async def drain(queue: ManagedJobQueue, name: str) -> list[str]:
        got: list[str] = []
        while (job := await queue.claim(name, [KIND])) is not None:
            got.append(job.id)
            assert await queue.complete(job.id, name) is True
        return got

    async with asyncio.timeout(HANG_TIMEOUT):
        results = await asyncio.gather(*(
            drain(queue, f"engine{e}-worker{w}")
            for e, queue in enumerate(queues) for w in range(4)
        ))
    claimed = [job_id for got in results for job_id in got]
    assert len(claimed) == len(set(claimed)) == len(ids)
    assert set(claimed) == ids


# -- NOTIFY -----------------------------------------------------------------------------------


async def test_enqueues_notify_listeners_when_they_commit(deployment: Deployment) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(deployment.dsn)
    await listener.add_listener(JOBS_CHANNEL, lambda *args: heard.put_nowait(args[3]))
    try:
        db = deployment.engine()
        queue = deployment.queue(db)
        with pytest.raises(RuntimeError):
            async with db.transaction() as s:
                s.add(new_job_row(deployment.tenant, "ghost", {}))
                await s.flush()
                raise RuntimeError("rolled back: nothing may be announced")
        async with db.transaction() as s:  # a producer's own transaction
            s.add(new_job_row(deployment.tenant, "produced", {}))
        await queue.enqueue(deployment.tenant, KIND, {})
        async with asyncio.timeout(HANG_TIMEOUT):
            assert [await heard.get(), await heard.get()] == ["produced", KIND]

        job = await queue.claim("worker", [KIND])
        assert job is not None
        assert await queue.fail(job.id, "worker", "final", retryable=False) is True
        assert await queue.retry(deployment.tenant, job.id) is not None
        async with asyncio.timeout(HANG_TIMEOUT):
            assert await heard.get() == KIND
    finally:
        await listener.close()
