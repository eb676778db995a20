"""Fair claims between tenants, on every backend: one tenant's backlog does not hold another
tenant's job back for longer than the workers take to come round, tenants are served in turn,
each tenant's jobs stay in order, a dead worker's job is still reclaimed, and a claim costs
index steps per tenant with work, not a walk over the backlog.

The claims run through the real queue on the test's clock (every reading is a millisecond
later, so claims are strictly ordered in time). "Workers" are worker ids claiming and
completing in a fixed order, so each assertion is about the queue's choice, never timing.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import text

from ragd.db import migrate
from ragd.db.engine import Database
from ragd.jobs.factory import ManagedJobQueue
from ragd.jobs.queue import Job, SqlJobQueue, fair_candidates_query, new_job_row
from ragd.stores.base import IdentityStore
from tests.contracts.backends import Backend
from tests.contracts.conftest import Clock
from tests.contracts.site import Site
from tests.postgres import shared_postgres

KIND = "test"
BACKLOG = 200


@pytest.fixture
def queue(site: Site, clock: Clock) -> ManagedJobQueue:
    return site.queue(clock=clock)


async def _tenants(identity: IdentityStore, *names: str) -> list[str]:
    return [(await identity.create_tenant(name)).id for name in names]


async def _claim(queue: ManagedJobQueue, worker: str) -> Job:
    job = await queue.claim(worker, [KIND])
    assert job is not None
    return job


async def _backlog(site: Site, tenant: str, count: int, clock: Clock) -> None:
    """``count`` queued jobs of ``tenant``, inserted in one transaction (as a bulk upload's
    jobs are), each a clock tick after the previous one."""
    async with site.db.transaction() as s:
        s.add_all(new_job_row(tenant, KIND, {"i": i}, now=clock()) for i in range(count))


@pytest.mark.parametrize("workers", [1, 2, 4])
async def test_a_single_job_waits_for_no_more_claims_than_there_are_workers(
    site: Site, queue: ManagedJobQueue, identity: IdentityStore, clock: Clock, workers: int
) -> None:
    """Tenant A has a backlog of 200 and the workers are busy with it when tenant B uploads
    one document: B's job is the next one claimed (at worst within ``workers`` claims)."""
    a, b = await _tenants(identity, "acme", "globex")
    await _backlog(site, a, BACKLOG, clock)
    held = {f"w{n}": await _claim(queue, f"w{n}") for n in range(workers)}
    assert {job.tenant_id for job in held.values()} == {a}
    single = await queue.enqueue(b, KIND, {"doc": "b"})

    claimed: list[Job] = []
    for worker, job in held.items():  # the workers finish their jobs one after another
        assert await queue.complete(job.id, worker) is True
        claimed.append(await _claim(queue, worker))
    assert [job.id for job in claimed].index(single.id) == 0, [j.tenant_id for j in claimed]


@pytest.mark.parametrize("workers", [2, 4])
async def test_concurrent_claimers_take_the_single_job_in_their_first_round(
    site: Site, identity: IdentityStore, clock: Clock, workers: int
) -> None:
    """200 jobs of A and then 1 of B, queued before any worker starts; ``workers`` claimers
    in two processes claim at once: B's job is among their claims (on PostgreSQL the claims
    overlap, and a claimer that finds A's oldest job locked goes on to B's)."""
    a, b = await _tenants(identity, "acme", "globex")
    await _backlog(site, a, BACKLOG, clock)
    single = await site.queue(clock=clock).enqueue(b, KIND, {"doc": "b"})
    queues = [site.queue(clock=clock), site.another_process().queue(clock=clock)]
    claims = await asyncio.gather(
        *(queues[n % 2].claim(f"w{n}", [KIND]) for n in range(workers))
    )
    ids = [job.id for job in claims if job is not None]
    assert len(ids) == len(set(ids)) == workers
    assert single.id in ids


async def test_tenants_are_served_in_turn_and_each_in_its_own_order(
    site: Site, queue: ManagedJobQueue, identity: IdentityStore, clock: Clock
) -> None:
    """Three tenants with 5 jobs each, A's all oldest: one worker serves A, B, C, A, B, C...;
    two workers interleaving their claims and completions do the same; every tenant's jobs
    come in the order they were queued. A fourth tenant's jobs of another kind are never
    handed to these workers."""
    a, b, c, d = await _tenants(identity, "acme", "globex", "initech", "umbrella")
    order: dict[str, list[str]] = {}
    for tenant in (a, b, c):
        order[tenant] = [(await queue.enqueue(tenant, KIND, {"n": n})).id for n in range(5)]
    await queue.enqueue(d, "other", {})

    # One worker: claim, complete, claim...
    served: list[Job] = []
    for _ in range(6):
        job = await _claim(queue, "solo")
        served.append(job)
        assert await queue.complete(job.id, "solo") is True
    assert [job.tenant_id for job in served] == [a, b, c] * 2

    # Two workers: each completes its job just before claiming the next.
    held: dict[str, Job] = {}
    for step in range(9):
        worker = f"w{step % 2}"
        if worker in held:
            assert await queue.complete(held[worker].id, worker) is True
        held[worker] = await _claim(queue, worker)
        served.append(held[worker])
    assert [job.tenant_id for job in served[6:]] == [a, b, c] * 3
    for tenant, ids in order.items():
        assert [job.id for job in served if job.tenant_id == tenant] == ids
    assert await queue.claim("solo", [KIND]) is None  # all 15 were handed out
    assert (await queue.claim("solo", ["other"])) is not None


async def test_a_dead_workers_job_is_reclaimed_first_in_its_tenant(
    site: Site, queue: ManagedJobQueue, identity: IdentityStore, clock: Clock
) -> None:
    """A's job whose worker died is claimed again once its lease expired, before A's queued
    jobs (it is older), and a dead lease does not count as A having a job running."""
    a, b = await _tenants(identity, "acme", "globex")
    lost = await queue.enqueue(a, KIND, {"n": 0})
    assert (await _claim(queue, "doomed")).id == lost.id
    later = await queue.enqueue(a, KIND, {"n": 1})
    first_b = await queue.enqueue(b, KIND, {"n": 0})
    # While the lease runs, A has a job running: B's comes first.
    assert (await _claim(queue, "w1")).id == first_b.id
    assert await queue.complete(first_b.id, "w1") is True
    clock.advance(31)  # the doomed worker's lease (30 s) expired
    second_b = await queue.enqueue(b, KIND, {"n": 1})
    # A has nothing live running and was served before B: A's turn, its dead job first.
    reclaimed = await _claim(queue, "w2")
    assert (reclaimed.id, reclaimed.attempts, reclaimed.lease_owner) == (lost.id, 2, "w2")
    assert (await _claim(queue, "w3")).id == second_b.id
    assert (await _claim(queue, "w4")).id == later.id
    assert await queue.claim("w5", [KIND]) is None


async def test_a_claim_reads_index_steps_per_tenant_not_the_backlog(
    site: Site, identity: IdentityStore, clock: Clock
) -> None:
    """The claim statement on a backlog of 2,000 jobs of one tenant (and 2,000 finished ones
    of another): SQLite's plan searches indexes for every read of ``jobs``, never scans the
    table; PostgreSQL's executed plan (after ANALYZE) has no node that read more than a few
    rows."""
    a, b, c = await _tenants(identity, "acme", "globex", "initech")
    await _backlog(site, a, 2000, clock)
    await _backlog(site, b, 2000, clock)
    async with site.db.transaction() as s:
        await s.execute(
            text("UPDATE jobs SET status = 'succeeded', claimed_at = created_at "
                 "WHERE tenant_id = :tenant"), {"tenant": b},
        )
    queue = site.queue(clock=clock)
    await queue.enqueue(c, KIND, {})
    statement = fair_candidates_query([KIND, "other"], clock())
    sql = str(statement.compile(site.db.engine, compile_kwargs={"literal_binds": True}))
    async with site.db.engine.connect() as conn:
        if site.backend.name == "postgresql":
            await conn.execute(text("ANALYZE jobs"))
            plan = (await conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))).scalar()
            nodes = list(_nodes(plan if isinstance(plan, list) else json.loads(plan)))
            read = max(_rows_read(node) for node in nodes)
            assert read <= 20, json.dumps(plan, indent=1)
        else:
            lines = [row[3] for row in await conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
            scans = [line for line in lines
                     if re.match(r"SCAN (jobs|scan|head|expired|live|served|job)\b", line)]
            assert not scans, lines
            assert any("ix_jobs_queue" in line for line in lines), lines
    job = await queue.claim("w1", [KIND])
    assert job is not None and job.tenant_id in (a, c)


async def test_jobs_queued_before_the_upgrade_are_claimed_fairly_after_it(
    backend: Backend, tmp_path: Path, clock: Clock
) -> None:
    """A database at 0007 (no ``claimed_at``) with a running job whose worker died and
    queued jobs of two tenants is upgraded with the jobs in it; the queue then reclaims the
    dead worker's job first (the oldest; nobody has a claim on record), then serves B."""
    if backend.name == "postgresql":
        url = await shared_postgres().create_database(f"upgrade_{uuid.uuid4().hex[:12]}")
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'ragd.db'}"
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_upgrade_to, "0007")
        start = clock()
        tenants = sa.table("tenants", *(sa.column(c) for c in ("id", "name", "name_key")),
                           sa.column("status"), sa.column("created_at", sa.DateTime()),
                           sa.column("updated_at", sa.DateTime()))
        jobs = sa.table(
            "jobs", *(sa.column(c) for c in (
                "id", "tenant_id", "kind", "payload", "status", "progress_done",
                "progress_total", "attempts", "max_attempts", "lease_owner",
                "cancel_requested", "timings")),
            *(sa.column(c, sa.DateTime()) for c in (
                "run_after", "lease_expires_at", "created_at", "updated_at")),
        )
        naive = start.replace(tzinfo=None)
        async with db.engine.begin() as conn:
            for tenant in ("a", "b"):
                await conn.execute(tenants.insert().values(
                    id=tenant, name=tenant, name_key=tenant, status="active",
                    created_at=naive, updated_at=naive))
            for n, (job_id, tenant, status) in enumerate(
                [("a1", "a", "running"), ("a2", "a", "queued"), ("b1", "b", "queued")]
            ):
                at = naive + timedelta(seconds=n)
                await conn.execute(jobs.insert().values(
                    id=job_id, tenant_id=tenant, kind=KIND, payload="{}", status=status,
                    progress_done=0, progress_total=0, attempts=int(status == "running"),
                    max_attempts=3, lease_owner="gone" if status == "running" else None,
                    cancel_requested=False, timings="{}", run_after=at,
                    lease_expires_at=at + timedelta(seconds=30) if status == "running" else None,
                    created_at=at, updated_at=at))
        assert await migrate.upgrade(db)
        clock.advance(60)
        queue = SqlJobQueue(db, clock=clock)
        first = await _claim(queue, "w1")
        assert (first.id, first.attempts) == ("a1", 2)
        assert [(await _claim(queue, w)).id for w in ("w2", "w3")] == ["b1", "a2"]
    finally:
        await db.dispose()
        if backend.name == "postgresql":
            name = url.rsplit("/", 1)[1]
            await shared_postgres().execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _upgrade_to(connection: Any, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrate.MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _nodes(plan: Any) -> Any:
    for item in plan if isinstance(plan, list) else [plan]:
        node = item.get("Plan", item)
        yield node
        for child in node.get("Plans", []):
            yield from _nodes(child)


def _rows_read(node: dict[str, Any]) -> float:
    """Rows a plan node produced or filtered away, over all its loops."""
    loops = float(node.get("Actual Loops", 1))
    kept = float(node.get("Actual Rows", 0)) * loops
    removed = float(node.get("Rows Removed by Filter", 0)) + float(
        node.get("Rows Removed by Index Recheck", 0)
    )
    return kept + removed

