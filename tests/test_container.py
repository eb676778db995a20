"""Wiring shared by the processes of one deployment: housekeeping runs in one of them (one
per data dir on SQLite, one per database on PostgreSQL, whatever host it runs on)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from ragd.container import (
    PRUNE_INTERVAL_SECONDS,
    FileLeader,
    Services,
    build_workers,
    housekeeping_leader,
    open_services,
    run_housekeeping,
)
from ragd.db.locks import AdvisoryLeadership, Leader
from ragd.settings import Settings
from ragd.stores.catalog import DELETE_COLLECTION_JOB
from tests.conftest import make_settings
from tests.loop_clock import LoopClock
from tests.postgres import PostgresServer
from tests.waiting import eventually, settle


@pytest.fixture(params=["sqlite", "postgresql"])
async def two_processes(
    request: pytest.FixtureRequest, tmp_path: Path, postgres: PostgresServer
) -> AsyncIterator[tuple[Services, Services]]:
    """Two processes of one deployment: on one data dir (SQLite), or on two hosts' data dirs
    sharing one PostgreSQL database."""
    if request.param == "sqlite":
        settings = [make_settings(tmp_path / "data")] * 2
    else:
        url = await postgres.fresh_database("housekeeping")
        settings = [make_settings(tmp_path / f"host{n}", database={"url": url})
                    for n in range(2)]
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(open_services(settings[0]))
        second = await stack.enter_async_context(open_services(settings[1]))
        yield first, second


def _leader(services: Services) -> Leader:
    return housekeeping_leader(services.settings, services.db)


async def test_one_process_prunes_and_another_takes_over_when_it_exits(
    two_processes: tuple[Services, Services], loop_clock: LoopClock
) -> None:
    leaders = [_leader(services) for services in two_processes]
    expected = AdvisoryLeadership if two_processes[0].db.is_postgresql else FileLeader
    assert all(isinstance(leader, expected) for leader in leaders)
    tasks = [asyncio.create_task(run_housekeeping(services, leader=leader))
             for services, leader in zip(two_processes, leaders, strict=True)]
    try:
        await settle()
        assert not any(leader.held for leader in leaders)  # nothing before the first tick
        loop_clock.advance(PRUNE_INTERVAL_SECONDS)
        await eventually(lambda: any(leader.held for leader in leaders),
                         what="a process leads the housekeeping")
        holder = next(i for i, leader in enumerate(leaders) if leader.held)
        other = 1 - holder
        assert await leaders[other].acquire() is False  # one leader at a time
        assert leaders[holder].held
        tasks[holder].cancel()  # the leading process exits: its lock goes with it
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[holder]
        assert not leaders[holder].held
        loop_clock.advance(PRUNE_INTERVAL_SECONDS)
        await eventually(lambda: leaders[other].held, what="the other process takes over")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_on_postgresql_the_lead_moves_when_the_leaders_connection_drops(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await postgres.fresh_database("leader")
    hosts: list[Settings] = [make_settings(tmp_path / f"host{n}", database={"url": url})
                             for n in range(2)]
    async with open_services(hosts[0]) as first, open_services(hosts[1]) as second:
        leader, follower = _leader(first), _leader(second)
        try:
            assert await leader.acquire() is True
            assert await leader.acquire() is True  # still: asking again changes nothing
            assert await follower.acquire() is False
            # The leader's host drops off the network: the server ends its session.
            await postgres.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND pid <> pg_backend_pid()",
                url.rsplit("/", 1)[1],
            )
            assert await eventually(follower.acquire, what="the follower takes the lead")
            assert await leader.acquire() is False  # and the old leader knows it lost it
            assert not leader.held and follower.held
        finally:
            await leader.release()
            await follower.release()


async def test_on_postgresql_a_worker_process_wakes_on_another_processes_enqueue(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await postgres.fresh_database("wiring")
    api = make_settings(tmp_path / "api", database={"url": url}, ingestion={"workers": 0})
    worker = make_settings(tmp_path / "worker", database={"url": url})
    # Polling once an hour (past any validation: model_copy): only NOTIFY can wake it.
    worker = worker.model_copy(update={
        "ingestion": worker.ingestion.model_copy(update={"poll_interval_seconds": 3600.0}),
    })
    async with open_services(api) as replica, open_services(worker) as host:
        assert replica.listener is not None and host.listener is not None
        pool = build_workers(host, 1)
        pool.start()
        try:
            await eventually(lambda: pool.idle == 1, what="the worker waits for work")
            tenant = await replica.store.create_tenant("acme")
            job = await replica.queue.enqueue(
                tenant.id, DELETE_COLLECTION_JOB, {"collection_id": "gone"}
            )

            async def finished() -> bool:
                current = await replica.queue.get(tenant.id, job.id)
                return current is not None and current.status == "succeeded"

            await eventually(finished, what="the other process ran the job")
        finally:
            await pool.stop()
