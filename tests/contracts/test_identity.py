"""The identity contract (:class:`~ragd.stores.base.IdentityStore`), run against every
backend: tenants, users, sessions and refresh rotation, API keys, and the auth event log that
every change of authentication state appends to."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

import pytest

from ragd.db.tables import utcnow
from ragd.errors import Conflict, PermissionDenied
from ragd.stores.base import IdentityStore, Privilege, RotateOutcome, User

HASH = "argon2id$not-a-real-hash"
MISSING = str(uuid.uuid4())


def _later(days: float = 1) -> datetime:
    return utcnow() + timedelta(days=days)


async def _admin(identity: IdentityStore, tenant: str, email: str) -> User:
    return await identity.create_user(tenant, email, HASH, role="admin")


async def _session(identity: IdentityStore, user: User, *, days: float = 1) -> tuple[str, str]:
    session_id, jti = str(uuid.uuid4()), str(uuid.uuid4())
    await identity.create_session(
        user.tenant_id, user.id, session_id=session_id, refresh_jti=jti,
        expires_at=_later(days),
    )
    return session_id, jti


async def _events(identity: IdentityStore, after: int = 0) -> list[tuple[str, str]]:
    return [(event.kind, event.subject) for event in await identity.events_since(after)]


# -- tenants ----------------------------------------------------------------------------------


async def test_tenant_names_are_unique_whatever_their_case(identity: IdentityStore) -> None:
    acme = await identity.create_tenant("Acme")
    assert await identity.get_tenant(acme.id) == acme
    assert await identity.get_tenant_by_name("ACME") == acme
    assert acme.status == "active"
    with pytest.raises(Conflict):
        await identity.create_tenant("acme")
    globex = await identity.create_tenant("Globex")
    with pytest.raises(Conflict):
        await identity.update_tenant(globex.id, name="aCME")
    assert await identity.get_tenant(MISSING) is None
    assert await identity.get_tenant_by_name("initech") is None
    assert await identity.update_tenant(MISSING, name="Initech") is None


async def test_a_tenant_and_its_first_admin_are_created_together_or_not_at_all(
    identity: IdentityStore,
) -> None:
    tenant, admin = await identity.create_tenant_with_admin(
        "Acme", "root@acme.example", HASH, is_superuser=True, is_verified=True
    )
    assert (admin.tenant_id, admin.role, admin.is_superuser, admin.is_verified) == (
        tenant.id, "admin", True, True
    )
    with pytest.raises(Conflict):  # the email is taken: no tenant "Globex" either
        await identity.create_tenant_with_admin("Globex", "root@acme.example", HASH)
    assert await identity.get_tenant_by_name("Globex") is None
    with pytest.raises(Conflict):
        await identity.create_tenant_with_admin("ACME", "other@acme.example", HASH)
    assert await identity.get_user_by_email("other@acme.example") is None
    assert await identity.count_users() == 1


async def test_tenants_are_listed_in_creation_order(identity: IdentityStore) -> None:
    ids = [(await identity.create_tenant(f"tenant-{n}")).id for n in range(5)]
    pages = [await identity.list_tenants(limit=2, offset=offset) for offset in (0, 2, 4, 6)]
    assert [[t.id for t in page] for page in pages] == [ids[:2], ids[2:4], ids[4:], []]


async def test_suspension_is_an_event_and_part_of_the_revocation_state(
    identity: IdentityStore, tenant: str
) -> None:
    start = (await identity.revocation_snapshot(utcnow())).last_seq
    renamed = await identity.update_tenant(tenant, name="Acme Corp")
    assert renamed is not None and renamed.name == "Acme Corp"
    assert await _events(identity, start) == []  # a rename changes no one's access
    suspended = await identity.update_tenant(tenant, status="suspended")
    assert suspended is not None and suspended.status == "suspended"
    assert await identity.tenant_suspended(tenant)
    assert await _events(identity, start) == [("tenant", tenant)]
    snapshot = await identity.revocation_snapshot(utcnow())
    assert snapshot.suspended_tenant_ids == {tenant}
    assert snapshot.last_seq > start
    await identity.update_tenant(tenant, status="suspended")  # no change: no event
    await identity.update_tenant(tenant, status="active")
    assert not await identity.tenant_suspended(tenant)
    assert await _events(identity, start) == [("tenant", tenant), ("tenant", tenant)]
    assert not await identity.tenant_suspended(MISSING)


# -- users ------------------------------------------------------------------------------------


async def test_emails_are_unique_across_tenants(
    identity: IdentityStore, tenant: str, other_tenant: str
) -> None:
    user = await identity.create_user(tenant, "ada@example.org", HASH)
    assert (user.role, user.is_active, user.is_superuser) == ("member", True, False)
    with pytest.raises(Conflict):
        await identity.create_user(other_tenant, "ada@example.org", HASH)
    assert await identity.get_user_by_email("ada@example.org") == user
    assert await identity.get_user(tenant, user.id) == user


async def test_a_user_of_another_tenant_is_missing_on_every_method(
    identity: IdentityStore, tenant: str, other_tenant: str
) -> None:
    """Every read and write answers a foreign user id exactly as it answers an unknown one,
    and changes nothing."""
    await _admin(identity, tenant, "admin@acme.example")
    user = await identity.create_user(tenant, "ada@acme.example", HASH)
    await _admin(identity, other_tenant, "admin@globex.example")
    start = (await identity.revocation_snapshot(utcnow())).last_seq
    acting = Privilege.PLATFORM_ADMIN
    for user_id in (user.id, MISSING):
        assert await identity.get_user(other_tenant, user_id) is None
        assert await identity.update_user(
            other_tenant, user_id, acting=acting, role="admin", is_active=False
        ) is None
        assert await identity.delete_user(other_tenant, user_id, acting=acting) is False
        await identity.set_password_hash(other_tenant, user_id, "changed")
        await identity.record_login(other_tenant, user_id)
        assert await identity.revoke_user_sessions(other_tenant, user_id, "x") == 0
        assert await identity.list_api_keys(other_tenant, user_id) == []
    assert [u.email for u in await identity.list_users(other_tenant, limit=10, offset=0)] == [
        "admin@globex.example"
    ]
    assert await identity.get_user(tenant, user.id) == user  # unchanged, never logged in
    assert await _events(identity, start) == []


async def test_users_are_listed_in_creation_order(identity: IdentityStore, tenant: str) -> None:
    emails = [f"user-{n}@acme.example" for n in range(5)]
    for email in emails:
        await identity.create_user(tenant, email, HASH)
    first = await identity.list_users(tenant, limit=3, offset=0)
    rest = await identity.list_users(tenant, limit=3, offset=3)
    assert [u.email for u in first + rest] == emails
    assert await identity.count_users() == 5


async def test_password_and_login_are_recorded(identity: IdentityStore, tenant: str) -> None:
    user = await identity.create_user(tenant, "ada@acme.example", HASH)
    assert user.last_login_at is None
    await identity.set_password_hash(tenant, user.id, "argon2id$new")
    await identity.record_login(tenant, user.id)
    found = await identity.get_user(tenant, user.id)
    assert found is not None
    assert found.password_hash == "argon2id$new" and found.last_login_at is not None


async def test_nobody_changes_or_deletes_a_user_above_them(
    identity: IdentityStore, tenant: str
) -> None:
    admin = await _admin(identity, tenant, "admin@acme.example")
    await _admin(identity, tenant, "second@acme.example")
    member = await identity.create_user(tenant, "ada@acme.example", HASH)
    for call in (
        identity.update_user(tenant, admin.id, acting=Privilege.MEMBER, is_active=False),
        identity.delete_user(tenant, admin.id, acting=Privilege.MEMBER),
    ):
        with pytest.raises(PermissionDenied):
            await call
    assert await identity.get_user(tenant, admin.id) == admin
    promoted = await identity.update_user(
        tenant, member.id, acting=Privilege.TENANT_ADMIN, role="admin"
    )
    assert promoted is not None and promoted.role == "admin"


async def test_a_tenant_keeps_an_active_admin(identity: IdentityStore, tenant: str) -> None:
    admin = await _admin(identity, tenant, "admin@acme.example")
    acting = Privilege.TENANT_ADMIN
    for call in (
        identity.update_user(tenant, admin.id, acting=acting, role="member"),
        identity.update_user(tenant, admin.id, acting=acting, is_active=False),
        identity.delete_user(tenant, admin.id, acting=acting),
    ):
        with pytest.raises(Conflict) as caught:
            await call
        assert caught.value.code == "last_admin"
    await _admin(identity, tenant, "second@acme.example")
    demoted = await identity.update_user(tenant, admin.id, acting=acting, role="member")
    assert demoted is not None and demoted.role == "member"


async def test_the_platform_keeps_an_active_administrator(identity: IdentityStore) -> None:
    tenant, root = await identity.create_tenant_with_admin(
        "Acme", "root@acme.example", HASH, is_superuser=True
    )
    await _admin(identity, tenant.id, "admin@acme.example")  # the tenant has another admin
    acting = Privilege.PLATFORM_ADMIN
    for call in (
        identity.update_user(tenant.id, root.id, acting=acting, is_active=False),
        identity.delete_user(tenant.id, root.id, acting=acting),
    ):
        with pytest.raises(Conflict) as caught:
            await call
        assert caught.value.code == "last_platform_admin"


async def test_deactivation_revokes_sessions_and_keys_in_the_same_change(
    identity: IdentityStore, tenant: str
) -> None:
    await _admin(identity, tenant, "admin@acme.example")
    user = await identity.create_user(tenant, "ada@acme.example", HASH)
    session_id, _ = await _session(identity, user)
    await identity.create_api_key(
        tenant, user.id, key_id="key-1", name="ci", secret_hash=HASH, expires_at=None
    )
    start = (await identity.revocation_snapshot(utcnow())).last_seq
    changed = await identity.update_user(
        tenant, user.id, acting=Privilege.TENANT_ADMIN, is_active=False
    )
    assert changed is not None and not changed.is_active
    assert await identity.user_blocked(user.id)
    assert await identity.session_revoked(session_id) is not None
    snapshot = await identity.revocation_snapshot(utcnow())
    assert session_id in snapshot.revoked_sessions
    assert "key-1" in snapshot.revoked_key_ids
    assert user.id in snapshot.inactive_user_ids
    assert sorted(await _events(identity, start)) == [
        ("api_key", "key-1"), ("session", session_id), ("user", user.id)
    ]
    again = await identity.update_user(
        tenant, user.id, acting=Privilege.TENANT_ADMIN, is_active=True
    )
    assert again is not None and again.is_active and not await identity.user_blocked(user.id)


async def test_a_deleted_or_unknown_user_is_blocked(identity: IdentityStore, tenant: str) -> None:
    await _admin(identity, tenant, "admin@acme.example")
    user = await identity.create_user(tenant, "ada@acme.example", HASH)
    assert not await identity.user_blocked(user.id)
    assert await identity.delete_user(tenant, user.id, acting=Privilege.TENANT_ADMIN)
    assert await identity.user_blocked(user.id)
    assert await identity.user_blocked(MISSING)
    assert await identity.get_user_by_email("ada@acme.example") is None


# -- sessions and refresh tokens ----------------------------------------------------------------


async def test_refresh_rotation_outcomes(identity: IdentityStore, tenant: str) -> None:
    user = await identity.create_user(tenant, "ada@acme.example", HASH)
    session_id, first = await _session(identity, user)
    second, third = str(uuid.uuid4()), str(uuid.uuid4())

    rotated = await identity.rotate_refresh_token(first, new_jti=second, new_expires_at=_later())
    assert (rotated.outcome, rotated.session_id) == (RotateOutcome.ROTATED, session_id)
    # The same token again within the grace period: refused, the family kept.
    raced = await identity.rotate_refresh_token(
        first, new_jti=third, new_expires_at=_later(), grace=timedelta(days=1)
    )
    assert raced.outcome is RotateOutcome.RACED
    assert await identity.session_revoked(session_id) is None
    # Past the grace period it is reuse: the whole family is revoked, once.
    start = (await identity.revocation_snapshot(utcnow())).last_seq
    reused = await identity.rotate_refresh_token(first, new_jti=third, new_expires_at=_later())
    assert (reused.outcome, reused.session_id) == (RotateOutcome.REUSED, session_id)
    assert await identity.session_revoked(session_id) is not None
    assert await _events(identity, start) == [("session", session_id)]
    again = await identity.rotate_refresh_token(first, new_jti=third, new_expires_at=_later())
    assert again.outcome is RotateOutcome.REUSED
    assert await _events(identity, start) == [("session", session_id)]
    # The family's newest token is refused too, and an unknown one is unknown.
    revoked = await identity.rotate_refresh_token(second, new_jti=third, new_expires_at=_later())
    assert revoked.outcome is RotateOutcome.REVOKED
    unknown = await identity.rotate_refresh_token(MISSING, new_jti=third, new_expires_at=_later())
    assert unknown.outcome is RotateOutcome.UNKNOWN


async def test_exactly_one_of_concurrent_rotations_wins(
    identity: IdentityStore, tenant: str
) -> None:
    user = await identity.create_user(tenant, "ada@acme.example", HASH)
    _, jti = await _session(identity, user)
    outcomes = await asyncio.gather(*(
        identity.rotate_refresh_token(jti, new_jti=str(uuid.uuid4()), new_expires_at=_later())
        for _ in range(10)
    ))
    assert [o.outcome for o in outcomes].count(RotateOutcome.ROTATED) == 1


async def test_a_session_of_another_tenant_is_missing(
    identity: IdentityStore, tenant: str, other_tenant: str
) -> None:
    user = await identity.create_user(tenant, "ada@acme.example", HASH)
    session_id, _ = await _session(identity, user)
    for candidate in (session_id, MISSING):
        assert await identity.revoke_session(other_tenant, candidate, "x") is False
    assert await identity.session_revoked(session_id) is None
    assert await identity.revoke_session(tenant, session_id, "logout") is True
    assert await identity.revoke_session(tenant, session_id, "logout") is False  # once
    assert await identity.session_revoked(session_id) is not None


async def test_revoking_a_users_sessions_counts_the_live_ones(
    identity: IdentityStore, tenant: str
) -> None:
    user = await identity.create_user(tenant, "ada@acme.example", HASH)
    first, _ = await _session(identity, user)
    second, _ = await _session(identity, user)
    await identity.revoke_session(tenant, first, "logout")
    assert await identity.revoke_user_sessions(tenant, user.id, "password_changed") == 1
    assert await identity.session_revoked(second) is not None
    assert await identity.revoke_user_sessions(tenant, user.id, "again") == 0


async def test_pruning_removes_only_what_has_expired(identity: IdentityStore, tenant: str) -> None:
    user = await identity.create_user(tenant, "ada@acme.example", HASH)
    _, short_jti = await _session(identity, user, days=1)
    _, long_jti = await _session(identity, user, days=30)
    assert await identity.prune_expired(utcnow()) == 0
    assert await identity.prune_expired(_later(2)) >= 2  # the short session and its token
    gone = await identity.rotate_refresh_token(
        short_jti, new_jti=str(uuid.uuid4()), new_expires_at=_later()
    )
    assert gone.outcome is RotateOutcome.UNKNOWN
    kept = await identity.rotate_refresh_token(
        long_jti, new_jti=str(uuid.uuid4()), new_expires_at=_later(30)
    )
    assert kept.outcome is RotateOutcome.ROTATED


# -- API keys ---------------------------------------------------------------------------------


async def test_api_keys_belong_to_one_user_of_one_tenant(
    identity: IdentityStore, tenant: str, other_tenant: str
) -> None:
    admin = await _admin(identity, tenant, "admin@acme.example")
    user = await identity.create_user(tenant, "ada@acme.example", HASH)
    first = await identity.create_api_key(
        tenant, admin.id, key_id="key-1", name="ci", secret_hash=HASH, expires_at=None
    )
    second = await identity.create_api_key(
        tenant, admin.id, key_id="key-2", name="cd", secret_hash=HASH, expires_at=_later(9)
    )
    assert await identity.list_api_keys(tenant, admin.id) == [first, second]
    assert await identity.list_api_keys(tenant, user.id) == []
    owner = await identity.find_api_key("key-1")
    assert owner is not None
    assert (owner.key, owner.role, owner.is_superuser) == (first, "admin", False)
    assert await identity.find_api_key("key-404") is None

    start = (await identity.revocation_snapshot(utcnow())).last_seq
    for tenant_id, user_id, key in (
        (other_tenant, admin.id, first.id), (tenant, user.id, first.id), (tenant, admin.id, MISSING)
    ):
        assert await identity.delete_api_key(tenant_id, user_id, key) is False
    assert await _events(identity, start) == []
    assert await identity.delete_api_key(tenant, admin.id, first.id) is True
    assert await identity.find_api_key("key-1") is None
    assert await _events(identity, start) == [("api_key", "key-1")]


# -- the auth event log -------------------------------------------------------------------------


async def test_events_are_read_after_a_seq_in_order(identity: IdentityStore, tenant: str) -> None:
    user = await identity.create_user(tenant, "ada@acme.example", HASH)
    sessions = [(await _session(identity, user))[0] for _ in range(5)]
    start = (await identity.revocation_snapshot(utcnow())).last_seq
    for session_id in sessions:
        await identity.revoke_session(tenant, session_id, "logout")
    events = await identity.events_since(start)
    assert [e.subject for e in events] == sessions
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert [e.subject for e in await identity.events_since(start, limit=2)] == sessions[:2]
    assert [e.subject for e in await identity.events_since(seqs[2])] == sessions[3:]
    assert await identity.events_since(seqs[-1]) == []
    assert (await identity.revocation_snapshot(utcnow())).last_seq == seqs[-1]
