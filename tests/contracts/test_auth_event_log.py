"""The auth event log's promises to a revocation list (:class:`~ragd.stores.base.AuthEventLog`),
run against every backend: the revocation snapshot is one consistent snapshot (exactly the
state after its ``last_seq``, even while another process keeps revoking), and
``pruned_through`` tells a gap left by pruning from any other gap."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from ragd.db.tables import utcnow
from ragd.stores.base import IdentityStore
from tests.contracts.site import Site

SESSIONS = 40


async def test_the_snapshot_is_exactly_the_state_after_its_watermark(
    site: Site, identity: IdentityStore, tenant: str
) -> None:
    user = await identity.create_user(tenant, "ada@acme.example", "hash")
    sessions = []
    for _ in range(SESSIONS):
        session_id = str(uuid.uuid4())
        await identity.create_session(tenant, user.id, session_id=session_id,
                                      refresh_jti=str(uuid.uuid4()),
                                      expires_at=utcnow() + timedelta(days=1))
        sessions.append(session_id)
    start = (await identity.revocation_snapshot(utcnow())).last_seq
    writer = site.another_process().identity()
    done = asyncio.Event()

    async def revoke_all() -> None:
        for session_id in sessions:
            await writer.revoke_session(tenant, session_id, "logout")
        done.set()

    task = asyncio.create_task(revoke_all())
    checked = 0
    while not done.is_set() or checked == 0:
        snapshot = await identity.revocation_snapshot(utcnow())
        events = await identity.events_since(start)
        revoked_by_then = {e.subject for e in events if e.seq <= snapshot.last_seq}
        # Neither a revocation after the watermark nor one before it missing: a sync from
        # last_seq then applies every later event exactly once.
        assert set(snapshot.revoked_sessions) & set(sessions) == revoked_by_then
        checked += 1
    await task
    final = await identity.revocation_snapshot(utcnow())
    assert set(final.revoked_sessions) >= set(sessions)


async def test_pruned_through_tells_a_pruned_gap_from_any_other(
    identity: IdentityStore, tenant: str
) -> None:
    assert await identity.pruned_through(0)  # nothing at or below 0, ever
    await identity.update_tenant(tenant, status="suspended")
    await identity.update_tenant(tenant, status="active")
    first, second = (e.seq for e in await identity.events_since(0))
    assert not await identity.pruned_through(first)
    assert not await identity.pruned_through(second)
    # Past the retention every event is pruned: whatever followed a watermark may be gone.
    await identity.prune_expired(utcnow() + timedelta(days=2))
    assert await identity.events_since(0) == []
    assert await identity.pruned_through(second)
    await identity.update_tenant(tenant, status="suspended")
    (third,) = (e.seq for e in await identity.events_since(0))
    assert third > second  # numbers are never reused
    assert await identity.pruned_through(second)
    assert not await identity.pruned_through(third)
