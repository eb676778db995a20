"""The revocation list against a real SQLite store: cross-process signal, races, pruning."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, text

from ragd.auth.revocation import RevocationList
from ragd.db import migrate
from ragd.db.engine import Database
from ragd.db.tables import AuthEventRow, utcnow
from ragd.errors import Unavailable
from ragd.ops.files import FileChangeSignal
from ragd.stores.base import AuthEvent
from ragd.stores.identity import SqlIdentityStore
from tests.fake_clock import FakeClock
from tests.waiting import settle


class GatedStore(SqlIdentityStore):
    """The real store, whose event reads wait for a gate (to hold a sync in flight)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()
        self.reads = 0

    async def events_since(self, seq: int, *, limit: int = 1000) -> list[AuthEvent]:
        self.reads += 1
        self.entered.set()
        await self.gate.wait()
        return await super().events_since(seq, limit=limit)


class Transport:
    """A change signal whose transport the test controls: ``deaf`` (as PostgreSQL's while its
    listener reconnects: every check says "changed") and ``lose()`` (a reconnect)."""

    def __init__(self) -> None:
        self.deaf = False
        self._lost = False

    def lose(self) -> None:
        self._lost = True

    def changed(self) -> bool:
        return self.deaf

    def missed(self) -> bool:
        lost, self._lost = self._lost, False
        return lost

    def notify(self) -> None:
        pass


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'ragd.db'}")
    await migrate.upgrade(database)
    yield database
    await database.dispose()


async def _session(store: SqlIdentityStore) -> tuple[str, str, str]:
    tenant, user = await store.create_tenant_with_admin("t", "a@acme.io", "x")
    await store.create_session(tenant.id, user.id, session_id="s1", refresh_jti="j1",
                               expires_at=utcnow() + timedelta(days=1))
    return tenant.id, user.id, "s1"


async def test_other_process_sees_revocation_on_next_check(db: Database, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    store = SqlIdentityStore(db)
    here = RevocationList(store, FileChangeSignal(marker), sync_interval=3600)
    there = RevocationList(store, FileChangeSignal(marker), sync_interval=3600)
    tenant_id, user_id, sid = await _session(store)
    await here.load()
    await there.load()
    assert there.check(user_id=user_id, tenant_id=tenant_id, session_id=sid).allowed

    await store.revoke_session(tenant_id, sid, "logout")
    await here.changed_here()
    assert not here.check(user_id=user_id, tenant_id=tenant_id, session_id=sid).allowed

    await there.refresh_if_changed()  # what every request does first
    decision = there.check(user_id=user_id, tenant_id=tenant_id, session_id=sid)
    assert decision.reason == "session_revoked"


async def test_request_during_inflight_sync_waits_for_it(db: Database, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    plain = SqlIdentityStore(db)
    gated = GatedStore(db)
    here = RevocationList(plain, FileChangeSignal(marker), sync_interval=3600)
    there = RevocationList(gated, FileChangeSignal(marker), sync_interval=3600)
    tenant_id, user_id, sid = await _session(plain)
    await here.load()
    await there.load()

    await plain.revoke_session(tenant_id, sid, "logout")
    await here.changed_here()
    gated.gate.clear()
    gated.entered.clear()
    first = asyncio.create_task(there.refresh_if_changed())
    await gated.entered.wait()  # the first request's sync is now in flight
    second = asyncio.create_task(there.refresh_if_changed())
    await settle()  # a request that skipped the sync would be done now (it needs no I/O)
    assert not second.done(), "a request slipped past an unfinished sync"
    gated.gate.set()
    await asyncio.gather(first, second)
    assert not there.check(user_id=user_id, tenant_id=tenant_id, session_id=sid).allowed


async def test_event_numbers_are_never_reused_after_pruning(db: Database, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    store = SqlIdentityStore(db)
    watcher = RevocationList(store, FileChangeSignal(marker), sync_interval=3600)
    tenant_id, user_id, sid = await _session(store)
    await store.update_tenant(tenant_id, status="suspended")
    await store.update_tenant(tenant_id, status="active")
    await watcher.load()
    seen = watcher.last_seq
    assert seen >= 2
    async with db.transaction() as s:
        await s.execute(delete(AuthEventRow))
    await store.revoke_session(tenant_id, sid, "logout")
    events = await store.events_since(seen)
    assert [e.kind for e in events] == ["session"] and events[0].seq > seen
    await watcher.sync()
    assert watcher.check(user_id=user_id, tenant_id=tenant_id, session_id=sid).reason == (
        "session_revoked"
    )
    assert watcher.loads == 1  # the new event follows the watermark: nothing was lost


async def test_events_pruned_past_the_watermark_reload_in_full(
    db: Database, tmp_path: Path
) -> None:
    store = SqlIdentityStore(db)
    watcher = RevocationList(store, FileChangeSignal(tmp_path / "marker"), sync_interval=3600)
    tenant_id, user_id, sid = await _session(store)
    await store.update_tenant(tenant_id, status="suspended")
    await store.update_tenant(tenant_id, status="active")
    await watcher.load()
    await store.revoke_session(tenant_id, sid, "logout")  # never read by the watcher...
    async with db.transaction() as s:
        await s.execute(delete(AuthEventRow))  # ...and pruned, with the watermark's event
    await store.update_tenant(tenant_id, status="suspended")
    await watcher.sync()
    assert watcher.loads == 2
    assert watcher.check(user_id=user_id, tenant_id=tenant_id, session_id=sid).reason == (
        "session_revoked"
    )
    assert not watcher.check(user_id=user_id, tenant_id=tenant_id, session_id=None).allowed


async def test_a_gap_above_a_kept_watermark_is_caught_up_not_reloaded(
    db: Database, tmp_path: Path
) -> None:
    store = SqlIdentityStore(db)
    watcher = RevocationList(store, FileChangeSignal(tmp_path / "marker"), sync_interval=3600)
    tenant_id, user_id, sid = await _session(store)
    await store.update_tenant(tenant_id, status="suspended")
    await store.update_tenant(tenant_id, status="active")
    await watcher.load()
    # A number given up by a rolled-back append (as PostgreSQL's sequences do).
    async with db.transaction() as s:
        await s.execute(text("UPDATE sqlite_sequence SET seq = seq + 5 WHERE name = 'auth_events'"))
    await store.revoke_session(tenant_id, sid, "logout")
    await watcher.sync()
    assert watcher.check(user_id=user_id, tenant_id=tenant_id, session_id=sid).reason == (
        "session_revoked"
    )
    assert watcher.loads == 1


async def test_a_missed_notification_reloads_in_full(db: Database) -> None:
    store = SqlIdentityStore(db)
    transport = Transport()
    watcher = RevocationList(store, transport, sync_interval=3600)
    tenant_id, user_id, sid = await _session(store)
    await watcher.load()
    await store.revoke_session(tenant_id, sid, "logout")
    await watcher.refresh_if_changed()  # nothing heard, nothing stale: no query
    assert watcher.check(user_id=user_id, tenant_id=tenant_id, session_id=sid).allowed
    transport.lose()
    await watcher.refresh_if_changed()
    assert not watcher.check(user_id=user_id, tenant_id=tenant_id, session_id=sid).allowed
    assert watcher.loads == 2


async def test_requests_queued_behind_a_sync_share_the_next_one(db: Database) -> None:
    """A deaf signal makes every request ask for a sync; those that arrive while one is in
    flight are all covered by the one after it, not one sync each."""
    store = GatedStore(db)
    transport = Transport()
    watcher = RevocationList(store, transport, sync_interval=3600)
    await _session(store)
    await watcher.load()
    transport.deaf = True
    store.gate.clear()
    first = asyncio.create_task(watcher.refresh_if_changed())
    await store.entered.wait()
    queued = [asyncio.create_task(watcher.refresh_if_changed()) for _ in range(8)]
    await settle()
    store.gate.set()
    await asyncio.gather(first, *queued)
    assert store.reads == 2


async def test_failed_sync_fails_closed(db: Database, tmp_path: Path) -> None:
    store = SqlIdentityStore(db)
    clock = FakeClock()
    watcher = RevocationList(store, FileChangeSignal(tmp_path / "marker"), sync_interval=2.0,
                             clock=clock)
    await watcher.load()
    async with db.transaction() as s:
        await s.execute(text("DROP TABLE auth_events"))  # every sync query now fails
    await watcher.refresh_if_changed()  # fresh and no signal: no sync, nothing to fail
    clock.advance(2.5)  # the periodic sync is due
    with pytest.raises(Unavailable):
        await watcher.refresh_if_changed()
