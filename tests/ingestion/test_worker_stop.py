"""Stopping a worker pool while a loop is inside its claim: the claim's transaction completes
(it is not cut off mid-statement, which made SQLAlchemy discard the connection with a logged
traceback at shutdown), the job it took goes straight back to the queue without using up an
attempt, and the loop ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import pytest

from ragd.db import migrate
from ragd.db.engine import Database
from ragd.ingestion.pipeline import cancel_and_wait
from ragd.ingestion.worker import WorkerPool
from ragd.jobs.queue import Job, SqlJobQueue
from ragd.stores.identity import SqlIdentityStore
from tests.waiting import HANG_TIMEOUT

KIND = "test"


class HeldClaims(SqlJobQueue):
    """The real SQLite queue, whose claims wait at a gate after their transaction began
    (the lane is held, the claim's statements not yet run)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.inside = asyncio.Event()
        self.gate = asyncio.Event()
        self.finished: list[Job | None] = []

    async def _next_due(self, s: Any, kinds: Sequence[str], now: Any) -> Any:
        self.inside.set()
        await self.gate.wait()
        return await super()._next_due(s, kinds, now)

    async def claim(
        self, worker_id: str, kinds: Sequence[str], *, job_ids: Collection[str] | None = None
    ) -> Job | None:
        job = await super().claim(worker_id, kinds, job_ids=job_ids)
        self.finished.append(job)
        return job


async def test_a_loop_stopped_inside_its_claim_finishes_it_and_puts_the_job_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(f"sqlite+aiosqlite:///{(tmp_path / 'ragd.db').resolve()}")
    assert await migrate.upgrade(db) is True
    try:
        tenant = (await SqlIdentityStore(db).create_tenant("acme")).id
        queue = HeldClaims(db)
        job = await queue.enqueue(tenant, KIND, {})
        handled: list[str] = []

        async def handler(job: Job, worker_id: str) -> None:
            handled.append(job.id)

        pool = WorkerPool(queue, {KIND: handler}, concurrency=1, poll_interval=3600)
        pool.start()
        async with asyncio.timeout(HANG_TIMEOUT):
            await queue.inside.wait()
            stopping = asyncio.create_task(pool.stop())
            await asyncio.sleep(0)  # the loop is cancelled while its claim waits at the gate
            queue.gate.set()
            await stopping
        assert [found.id if found else None for found in queue.finished] == [job.id]
        assert handled == []
        after = await queue.get(tenant, job.id)
        assert after is not None
        assert (after.status, after.attempts, after.lease_owner) == ("queued", 0, None)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [], caplog.text
    finally:
        await db.dispose()


async def test_cancel_and_wait_does_not_swallow_the_callers_own_cancellation() -> None:
    # A job's heartbeat is cancelled and awaited as the job ends; the worker loop cancelled
    # during that wait (its pool being stopped) must end, not carry on.
    child_cancelled, let_go = asyncio.Event(), asyncio.Event()

    async def child() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            child_cancelled.set()
            await let_go.wait()  # still cleaning up when the caller is cancelled
            raise

    carried_on: list[str] = []

    async def caller() -> None:
        heartbeat = asyncio.create_task(child())
        await asyncio.sleep(0)  # let it start
        await cancel_and_wait(heartbeat)
        carried_on.append("after the wait")

    task = asyncio.create_task(caller())
    async with asyncio.timeout(HANG_TIMEOUT):
        await child_cancelled.wait()
        task.cancel()
        await asyncio.sleep(0)
        let_go.set()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert carried_on == []


async def test_cancel_and_wait_returns_when_only_the_child_was_cancelled() -> None:
    task = asyncio.create_task(asyncio.Event().wait())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()
