"""Auth events on PostgreSQL (``stores/identity.py``): the appending transaction notifies
every replica exactly at commit (once, however many events it appends; never when it rolls
back), and a rolled-back append's gap in the numbers costs a revocation list nothing (no
full reload: the watermark's event is still there, so nothing after it was pruned)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from ragd.auth.revocation import RevocationList
from ragd.db.engine import Database
from ragd.db.listen import Listener, build_listener, channel_name
from ragd.db.sequence import AUTH_EVENTS
from ragd.db.tables import utcnow
from ragd.ops.signals import build_change_signal
from ragd.stores.identity import SqlIdentityStore, _event
from tests.conftest import make_settings
from tests.postgres import PostgresServer
from tests.waiting import eventually

BARRIER = channel_name("test_barrier")


@dataclass
class Deployment:
    url: str
    db: Database
    store: SqlIdentityStore
    listener: Listener
    heard: list[str]
    barriers: list[str]

    async def barrier(self) -> None:
        """Wait until every notification committed so far has arrived."""
        token = str(uuid.uuid4())
        async with self.db.transaction() as s:
            await s.execute(text("SELECT pg_notify(:c, :t)"), {"c": BARRIER, "t": token})
        await eventually(lambda: token in self.barriers, what="the barrier notification")


@pytest.fixture
async def deployment(postgres: PostgresServer) -> AsyncIterator[Deployment]:
    url = await postgres.fresh_database("events")
    db = Database(url)
    listener = build_listener(url)
    assert listener is not None
    heard: list[str] = []
    barriers: list[str] = []
    listener.subscribe(channel_name(AUTH_EVENTS), heard.append)
    listener.subscribe(BARRIER, barriers.append)
    await listener.start()
    try:
        yield Deployment(url, db, SqlIdentityStore(db), listener, heard, barriers)
    finally:
        await listener.close()
        await db.dispose()


async def _sessions(store: SqlIdentityStore, count: int) -> tuple[str, str, list[str]]:
    tenant = await store.create_tenant(f"acme-{uuid.uuid4()}")
    user = await store.create_user(tenant.id, f"{uuid.uuid4()}@acme.example", "hash")
    ids = []
    for _ in range(count):
        session_id = str(uuid.uuid4())
        await store.create_session(tenant.id, user.id, session_id=session_id,
                                   refresh_jti=str(uuid.uuid4()),
                                   expires_at=utcnow() + timedelta(days=1))
        ids.append(session_id)
    return tenant.id, user.id, ids


async def test_one_notification_per_committed_change(deployment: Deployment) -> None:
    tenant, user, sessions = await _sessions(deployment.store, 3)
    await deployment.barrier()
    assert deployment.heard == []  # creating sessions changes no one's access
    assert await deployment.store.revoke_user_sessions(tenant, user, "logout_all") == 3
    await deployment.barrier()
    assert deployment.heard == [""]  # three events, one transaction, one notification
    await deployment.store.revoke_session(tenant, sessions[0], "logout")  # already revoked
    await deployment.barrier()
    assert deployment.heard == [""]


async def test_a_rolled_back_append_notifies_no_one_and_costs_no_reload(
    deployment: Deployment, tmp_path: Path
) -> None:
    store = deployment.store
    tenant, user, sessions = await _sessions(store, 1)
    await store.update_tenant(tenant, status="suspended")
    await store.update_tenant(tenant, status="active")
    settings = make_settings(tmp_path / "data", database={"url": deployment.url})
    watcher = RevocationList(
        store, build_change_signal(settings, AUTH_EVENTS, deployment.listener),
        sync_interval=3600,
    )
    await watcher.load()
    watermark = watcher.last_seq

    with pytest.raises(RuntimeError):
        async with deployment.db.transaction() as s:
            await _event(s, "session", sessions[0])
            await s.flush()  # the event's number is drawn, then given up
            raise RuntimeError("roll back")
    await deployment.barrier()
    heard = len(deployment.heard)
    assert heard == 2  # the two status changes; nothing from the rolled-back append

    await store.revoke_session(tenant, sessions[0], "logout")
    (event,) = await store.events_since(watermark)
    assert event.seq > watermark + 1  # a gap: PostgreSQL's sequences are not transactional
    await deployment.barrier()
    await watcher.refresh_if_changed()
    assert watcher.check(user_id=user, tenant_id=tenant, session_id=sessions[0]).reason == (
        "session_revoked"
    )
    assert watcher.loads == 1  # caught up from the watermark, not reloaded
    assert watcher.last_seq == event.seq
