"""Read-then-write under concurrency: a check that a write depends on still holds when the
write commits, on every backend.

The SQL stores were written when SQLite ran one writer at a time, so code that read a row and
then wrote on what it read could not be raced. PostgreSQL runs many writers at READ COMMITTED:
what a transaction read may change before it writes. So each store locks the row that governs
its decision (``SELECT ... FOR UPDATE``, which SQLite ignores), writes with one atomic
conditional statement, or leaves the rule to a constraint mapped to a clean error. Two kinds
of test here:

* **storms**, on every backend: many concurrent operations through two engines (two
  processes of one deployment) at once; the rule must hold whatever the interleaving;
* **staged races**, on PostgreSQL, the backend with concurrent writers: a third process holds
  a row lock so that one operation stops half-way (after its checks, before its writes when
  nothing else locks), its rival runs, and the lock is released. The interleaving that broke
  each rule is forced every run; progress is awaited through ``pg_stat_activity`` (which
  backends wait for a lock), never slept for. On SQLite these interleavings cannot happen
  (one writer holds the database), so there is nothing to stage.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select, text, update

from ragd.db.engine import Database
from ragd.db.sequence import AUTH_EVENTS, lock_id
from ragd.db.tables import (
    ChunkRow,
    CollectionRow,
    ConversationRow,
    DocumentRow,
    JobRow,
    SessionRow,
    UserRow,
)
from ragd.errors import Conflict, InvalidInput, NotFound, RagdError
from ragd.jobs.factory import ManagedJobQueue
from ragd.stores.base import IdentityStore, Privilege, User
from ragd.stores.catalog import INGEST_JOB, Catalog, CommitOutcome, Upload
from ragd.stores.conversations import Conversations, NewMessage
from tests.contracts.backends import PostgresBackend
from tests.contracts.content import (
    EMBEDDER,
    WORKER,
    chunks,
    claim,
    ingest,
    new_collection,
    upload,
    version_commit,
)
from tests.contracts.site import Site, open_site
from tests.postgres import PostgresServer
from tests.waiting import eventually

HASH = "argon2id$not-a-real-hash"
OTHER_EMBEDDER = "another-embedder"
PLATFORM = Privilege.PLATFORM_ADMIN
T = TypeVar("T")


async def _both(*calls: Awaitable[T]) -> list[T | BaseException]:
    """Run ``calls`` at once; each one's result or exception."""
    return await asyncio.gather(*calls, return_exceptions=True)


def _unexpected(results: Sequence[object], *allowed: type[RagdError]) -> list[object]:
    """The results that are exceptions other than the ``allowed`` domain refusals (an
    IntegrityError, a deadlock, anything that would be a 500)."""
    return [r for r in results if isinstance(r, BaseException) and not isinstance(r, allowed)]


def _versioned(text_: str) -> Upload:
    return upload(text_, filename=f"{hashlib.sha256(text_.encode()).hexdigest()[:8]}.txt")


async def _replayed(catalog: Catalog, tenant: str) -> set[int]:
    """The chunk keys an index that replayed the tenant's change log would hold."""
    keys: set[int] = set()
    for change in await catalog.changes_after(tenant, 0, limit=10_000):
        if change.op == "upsert":
            keys.add(change.chunk_key)
        else:
            keys.discard(change.chunk_key)
    return keys


async def _stored(catalog: Catalog, tenant: str) -> set[int]:
    return set(await catalog.chunk_keys(tenant, after=0, limit=10_000))


async def _queued_ingest_jobs(queue: ManagedJobQueue, tenant: str) -> list[str]:
    """The documents of the tenant's queued ingestion jobs, one entry per job."""
    page = await queue.list(tenant, status="queued", limit=500)
    return [job.payload["document_id"] for job in page.items if job.kind == INGEST_JOB]


# == storms: every backend =====================================================================


async def test_concurrent_turns_of_one_conversation_get_distinct_consecutive_numbers(
    site: Site, identity: IdentityStore, tenant: str
) -> None:
    user = (await identity.create_user(tenant, "ada@acme.example", HASH)).id
    stores = [site.conversations(), site.another_process().conversations()]
    created = await stores[0].create(tenant, user, "Cranes")
    results = await _both(*(
        stores[turn % 2].append(tenant, user, created.id, [
            NewMessage("user", f"question {turn}"), NewMessage("assistant", f"answer {turn}"),
        ])
        for turn in range(20)
    ))
    assert results == [True] * 20
    found = await stores[1].get(tenant, user, created.id)
    assert found is not None and found.message_count == 40
    assert [m.seq for m in found.messages] == list(range(1, 41))
    # A turn's two messages are adjacent: turns never interleave.
    pairs = [found.messages[i : i + 2] for i in range(0, 40, 2)]
    assert all(q.content.split()[1] == a.content.split()[1] for q, a in pairs)


async def test_first_ingestions_with_two_embedders_record_one_and_refuse_the_other(
    site: Site, catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    catalogs = [catalog, site.another_process().catalog()]
    commits = []
    for n in range(8):
        accepted = await catalog.add_document(
            tenant, collection_id, upload(f"document {n}"), max_attempts=3
        )
        assert accepted.job is not None
        worker = f"worker-{n}"
        job = await claim(queue, accepted.job.id, worker)
        commits.append(version_commit(
            job, accepted.document.id, 1, chunks(accepted.document.id, 1, [f"text {n}"]),
            worker=worker, embedder=EMBEDDER if n % 2 else OTHER_EMBEDDER,
        ))
    results = await _both(*(
        catalogs[n % 2].commit_version(commit) for n, commit in enumerate(commits)
    ))
    assert _unexpected(results, InvalidInput) == []
    recorded = await catalog.get_collection(tenant, collection_id)
    assert recorded is not None and recorded.embedder_name in (EMBEDDER, OTHER_EMBEDDER)
    # Exactly the versions of the recorded embedder are in; every other one was refused.
    for commit, result in zip(commits, results, strict=True):
        if commit.embedder_name == recorded.embedder_name:
            assert result is CommitOutcome.COMMITTED
        else:
            assert isinstance(result, InvalidInput) and result.code == "embedder_mismatch"


@pytest.mark.parametrize("action", ["demote", "deactivate", "delete"])
async def test_admins_removed_at_once_leave_one_admin(
    site: Site, identity: IdentityStore, tenant: str, action: str
) -> None:
    admins = [
        await identity.create_user(tenant, f"admin{n}@acme.example", HASH, role="admin")
        for n in range(4)
    ]
    stores = [identity, site.another_process().identity()]
    results = await _both(*(
        _remove(stores[n % 2], admin, action, Privilege.TENANT_ADMIN)
        for n, admin in enumerate(admins)
    ))
    assert _unexpected(results, Conflict) == []
    refused = [r for r in results if isinstance(r, Conflict)]
    assert [r.code for r in refused] == ["last_admin"]
    left = [u for u in await identity.list_users(tenant, limit=10, offset=0)
            if u.role == "admin" and u.is_active]
    assert len(left) == 1


@pytest.mark.parametrize("action", ["deactivate", "delete"])
async def test_platform_admins_removed_at_once_leave_one(
    site: Site, identity: IdentityStore, tenant: str, action: str
) -> None:
    # Members with the platform privilege, so that only the platform rule is in play.
    platform = [
        await identity.create_user(tenant, f"root{n}@acme.example", HASH, is_superuser=True)
        for n in range(4)
    ]
    stores = [identity, site.another_process().identity()]
    results = await _both(*(
        _remove(stores[n % 2], user, action, PLATFORM) for n, user in enumerate(platform)
    ))
    assert _unexpected(results, Conflict) == []
    assert [r.code for r in results if isinstance(r, Conflict)] == ["last_platform_admin"]
    left = [u for u in await identity.list_users(tenant, limit=10, offset=0)
            if u.is_superuser and u.is_active]
    assert len(left) == 1


async def test_suspensions_at_once_leave_an_active_platform_admin(
    site: Site, identity: IdentityStore
) -> None:
    tenants = [(await identity.create_tenant(f"t{n}")).id for n in range(4)]
    for n, tenant in enumerate(tenants):
        await identity.create_user(tenant, f"root{n}@example.org", HASH, is_superuser=True)
    stores = [identity, site.another_process().identity()]
    results = await _both(*(
        stores[n % 2].update_tenant(tenant, status="suspended")
        for n, tenant in enumerate(tenants)
    ))
    assert _unexpected(results, Conflict) == []
    assert [r.code for r in results if isinstance(r, Conflict)] == ["last_platform_admin"]
    active = [t for t in tenants if not await identity.tenant_suspended(t)]
    assert len(active) == 1


async def test_logins_racing_a_demotion_carry_the_role_they_started_with(
    site: Site, identity: IdentityStore, tenant: str
) -> None:
    await identity.create_user(tenant, "boss@acme.example", HASH, role="admin")
    admin = await identity.create_user(tenant, "ada@acme.example", HASH, role="admin")
    stores = [identity, site.another_process().identity()]
    sessions = [str(uuid.uuid4()) for _ in range(8)]
    logins = [
        stores[n % 2].create_session(
            tenant, admin.id, session_id=session, refresh_jti=str(uuid.uuid4()),
            expires_at=datetime(2100, 1, 1, tzinfo=UTC),
        )
        for n, session in enumerate(sessions)
    ]
    demotion = stores[1].update_user(
        tenant, admin.id, acting=Privilege.TENANT_ADMIN, role="member"
    )
    results = await _both(*logins[:4], demotion, *logins[4:])
    assert _unexpected(results) == []
    for session, started in zip(sessions, results[:4] + results[5:], strict=True):
        assert isinstance(started, User)
        if started.role == "admin":  # started before the demotion: revoked by it
            assert await identity.session_revoked(session) is not None
    # No session starts for a user who is inactive or gone.
    await identity.update_user(tenant, admin.id, acting=PLATFORM, is_active=False)
    for user_id in (admin.id, str(uuid.uuid4())):
        assert await identity.create_session(
            tenant, user_id, session_id=str(uuid.uuid4()), refresh_jti=str(uuid.uuid4()),
            expires_at=datetime(2100, 1, 1, tzinfo=UTC),
        ) is None


async def test_api_keys_created_at_once_stay_within_the_limit(
    site: Site, identity: IdentityStore, tenant: str
) -> None:
    user = await identity.create_user(tenant, "ada@acme.example", HASH)
    stores = [identity, site.another_process().identity()]
    results = await _both(*(
        stores[n % 2].create_api_key(
            tenant, user.id, key_id=f"key{n:02d}", name=f"key {n}", secret_hash="h" * 64,
            expires_at=None, max_keys=5,
        )
        for n in range(12)
    ))
    assert _unexpected(results, InvalidInput) == []
    refused = [r for r in results if isinstance(r, InvalidInput)]
    assert {r.code for r in refused} == {"too_many_keys"} and len(refused) == 7
    assert len(await identity.list_api_keys(tenant, user.id)) == 5


async def test_the_same_content_uploaded_at_once_is_one_document(
    site: Site, catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    catalogs = [catalog, site.another_process().catalog()]
    results = await _both(*(
        catalogs[n % 2].add_document(tenant, collection_id, upload("same"), max_attempts=3)
        for n in range(10)
    ))
    assert _unexpected(results) == []
    accepted = [r for r in results if not isinstance(r, BaseException)]
    assert len({a.document.id for a in accepted}) == 1
    assert sum(not a.duplicate for a in accepted) == 1
    assert len(await _queued_ingest_jobs(queue, tenant)) == 1


async def test_replacements_at_once_each_add_a_version(
    site: Site, catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    first = await catalog.add_document(tenant, collection_id, upload("v1"), max_attempts=3)
    catalogs = [catalog, site.another_process().catalog()]
    results = await _both(*(
        catalogs[n % 2].replace_document(
            tenant, first.document.id, _versioned(f"v{n + 2}"), max_attempts=3
        )
        for n in range(6)
    ))
    assert _unexpected(results) == []
    assert all(r is not None and not isinstance(r, BaseException) and not r.duplicate
               for r in results)
    document = await catalog.get_document(tenant, first.document.id)
    assert document is not None and document.latest_version == 7
    assert sorted(
        r.document.latest_version for r in results if r is not None
        and not isinstance(r, BaseException)
    ) == list(range(2, 8))
    # Each replacement cancelled the job before it: one job is left to ingest the latest.
    assert await _queued_ingest_jobs(queue, tenant) == [first.document.id]


async def test_names_taken_at_once_are_one_success_and_clean_conflicts(
    site: Site, identity: IdentityStore, catalog: Catalog, tenant: str
) -> None:
    identities = [identity, site.another_process().identity()]
    tenants = await _both(*(
        identities[n % 2].create_tenant("Globex" if n % 2 else "GLOBEX") for n in range(8)
    ))
    assert _unexpected(tenants, Conflict) == []
    assert sum(not isinstance(r, BaseException) for r in tenants) == 1
    assert {r.code for r in tenants if isinstance(r, Conflict)} == {"tenant_exists"}

    registrations = await _both(*(
        identities[n % 2].create_tenant_with_admin(
            "Initech" if n % 2 else "INITECH", f"founder{n}@initech.example", HASH
        )
        for n in range(8)
    ))
    assert _unexpected(registrations, Conflict) == []
    assert sum(not isinstance(r, BaseException) for r in registrations) == 1
    assert {r.code for r in registrations if isinstance(r, Conflict)} == {"tenant_exists"}

    catalogs = [catalog, site.another_process().catalog()]
    collections = await _both(*(
        catalogs[n % 2].create_collection(
            tenant, "Docs" if n % 2 else "DOCS", description=None, metadata={}
        )
        for n in range(8)
    ))
    assert _unexpected(collections, Conflict) == []
    assert sum(not isinstance(r, BaseException) for r in collections) == 1
    assert {r.code for r in collections if isinstance(r, Conflict)} == {"collection_exists"}


async def test_uploads_racing_a_collection_deletion_leave_nothing_behind(
    site: Site, catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    collection_id = await new_collection(catalog, tenant)
    await ingest(catalog, queue, tenant, collection_id, ["kept until deleted"])
    other = site.another_process().catalog()
    uploads = [
        other.add_document(tenant, collection_id, upload(f"late {n}"), max_attempts=3)
        for n in range(8)
    ]
    removal = catalog.delete_collection(
        tenant, collection_id, inline_chunks=1000, max_attempts=3
    )
    results = await _both(*uploads[:4], removal, *uploads[4:])
    assert _unexpected(results, NotFound) == []
    assert {r.code for r in results if isinstance(r, NotFound)} <= {"collection_not_found"}
    assert await catalog.get_collection(tenant, collection_id) is None
    # No upload outlived the collection with a job still waiting to ingest it, and the change
    # log says what the catalog holds: nothing.
    assert await _queued_ingest_jobs(queue, tenant) == []
    assert await _replayed(catalog, tenant) == await _stored(catalog, tenant) == set()


async def test_every_catalog_write_at_once_never_deadlocks_and_keeps_the_log_true(
    site: Site, catalog: Catalog, queue: ManagedJobQueue, tenant: str
) -> None:
    """Every write of the catalog on one collection at once, through two processes: they
    lock in one order, so none waits for another in a cycle (PostgreSQL would fail one as
    Busy), and afterwards the change log still says exactly what the catalog holds."""
    collection_id = await new_collection(catalog, tenant)
    other = site.another_process().catalog()
    ready = [await ingest(catalog, queue, tenant, collection_id, [f"ready {n}"], seed=n)
             for n in range(2)]
    pending = []
    for n in range(4):
        accepted = await catalog.add_document(
            tenant, collection_id, upload(f"pending {n}"), max_attempts=3
        )
        assert accepted.job is not None
        job = await claim(queue, accepted.job.id, f"worker-{n}")
        texts = [f"pending {n} part {part}" for part in range(1 + 2 * n)]  # some staged
        pending.append(version_commit(
            job, accepted.document.id, 1, chunks(accepted.document.id, 1, texts),
            worker=f"worker-{n}",
        ))
    d0, d1 = (r.document.id for r in ready)
    results = await _both(
        catalog.commit_version(pending[0]), other.commit_version(pending[1]),
        catalog.commit_version(pending[2]), other.commit_version(pending[3]),
        other.replace_document(tenant, d0, upload("ready 0, edited"), max_attempts=3),
        catalog.replace_document(tenant, pending[0].document_id, upload("p0, edited"),
                                 max_attempts=3),
        catalog.delete_document(tenant, d1), other.delete_document(tenant, pending[1].document_id),
        catalog.finish_version(tenant, pending[2].document_id, 1, "failed", "broken"),
        other.start_version(tenant, pending[3].document_id, 1),
        catalog.add_document(tenant, collection_id, upload("new"), max_attempts=3),
        other.add_document(tenant, collection_id, upload("new"), max_attempts=3),
        other.update_collection(tenant, collection_id, name="Renamed"),
    )
    assert _unexpected(results) == []
    assert await _replayed(catalog, tenant) == await _stored(catalog, tenant)
    page = await catalog.list_documents(tenant, collection_id=collection_id, limit=100)
    for document in page.items:  # "ready" only when the latest version is the active one
        assert document.status != "ready" or document.active_version == document.latest_version
    # And the collection's deletion racing what is left.
    jobs = await _queued_ingest_jobs(queue, tenant)
    results = await _both(
        other.delete_collection(tenant, collection_id, inline_chunks=1000, max_attempts=3),
        catalog.add_document(tenant, collection_id, upload("too late"), max_attempts=3),
        *(catalog.replace_document(tenant, d, upload(f"again {d}"), max_attempts=3)
          for d in jobs),
    )
    assert _unexpected(results, NotFound) == []
    assert await _replayed(catalog, tenant) == await _stored(catalog, tenant) == set()
    assert await _queued_ingest_jobs(queue, tenant) == []


async def _remove(store: IdentityStore, user: User, action: str, acting: Privilege) -> object:
    if action == "delete":
        return await store.delete_user(user.tenant_id, user.id, acting=acting)
    if action == "demote":
        return await store.update_user(user.tenant_id, user.id, acting=acting, role="member")
    return await store.update_user(user.tenant_id, user.id, acting=acting, is_active=False)


# == staged races: PostgreSQL ==================================================================


@dataclass
class Stage:
    """One deployment on PostgreSQL seen from three processes: ``one`` and ``two`` race, a
    third engine holds the row locks that park them."""

    one: Site
    two: Site
    _third: Database

    @asynccontextmanager
    async def holding(self, column: Any, value: object) -> AsyncIterator[None]:
        """Hold ``FOR UPDATE`` on the row whose ``column`` is ``value`` until the block ends
        (then roll back: the holder writes nothing)."""
        async with self._third.engine.connect() as conn:
            transaction = await conn.begin()
            try:
                found = (await conn.execute(
                    select(column).where(column == value).with_for_update()
                )).all()
                assert found, f"no row to hold: {column} = {value}"
                yield
            finally:
                await transaction.rollback()

    @asynccontextmanager
    async def holding_turn(self, lock: int) -> AsyncIterator[None]:
        """Hold the transaction-scoped advisory lock ``lock`` until the block ends."""
        async with self._third.engine.connect() as conn:
            transaction = await conn.begin()
            try:
                await conn.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": lock})
                yield
            finally:
                await transaction.rollback()

    async def parked(self, *tasks: asyncio.Task[Any]) -> None:
        """Until each of ``tasks`` has finished or waits for a lock."""
        async def settled() -> bool:
            pending = sum(not task.done() for task in tasks)
            return pending == 0 or await self._waiting() >= pending

        await eventually(settled, what="the racing operations to finish or wait for a lock")

    async def _waiting(self) -> int:
        async with self._third.engine.connect() as conn:
            return int((await conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ))).scalar_one())

    async def expire_lease(self, job_id: str) -> None:
        """As if the job's worker stopped heartbeating long ago (claimable again)."""
        async with self._third.transaction() as s:
            await s.execute(update(JobRow).where(JobRow.id == job_id).values(
                lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC)
            ))


@pytest.fixture
async def stage(postgres: PostgresServer, tmp_path: Path) -> AsyncIterator[Stage]:
    # ``postgres`` (a session fixture outside the event loop) has started the server.
    site = await open_site(PostgresBackend(), tmp_path / "data")
    try:
        yield Stage(site, site.another_process(), site.another_process().db)
    finally:
        await site.close()


@pytest.fixture
async def staged_tenant(stage: Stage) -> str:
    return (await stage.one.identity().create_tenant("acme")).id


def _start(call: Awaitable[T]) -> asyncio.Task[T]:
    async def run() -> T:
        return await call

    return asyncio.create_task(run())


@pytest.mark.parametrize("count", [2, 5], ids=["one-transaction", "staged-batches"])
async def test_a_lease_taken_over_mid_commit_never_lets_both_workers_own_the_version(
    stage: Stage, staged_tenant: str, count: int
) -> None:
    tenant = staged_tenant
    catalog, queue = stage.one.catalog(), stage.one.queue()
    collection_id = await new_collection(catalog, tenant)
    ingested = await ingest(catalog, queue, tenant, collection_id, ["old text"])
    document_id = ingested.document.id
    replaced = await catalog.replace_document(tenant, document_id, upload("new"), max_attempts=3)
    assert replaced is not None and replaced.job is not None
    job = await claim(queue, replaced.job.id)
    texts = [f"new text {n}" for n in range(count)]
    commit = version_commit(job, document_id, 2, chunks(document_id, 2, texts))
    # The worker stalled past its lease; nobody has taken the job over yet, so it still may
    # commit. Its commit stops where it removes the old version's chunks (held by a third
    # process), after every check; meanwhile a second worker takes the lease over.
    await stage.expire_lease(job.id)
    async with stage.holding(ChunkRow.key, ingested.keys[0]):
        committing = _start(catalog.commit_version(commit))
        await stage.parked(committing)
        assert not committing.done(), await committing
        # The claimer skips a job that is locked (the queue claims with SKIP LOCKED).
        claiming = _start(stage.two.queue().claim("worker-2", [INGEST_JOB]))
        await stage.parked(committing, claiming)
    outcome, taken = await committing, await claiming
    # Either the commit held the job (the takeover found nothing to claim) or the takeover
    # won (the commit found its lease lost): never both a new owner and this commit.
    assert (taken is None) != (outcome is CommitOutcome.LEASE_LOST), (taken, outcome)
    if taken is None:
        assert outcome is CommitOutcome.COMMITTED
        assert await queue.complete(job.id, WORKER)


async def test_two_first_ingestions_with_different_embedders_one_is_refused(
    stage: Stage, staged_tenant: str
) -> None:
    tenant = staged_tenant
    one, two, queue = stage.one.catalog(), stage.two.catalog(), stage.one.queue()
    collection_id = await new_collection(one, tenant)
    commits = []
    for n, embedder in enumerate((EMBEDDER, OTHER_EMBEDDER)):
        accepted = await one.add_document(tenant, collection_id, upload(f"d{n}"), max_attempts=3)
        assert accepted.job is not None
        job = await claim(queue, accepted.job.id, f"worker-{n}")
        document_id = accepted.document.id
        commits.append(version_commit(
            job, document_id, 1, chunks(document_id, 1, [f"text {n}"]), worker=f"worker-{n}",
            embedder=embedder,
        ))
    async with stage.holding(DocumentRow.id, commits[0].document_id):
        first = _start(one.commit_version(commits[0]))
        await stage.parked(first)
        second = _start(two.commit_version(commits[1]))
        await stage.parked(first, second)
    results = await _both(first, second)
    assert _unexpected(results, InvalidInput) == []
    assert results[1] is CommitOutcome.COMMITTED
    assert isinstance(results[0], InvalidInput) and results[0].code == "embedder_mismatch"
    recorded = await one.get_collection(tenant, collection_id)
    assert recorded is not None and recorded.embedder_name == OTHER_EMBEDDER


async def test_turns_parked_on_one_conversation_get_distinct_numbers(
    stage: Stage, staged_tenant: str
) -> None:
    tenant = staged_tenant
    user = (await stage.one.identity().create_user(tenant, "ada@acme.example", HASH)).id
    one, two = stage.one.conversations(), stage.two.conversations()
    created = await one.create(tenant, user, "Cranes")

    def turn(store: Conversations, n: int) -> Awaitable[bool]:
        return store.append(tenant, user, created.id, [
            NewMessage("user", f"q{n}"), NewMessage("assistant", f"a{n}")
        ])

    async with stage.holding(ConversationRow.id, created.id):
        first = _start(turn(one, 1))
        await stage.parked(first)
        second = _start(turn(two, 2))
        await stage.parked(first, second)
    assert await _both(first, second) == [True, True]
    found = await one.get(tenant, user, created.id)
    assert found is not None
    assert [(m.seq, m.content) for m in found.messages] == [
        (1, "q1"), (2, "a1"), (3, "q2"), (4, "a2")
    ]


@pytest.mark.parametrize("platform", [False, True], ids=["tenant-admins", "platform-admins"])
async def test_two_admins_removed_at_once_one_is_refused(
    stage: Stage, staged_tenant: str, platform: bool
) -> None:
    tenant = staged_tenant
    identity = stage.one.identity()
    role = "member" if platform else "admin"
    first, second = [
        await identity.create_user(tenant, f"a{n}@acme.example", HASH, role=role,
                                   is_superuser=platform)
        for n in range(2)
    ]
    acting = PLATFORM if platform else Privilege.TENANT_ADMIN
    action = "deactivate" if platform else "demote"
    async with stage.holding(UserRow.id, first.id):
        one = _start(_remove(identity, first, action, acting))
        await stage.parked(one)
        two = _start(_remove(stage.two.identity(), second, action, acting))
        await stage.parked(one, two)
    results = await _both(one, two)
    assert _unexpected(results, Conflict) == []
    assert isinstance(results[0], Conflict)
    assert results[0].code == ("last_platform_admin" if platform else "last_admin")
    kept = await identity.get_user(tenant, first.id)
    assert kept is not None and kept.is_active and kept.role == role


async def test_a_login_racing_a_demotion_never_keeps_the_old_role(
    stage: Stage, staged_tenant: str
) -> None:
    tenant = staged_tenant
    identity = stage.one.identity()
    await identity.create_user(tenant, "boss@acme.example", HASH, role="admin")
    admin = await identity.create_user(tenant, "ada@acme.example", HASH, role="admin")
    old_session = str(uuid.uuid4())
    await identity.create_session(
        tenant, admin.id, session_id=old_session, refresh_jti=str(uuid.uuid4()),
        expires_at=datetime(2100, 1, 1, tzinfo=UTC),
    )
    # The demotion stops where it revokes the user's sessions, after it changed the role; a
    # login (its password already checked against the admin) starts a session meanwhile.
    new_session = str(uuid.uuid4())
    async with stage.holding(SessionRow.id, old_session):
        demoting = _start(_remove(identity, admin, "demote", Privilege.TENANT_ADMIN))
        await stage.parked(demoting)
        starting = _start(stage.two.identity().create_session(
            tenant, admin.id, session_id=new_session, refresh_jti=str(uuid.uuid4()),
            expires_at=datetime(2100, 1, 1, tzinfo=UTC),
        ))
        await stage.parked(demoting, starting)
    demoted, started = await _both(demoting, starting)
    assert isinstance(demoted, User) and demoted.role == "member"
    assert await identity.session_revoked(old_session) is not None
    # The new session's tokens carry the role it started with: the new one, or the session
    # was revoked with the others.
    revoked = await identity.session_revoked(new_session) is not None
    assert revoked or (isinstance(started, User) and started.role == "member"), started


async def test_a_logout_racing_the_users_deactivation_does_not_deadlock(
    stage: Stage, staged_tenant: str
) -> None:
    tenant = staged_tenant
    identity = stage.one.identity()
    user = await identity.create_user(tenant, "ada@acme.example", HASH)
    session = str(uuid.uuid4())
    await identity.create_session(tenant, user.id, session_id=session,
                                  refresh_jti=str(uuid.uuid4()),
                                  expires_at=datetime(2100, 1, 1, tzinfo=UTC))
    await identity.create_api_key(tenant, user.id, key_id="key01", name="ci",
                                  secret_hash="h" * 64, expires_at=None)
    # Both append auth events; the log's append turn is held, so both queue for it: the
    # deactivation first (having revoked the key), then the logout (having its session).
    async with stage.holding_turn(lock_id(AUTH_EVENTS)):
        deactivating = _start(_remove(identity, user, "deactivate", PLATFORM))
        await stage.parked(deactivating)
        logging_out = _start(stage.two.identity().revoke_session(tenant, session, "logout"))
        await stage.parked(deactivating, logging_out)
    results = await _both(deactivating, logging_out)
    assert _unexpected(results) == []  # a deadlock would fail one of them as Busy
    assert await identity.session_revoked(session) is not None
    assert await identity.user_blocked(user.id)


async def test_a_platform_admin_deactivated_while_the_others_tenant_is_suspended(
    stage: Stage,
) -> None:
    identity = stage.one.identity()
    tenants = [(await identity.create_tenant(name)).id for name in ("ops", "lab")]
    first, _ = [
        await identity.create_user(tenant, f"root@{tenant}.example", HASH, is_superuser=True)
        for tenant in tenants
    ]
    async with stage.holding(UserRow.id, first.id):
        deactivating = _start(_remove(identity, first, "deactivate", PLATFORM))
        await stage.parked(deactivating)
        suspending = _start(stage.two.identity().update_tenant(tenants[1], status="suspended"))
        await stage.parked(deactivating, suspending)
    results = await _both(deactivating, suspending)
    assert _unexpected(results, Conflict) == []
    assert sum(isinstance(r, Conflict) for r in results) == 1
    kept = await identity.get_user(tenants[0], first.id)
    suspended = await identity.tenant_suspended(tenants[1])
    assert kept is not None and (kept.is_active or not suspended)


@pytest.mark.parametrize("removed", ["document", "collection"])
async def test_a_removal_racing_a_commit_leaves_the_log_equal_to_the_catalog(
    stage: Stage, staged_tenant: str, removed: str
) -> None:
    tenant = staged_tenant
    one, two, queue = stage.one.catalog(), stage.two.catalog(), stage.one.queue()
    collection_id = await new_collection(one, tenant)
    accepted = await one.add_document(tenant, collection_id, upload("doc"), max_attempts=3)
    assert accepted.job is not None
    job = await claim(queue, accepted.job.id)
    document_id = accepted.document.id
    commit = version_commit(job, document_id, 1, chunks(document_id, 1, ["a", "b"]))
    remove = (
        two.delete_document(tenant, document_id) if removed == "document" else
        two.delete_collection(tenant, collection_id, inline_chunks=1000, max_attempts=3)
    )
    async with stage.holding(DocumentRow.id, document_id):
        committing = _start(one.commit_version(commit))
        await stage.parked(committing)
        removing = _start(remove)
        await stage.parked(committing, removing)
    results = await _both(committing, removing)
    assert _unexpected(results) == []
    assert await one.get_document(tenant, document_id) is None
    # Every chunk the commit logged was logged away again by the removal.
    assert await _replayed(one, tenant) == await _stored(one, tenant) == set()


async def test_a_replacement_racing_a_commit_keeps_the_active_versions_bytes(
    stage: Stage, staged_tenant: str
) -> None:
    tenant = staged_tenant
    one, two, queue = stage.one.catalog(), stage.two.catalog(), stage.one.queue()
    collection_id = await new_collection(one, tenant)
    accepted = await one.add_document(tenant, collection_id, upload("v1"), max_attempts=3)
    assert accepted.job is not None
    job = await claim(queue, accepted.job.id)
    document_id = accepted.document.id
    commit = version_commit(job, document_id, 1, chunks(document_id, 1, ["v1 text"]))
    async with stage.holding(DocumentRow.id, document_id):
        committing = _start(one.commit_version(commit))
        await stage.parked(committing)
        replacing = _start(two.replace_document(tenant, document_id, upload("v2"),
                                                max_attempts=3))
        await stage.parked(committing, replacing)
    results = await _both(committing, replacing)
    assert _unexpected(results) == []
    document = await one.get_document(tenant, document_id)
    assert document is not None and document.latest_version == 2
    assert document.status == "queued"  # version 2 waits for its job
    if document.active_version is not None:
        content = await one.get_content(tenant, document_id, document.active_version)
        assert content is not None and content.content == b"v1"


async def test_two_replacements_at_once_both_land(stage: Stage, staged_tenant: str) -> None:
    tenant = staged_tenant
    one, two = stage.one.catalog(), stage.two.catalog()
    collection_id = await new_collection(one, tenant)
    accepted = await one.add_document(tenant, collection_id, upload("v1"), max_attempts=3)
    document_id = accepted.document.id
    async with stage.holding(DocumentRow.id, document_id):
        first = _start(one.replace_document(tenant, document_id, upload("v2"), max_attempts=3))
        await stage.parked(first)
        second = _start(two.replace_document(tenant, document_id, upload("v3"), max_attempts=3))
        await stage.parked(first, second)
    results = await _both(first, second)
    assert _unexpected(results) == []
    document = await one.get_document(tenant, document_id)
    assert document is not None and document.latest_version == 3
    assert await _queued_ingest_jobs(stage.one.queue(), tenant) == [document_id]


async def test_a_finished_version_never_overwrites_the_status_of_its_replacement(
    stage: Stage, staged_tenant: str
) -> None:
    tenant = staged_tenant
    one, two = stage.one.catalog(), stage.two.catalog()
    collection_id = await new_collection(one, tenant)
    accepted = await one.add_document(tenant, collection_id, upload("v1"), max_attempts=3)
    document_id = accepted.document.id
    async with stage.holding(DocumentRow.id, document_id):
        replacing = _start(two.replace_document(tenant, document_id, upload("v2"),
                                                max_attempts=3))
        await stage.parked(replacing)
        failing = _start(one.finish_version(tenant, document_id, 1, "failed", "parse error"))
        await stage.parked(replacing, failing)
    assert _unexpected(await _both(replacing, failing)) == []
    document = await one.get_document(tenant, document_id)
    assert document is not None
    assert (document.latest_version, document.status, document.error) == (2, "queued", None)


async def test_a_failed_document_uploaded_twice_at_once_is_queued_once(
    stage: Stage, staged_tenant: str
) -> None:
    tenant = staged_tenant
    one, two, queue = stage.one.catalog(), stage.two.catalog(), stage.one.queue()
    collection_id = await new_collection(one, tenant)
    accepted = await one.add_document(tenant, collection_id, upload("doc"), max_attempts=3)
    assert accepted.job is not None
    job = await claim(queue, accepted.job.id)
    assert await queue.fail(job.id, WORKER, "broken", retryable=False)
    document_id = accepted.document.id
    async with stage.holding(DocumentRow.id, document_id):
        first = _start(one.add_document(tenant, collection_id, upload("doc"), max_attempts=3))
        await stage.parked(first)
        second = _start(two.add_document(tenant, collection_id, upload("doc"), max_attempts=3))
        await stage.parked(first, second)
    results = await _both(first, second)
    assert _unexpected(results) == []
    assert await _queued_ingest_jobs(queue, tenant) == [document_id]
    document = await one.get_document(tenant, document_id)
    assert document is not None and document.status == "queued"


async def test_an_upload_racing_a_collection_deletion_leaves_no_job_behind(
    stage: Stage, staged_tenant: str
) -> None:
    tenant = staged_tenant
    one, two = stage.one.catalog(), stage.two.catalog()
    collection_id = await new_collection(one, tenant)
    async with stage.holding(CollectionRow.id, collection_id):
        uploading = _start(one.add_document(tenant, collection_id, upload("late"),
                                            max_attempts=3))
        await stage.parked(uploading)
        deleting = _start(two.delete_collection(tenant, collection_id, inline_chunks=1000,
                                                max_attempts=3))
        await stage.parked(uploading, deleting)
    results = await _both(uploading, deleting)
    assert _unexpected(results, NotFound) == []
    assert await one.get_collection(tenant, collection_id) is None
    assert await _queued_ingest_jobs(stage.one.queue(), tenant) == []


async def test_a_collection_being_deleted_is_never_renamed(
    stage: Stage, staged_tenant: str
) -> None:
    tenant = staged_tenant
    one, two = stage.one.catalog(), stage.two.catalog()
    collection_id = await new_collection(one, tenant)
    async with stage.holding(CollectionRow.id, collection_id):
        # More chunks than ``inline_chunks``: hidden at once and handed to a purge job.
        deleting = _start(one.delete_collection(tenant, collection_id, inline_chunks=-1,
                                                max_attempts=3))
        await stage.parked(deleting)
        renaming = _start(two.update_collection(tenant, collection_id, name="Manuals"))
        await stage.parked(deleting, renaming)
    results = await _both(deleting, renaming)
    assert _unexpected(results) == []
    assert results[1] is None  # the collection it renames is gone
    # The name is free: a collection being deleted never holds one.
    await new_collection(one, tenant, "Manuals")
