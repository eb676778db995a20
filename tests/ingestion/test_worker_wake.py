"""Worker pools on PostgreSQL wake on every process's enqueues through NOTIFY, not at their
next poll: a pool on engine B (another host) claims a job enqueued through engine A while its
poll interval is an hour away, and claims after its listener reconnects (a notification may
have been lost meanwhile)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import insert

from ragd.db.engine import Database
from ragd.db.listen import Listener, build_listener
from ragd.db.tables import JobRow
from ragd.ingestion.worker import WorkerPool
from ragd.jobs.factory import ManagedJobQueue, build_job_queue
from ragd.jobs.queue import JOBS_CHANNEL, Job, new_job_row
from ragd.stores.factory import build_identity_store
from tests.conftest import make_settings
from tests.postgres import PostgresServer
from tests.waiting import HANG_TIMEOUT, eventually

KIND = "test"
AN_HOUR = 3600.0


@dataclass
class TwoHosts:
    tenant: str
    here: Database  # the enqueuing host (an API replica)
    queue: ManagedJobQueue
    pool: WorkerPool  # on the other host's engine, polling once an hour
    listener: Listener
    handled: asyncio.Queue[str]


@pytest.fixture
async def hosts(postgres: PostgresServer, tmp_path: Path) -> AsyncIterator[TwoHosts]:
    url = await postgres.fresh_database("wake")
    settings = make_settings(tmp_path / "data", database={"url": url})
    here, there = Database(url), Database(url)
    tenant = (await build_identity_store(settings, here).create_tenant("acme")).id
    worker_queue = build_job_queue(settings, there)
    handled: asyncio.Queue[str] = asyncio.Queue()

    async def handler(job: Job, worker_id: str) -> None:
        assert await worker_queue.complete(job.id, worker_id) is True
        handled.put_nowait(job.id)

    pool = WorkerPool(worker_queue, {KIND: handler}, concurrency=2, poll_interval=AN_HOUR)
    listener = build_listener(url)
    assert listener is not None
    pool.listen(listener)
    await listener.start()
    pool.start()
    try:
        assert listener.listening(JOBS_CHANNEL)
        # Both loops found nothing and now wait: for a wake-up, or an hour.
        await eventually(lambda: pool.idle == 2, what="both worker loops idle")
        yield TwoHosts(tenant, here, build_job_queue(settings, here), pool, listener, handled)
    finally:
        await pool.stop()
        await listener.close()
        await here.dispose()
        await there.dispose()


async def _handled(hosts: TwoHosts) -> str:
    async with asyncio.timeout(HANG_TIMEOUT):
        return await hosts.handled.get()


async def test_an_enqueue_on_one_host_wakes_a_worker_on_another(hosts: TwoHosts) -> None:
    job = await hosts.queue.enqueue(hosts.tenant, KIND, {})
    assert await _handled(hosts) == job.id

    # A producer's own transaction (as the catalog accepts an upload) wakes it too.
    async with hosts.here.transaction() as s:
        row = new_job_row(hosts.tenant, KIND, {"document_id": "d1"})
        s.add(row)
    assert await _handled(hosts) == row.id
    assert hosts.pool.processed == 2


async def test_a_worker_claims_after_its_listener_reconnects(
    hosts: TwoHosts, postgres: PostgresServer
) -> None:
    # A job whose notification never arrives (inserted without one, as if sent while the
    # listener was down) ...
    async with hosts.here.transaction() as s:
        values = {
            column.key: getattr(new_job_row(hosts.tenant, KIND, {}), column.key)
            for column in JobRow.__table__.columns if column.key != "id"
        }
        job_id = (await s.execute(insert(JobRow).values(**values).returning(JobRow.id))).scalar()
    assert hosts.handled.empty() and hosts.pool.idle == 2
    # ... is claimed once the listener's connection is replaced: it may have missed some.
    pid = hosts.listener.server_pid
    await postgres.execute(f"SELECT pg_terminate_backend({int(pid or 0)})")
    assert await _handled(hosts) == job_id
    assert hosts.listener.connections == 2
