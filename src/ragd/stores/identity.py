"""SQL implementation of the identity repositories (SQLAlchemy 2, async).

Rules that a write checks by reading first hold because the read goes through a lock (on
SQLite the one writer already serialises them; there ``FOR UPDATE`` compiles to nothing):

* changing or deleting a user locks the user's row, so two changes of one user take turns;
* "a tenant keeps an active admin" locks the tenant's row before counting its admins, so two
  admins removed at once are counted one after the other (the second is refused);
* "an active platform administrator remains" has no row to lock: the changes that can break
  it (deactivating or deleting one, suspending a tenant that has some) take turns on one
  transaction-scoped advisory lock and count after it;
* an API key is created under a lock on its user's row, so the per-user limit holds;
* names and emails are unique by constraints, whose violation is a clean Conflict.

Locks are taken in one order, user, tenant, platform turn, the user's sessions and keys, and
last the auth event log's append turn, so two transactions never wait for each other in a
cycle.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ragd.db.engine import Database
from ragd.db.listen import notify_on_commit
from ragd.db.sequence import AUTH_EVENTS, lock_id, take_append_turn
from ragd.db.tables import (
    ApiKeyRow,
    AuthEventRow,
    RefreshTokenRow,
    SessionRow,
    TenantRow,
    UserRow,
    utcnow,
)
from ragd.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from ragd.stores.base import (
    ApiKey,
    ApiKeyOwner,
    AuthEvent,
    EventKind,
    Privilege,
    RevocationSnapshot,
    Role,
    RotateOutcome,
    Rotation,
    Tenant,
    TenantStatus,
    User,
)

#: Events are notifications for processes that are running; older ones are of no use.
EVENT_RETENTION = timedelta(days=1)


def _tenant(row: TenantRow) -> Tenant:
    status: TenantStatus = "suspended" if row.status == "suspended" else "active"
    return Tenant(id=row.id, name=row.name, status=status, created_at=row.created_at)


def _user(row: UserRow) -> User:
    role: Role = "admin" if row.role == "admin" else "member"
    return User(
        id=row.id,
        tenant_id=row.tenant_id,
        email=row.email,
        password_hash=row.password_hash,
        role=role,
        is_active=row.is_active,
        is_verified=row.is_verified,
        is_superuser=row.is_superuser,
        created_at=row.created_at,
        last_login_at=row.last_login_at,
    )


def _api_key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        key_id=row.key_id,
        tenant_id=row.tenant_id,
        user_id=row.user_id,
        name=row.name,
        secret_hash=row.secret_hash,
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def _ensure_outranks(acting: Privilege, row: UserRow) -> None:
    target = Privilege.of("admin" if row.role == "admin" else "member", row.is_superuser)
    if target > acting:
        raise PermissionDenied(
            "this user has a higher privilege than you", code="outranked"
        )


async def _event(session: AsyncSession, kind: EventKind, subject: str) -> None:
    """Log an auth change; its seq is drawn in commit order (see :mod:`ragd.db.sequence`).

    On PostgreSQL the transaction also notifies the ``auth_events`` channel, delivered to
    every replica's listener exactly when it commits (once per transaction, whatever the
    number of events), so their next request syncs.
    """
    await take_append_turn(session, AUTH_EVENTS)
    session.add(AuthEventRow(kind=kind, subject=subject, created_at=utcnow()))
    await notify_on_commit(session, AUTH_EVENTS)


_LAST_PLATFORM_ADMIN = "the last active platform administrator cannot be deactivated or deleted"
#: The advisory lock that changes able to remove a platform administrator take turns on.
_PLATFORM_ADMINS = lock_id("platform_admins")


async def _ensure_free(s: AsyncSession, tenant_name: str, email: str) -> None:
    """Refuse a registration whose email or tenant name is taken."""
    if await s.scalar(select(UserRow.id).where(UserRow.email == email)):
        raise Conflict("this email cannot be registered", code="email_taken")
    if await s.scalar(select(TenantRow.id).where(TenantRow.name_key == tenant_name.casefold())):
        raise Conflict("a tenant with this name already exists", code="tenant_exists")


async def _locked_user(s: AsyncSession, tenant_id: str, user_id: str) -> UserRow | None:
    """The tenant's user, locked for a change (``FOR NO KEY UPDATE``: rows that refer to the
    user, such as a login's new session, may still be inserted meanwhile)."""
    query = select(UserRow).where(UserRow.id == user_id, UserRow.tenant_id == tenant_id)
    return await s.scalar(query.with_for_update(key_share=True))


async def _lock_credentials(s: AsyncSession, tenant_id: str, user_id: str) -> None:
    """Lock the user's live sessions and keys before revoking them.

    Revoking them appends auth events, and the first append takes the event log's append
    turn for the rest of the transaction; a logout or a key deletion locks its one row and
    then takes that turn too. Were the rows locked one by one after the turn, such a logout
    holding a session of the user would wait for the turn while this waited for its session:
    a deadlock. Locked first, the logout waits for this whole transaction instead.
    """
    await s.execute(
        select(SessionRow.id)
        .where(SessionRow.tenant_id == tenant_id, SessionRow.user_id == user_id,
               SessionRow.revoked_at.is_(None))
        .order_by(SessionRow.id)
        .with_for_update()
    )
    await s.execute(
        select(ApiKeyRow.id)
        .where(ApiKeyRow.tenant_id == tenant_id, ApiKeyRow.user_id == user_id,
               ApiKeyRow.revoked_at.is_(None))
        .order_by(ApiKeyRow.id)
        .with_for_update()
    )


async def _ensure_other_admin(s: AsyncSession, tenant_id: str, user_id: str) -> None:
    """Refuse to remove ``user_id`` if the tenant has no other active admin. The tenant's
    row is locked first, so concurrent removals in one tenant count one after the other."""
    await s.execute(
        select(TenantRow.id).where(TenantRow.id == tenant_id).with_for_update(key_share=True)
    )
    others = await s.scalar(
        select(func.count())
        .select_from(UserRow)
        .where(
            UserRow.tenant_id == tenant_id,
            UserRow.role == "admin",
            UserRow.is_active.is_(True),
            UserRow.id != user_id,
        )
    )
    if not others:
        raise Conflict("a tenant must keep at least one active admin", code="last_admin")


async def _platform_admins(s: AsyncSession, *, tenant_id: str) -> int:
    """The tenant's active platform administrators."""
    return int(await s.scalar(
        select(func.count()).select_from(UserRow).where(
            UserRow.tenant_id == tenant_id,
            UserRow.is_superuser.is_(True),
            UserRow.is_active.is_(True),
        )
    ) or 0)


async def _ensure_platform_admin_left(
    s: AsyncSession, message: str, *, excluding_user: str | None = None,
    excluding_tenant: str | None = None,
) -> None:
    """Refuse a change that would leave no active platform administrator (in an active
    tenant) besides ``excluding_user`` and those of ``excluding_tenant``.

    Platform administrators have no row of their own to lock, so every change that can
    remove one first takes its turn on one transaction-scoped advisory lock (PostgreSQL;
    SQLite's one writer already is that turn), and counts after it: it then sees every such
    change that took its turn before it.
    """
    if s.get_bind().dialect.name == "postgresql":
        await s.execute(text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": _PLATFORM_ADMINS})
    query = (
        select(func.count())
        .select_from(UserRow)
        .join(TenantRow, TenantRow.id == UserRow.tenant_id)
        .where(
            UserRow.is_superuser.is_(True),
            UserRow.is_active.is_(True),
            TenantRow.status == "active",
        )
    )
    if excluding_user is not None:
        query = query.where(UserRow.id != excluding_user)
    if excluding_tenant is not None:
        query = query.where(UserRow.tenant_id != excluding_tenant)
    if not await s.scalar(query):
        raise Conflict(message, code="last_platform_admin")


class SqlIdentityStore:
    """Implements :class:`ragd.stores.base.IdentityStore` on any SQLAlchemy async engine."""

    def __init__(self, db: Database) -> None:
        self._db = db

    # -- tenants -----------------------------------------------------------------------

    async def create_tenant(self, name: str) -> Tenant:
        try:
            async with self._db.transaction() as s:
                row = TenantRow(name=name, name_key=name.casefold(), status="active")
                s.add(row)
                await s.flush()
                return _tenant(row)
        except IntegrityError:
            raise Conflict("a tenant with this name already exists", code="tenant_exists") from None

    async def create_tenant_with_admin(
        self,
        tenant_name: str,
        email: str,
        password_hash: str,
        *,
        is_superuser: bool = False,
        is_verified: bool = False,
    ) -> tuple[Tenant, User]:
        try:
            async with self._db.transaction() as s:
                await _ensure_free(s, tenant_name, email)
                tenant = TenantRow(name=tenant_name, name_key=tenant_name.casefold())
                tenant.status = "active"
                s.add(tenant)
                await s.flush()
                user = UserRow(
                    tenant_id=tenant.id,
                    email=email,
                    password_hash=password_hash,
                    role="admin",
                    is_active=True,
                    is_verified=is_verified,
                    is_superuser=is_superuser,
                )
                s.add(user)
                await s.flush()
                return _tenant(tenant), _user(user)
        except IntegrityError:
            # A registration of this name or email committed after the checks (the unique
            # constraints): answer as the checks now do.
            async with self._db.read() as s:
                await _ensure_free(s, tenant_name, email)
            raise Conflict("this tenant or email already exists", code="conflict") from None

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._db.read() as s:
            row = await s.get(TenantRow, tenant_id)
            return None if row is None else _tenant(row)

    async def get_tenant_by_name(self, name: str) -> Tenant | None:
        async with self._db.read() as s:
            row = await s.scalar(select(TenantRow).where(TenantRow.name_key == name.casefold()))
            return None if row is None else _tenant(row)

    async def list_tenants(self, *, limit: int, offset: int) -> list[Tenant]:
        async with self._db.read() as s:
            rows = await s.scalars(
                select(TenantRow).order_by(TenantRow.created_at, TenantRow.id).limit(limit)
                .offset(offset)
            )
            return [_tenant(row) for row in rows]

    async def update_tenant(
        self, tenant_id: str, *, name: str | None = None, status: TenantStatus | None = None
    ) -> Tenant | None:
        try:
            async with self._db.transaction() as s:
                row = await s.get(TenantRow, tenant_id, with_for_update=True)
                if row is None:
                    return None
                if name is not None:
                    row.name, row.name_key = name, name.casefold()
                if status is not None and status != row.status:
                    if status == "suspended" and await _platform_admins(s, tenant_id=tenant_id):
                        # Suspending them deactivates them: someone must stay able to act.
                        await _ensure_platform_admin_left(
                            s, "suspending this tenant would leave no active platform "
                            "administrator", excluding_tenant=tenant_id,
                        )
                    row.status = status
                    await _event(s, "tenant", tenant_id)
                await s.flush()
                return _tenant(row)
        except IntegrityError:
            raise Conflict("a tenant with this name already exists", code="tenant_exists") from None

    # -- users -------------------------------------------------------------------------

    async def create_user(
        self,
        tenant_id: str,
        email: str,
        password_hash: str,
        *,
        role: Role = "member",
        is_superuser: bool = False,
        is_verified: bool = False,
    ) -> User:
        try:
            async with self._db.transaction() as s:
                row = UserRow(
                    tenant_id=tenant_id,
                    email=email,
                    password_hash=password_hash,
                    role=role,
                    is_active=True,
                    is_verified=is_verified,
                    is_superuser=is_superuser,
                )
                s.add(row)
                await s.flush()
                return _user(row)
        except IntegrityError:
            raise Conflict("this email cannot be registered", code="email_taken") from None

    async def get_user(self, tenant_id: str, user_id: str) -> User | None:
        async with self._db.read() as s:
            row = await s.scalar(
                select(UserRow).where(UserRow.id == user_id, UserRow.tenant_id == tenant_id)
            )
            return None if row is None else _user(row)

    async def get_user_by_email(self, email: str) -> User | None:
        async with self._db.read() as s:
            row = await s.scalar(select(UserRow).where(UserRow.email == email))
            return None if row is None else _user(row)

    async def list_users(self, tenant_id: str, *, limit: int, offset: int) -> list[User]:
        async with self._db.read() as s:
            rows = await s.scalars(
                select(UserRow)
                .where(UserRow.tenant_id == tenant_id)
                .order_by(UserRow.created_at, UserRow.id)
                .limit(limit)
                .offset(offset)
            )
            return [_user(row) for row in rows]

    async def update_user(
        self,
        tenant_id: str,
        user_id: str,
        *,
        acting: Privilege,
        role: Role | None = None,
        is_active: bool | None = None,
    ) -> User | None:
        async with self._db.transaction() as s:
            row = await _locked_user(s, tenant_id, user_id)
            if row is None:
                return None
            _ensure_outranks(acting, row)
            role_changes = role is not None and role != row.role
            deactivates = is_active is False and row.is_active
            reactivates = is_active is True and not row.is_active
            if row.role == "admin" and row.is_active and (role_changes or deactivates):
                await _ensure_other_admin(s, tenant_id, user_id)
            if row.is_superuser and deactivates:
                await _ensure_platform_admin_left(s, _LAST_PLATFORM_ADMIN, excluding_user=user_id)
            if role_changes or deactivates:
                await _lock_credentials(s, tenant_id, user_id)
            if role_changes:
                assert role is not None  # noqa: S101 - narrowed above
                row.role = role
            if deactivates:
                row.is_active = False
                await self._revoke_keys(s, tenant_id, user_id)
            if reactivates:
                row.is_active = True
            if role_changes or deactivates:
                # Privilege changes end every session (OWASP session management).
                await self._revoke_sessions(s, tenant_id, user_id, "user_changed")
            if role_changes or deactivates or reactivates:
                await _event(s, "user", user_id)
            await s.flush()
            return _user(row)

    async def delete_user(self, tenant_id: str, user_id: str, *, acting: Privilege) -> bool:
        async with self._db.transaction() as s:
            row = await _locked_user(s, tenant_id, user_id)
            if row is None:
                return False
            _ensure_outranks(acting, row)
            if row.role == "admin" and row.is_active:
                await _ensure_other_admin(s, tenant_id, user_id)
            if row.is_superuser and row.is_active:
                await _ensure_platform_admin_left(s, _LAST_PLATFORM_ADMIN, excluding_user=user_id)
            await _lock_credentials(s, tenant_id, user_id)
            await self._revoke_sessions(s, tenant_id, user_id, "user_deleted")
            await self._revoke_keys(s, tenant_id, user_id)
            await s.delete(row)
            await _event(s, "user", user_id)
            return True

    async def set_password_hash(self, tenant_id: str, user_id: str, password_hash: str) -> None:
        async with self._db.transaction() as s:
            await s.execute(
                update(UserRow)
                .where(UserRow.id == user_id, UserRow.tenant_id == tenant_id)
                .values(password_hash=password_hash)
            )

    async def record_login(self, tenant_id: str, user_id: str) -> None:
        async with self._db.transaction() as s:
            await s.execute(
                update(UserRow)
                .where(UserRow.id == user_id, UserRow.tenant_id == tenant_id)
                .values(last_login_at=utcnow())
            )

    async def count_users(self) -> int:
        async with self._db.read() as s:
            return int(await s.scalar(select(func.count()).select_from(UserRow)) or 0)

    # -- sessions and refresh tokens -----------------------------------------------------

    async def create_session(
        self,
        tenant_id: str,
        user_id: str,
        *,
        session_id: str,
        refresh_jti: str,
        expires_at: datetime,
    ) -> User | None:
        async with self._db.transaction() as s:
            # FOR SHARE: a change of the user's role or state (which holds the user's row
            # until it has revoked the user's sessions) commits before this reads the user,
            # or waits for this session to commit and then revokes it too.
            user = await s.scalar(
                select(UserRow).where(UserRow.id == user_id, UserRow.tenant_id == tenant_id)
                .with_for_update(read=True)
            )
            if user is None or not user.is_active:
                return None
            s.add(
                SessionRow(id=session_id, tenant_id=tenant_id, user_id=user_id,
                           expires_at=expires_at)
            )
            await s.flush()
            s.add(
                RefreshTokenRow(jti=refresh_jti, session_id=session_id, tenant_id=tenant_id,
                                user_id=user_id, expires_at=expires_at)
            )
            return _user(user)

    async def rotate_refresh_token(
        self,
        old_jti: str,
        *,
        new_jti: str,
        new_expires_at: datetime,
        grace: timedelta = timedelta(0),
    ) -> Rotation:
        async with self._db.transaction() as s:
            now = utcnow()
            claimed = await s.execute(
                update(RefreshTokenRow)
                .where(
                    RefreshTokenRow.jti == old_jti,
                    RefreshTokenRow.rotated_at.is_(None),
                    RefreshTokenRow.expires_at > now,
                )
                .values(rotated_at=now)
            )
            token = await s.get(RefreshTokenRow, old_jti)
            if token is None:
                return Rotation(RotateOutcome.UNKNOWN)
            # Locked: a revocation of the session commits before this rotation reads it (and
            # is refused) or after it (and revokes the new token's session too).
            session = await s.get(SessionRow, token.session_id, with_for_update=True)
            if session is None:
                return Rotation(RotateOutcome.UNKNOWN)
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                if token.rotated_at is not None and token.rotated_at > now - grace:
                    return Rotation(RotateOutcome.RACED, session.id)
                if token.rotated_at is not None and session.revoked_at is None:
                    session.revoked_at, session.revoked_reason = now, "refresh_reuse"
                    await _event(s, "session", session.id)
                    return Rotation(RotateOutcome.REUSED, session.id)
                if token.rotated_at is not None:
                    return Rotation(RotateOutcome.REUSED, session.id)
                return Rotation(RotateOutcome.REVOKED, session.id)
            if session.revoked_at is not None or session.expires_at <= now:
                return Rotation(RotateOutcome.REVOKED, session.id)
            s.add(
                RefreshTokenRow(jti=new_jti, session_id=session.id, tenant_id=token.tenant_id,
                                user_id=token.user_id, expires_at=new_expires_at)
            )
            session.expires_at = new_expires_at
            session.last_refreshed_at = now
            return Rotation(RotateOutcome.ROTATED, session.id)

    async def revoke_session(self, tenant_id: str, session_id: str, reason: str) -> bool:
        async with self._db.transaction() as s:
            result = await s.execute(
                update(SessionRow)
                .where(
                    SessionRow.id == session_id,
                    SessionRow.tenant_id == tenant_id,
                    SessionRow.revoked_at.is_(None),
                )
                .values(revoked_at=utcnow(), revoked_reason=reason)
            )
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return False
            await _event(s, "session", session_id)
            return True

    async def revoke_user_sessions(self, tenant_id: str, user_id: str, reason: str) -> int:
        async with self._db.transaction() as s:
            return await self._revoke_sessions(s, tenant_id, user_id, reason)

    async def _revoke_sessions(
        self, s: AsyncSession, tenant_id: str, user_id: str, reason: str
    ) -> int:
        now = utcnow()
        ids = list(
            await s.scalars(
                select(SessionRow.id).where(
                    SessionRow.tenant_id == tenant_id,
                    SessionRow.user_id == user_id,
                    SessionRow.revoked_at.is_(None),
                    SessionRow.expires_at > now,
                )
            )
        )
        if ids:
            await s.execute(
                update(SessionRow)
                .where(SessionRow.id.in_(ids))
                .values(revoked_at=now, revoked_reason=reason)
            )
            for session_id in ids:
                await _event(s, "session", session_id)
        return len(ids)

    async def prune_expired(self, now: datetime) -> int:
        async with self._db.transaction() as s:
            tokens = await s.execute(
                delete(RefreshTokenRow).where(RefreshTokenRow.expires_at <= now)
            )
            sessions = await s.execute(delete(SessionRow).where(SessionRow.expires_at <= now))
            events = await s.execute(
                delete(AuthEventRow).where(AuthEventRow.created_at <= now - EVENT_RETENTION)
            )
            return int(
                tokens.rowcount + sessions.rowcount + events.rowcount  # type: ignore[attr-defined]
            )

    # -- API keys ----------------------------------------------------------------------

    async def create_api_key(
        self,
        tenant_id: str,
        user_id: str,
        *,
        key_id: str,
        name: str,
        secret_hash: str,
        expires_at: datetime | None,
        max_keys: int | None = None,
    ) -> ApiKey:
        async with self._db.transaction() as s:
            if max_keys is not None:
                # The user's row governs the user's keys: creations take turns on it.
                if await _locked_user(s, tenant_id, user_id) is None:
                    raise NotFound("user not found")
                held = await s.scalar(
                    select(func.count()).select_from(ApiKeyRow).where(
                        ApiKeyRow.tenant_id == tenant_id, ApiKeyRow.user_id == user_id
                    )
                )
                if int(held or 0) >= max_keys:
                    raise InvalidInput(
                        f"at most {max_keys} API keys per user", code="too_many_keys"
                    )
            row = ApiKeyRow(
                key_id=key_id, tenant_id=tenant_id, user_id=user_id, name=name,
                secret_hash=secret_hash, expires_at=expires_at,
            )
            s.add(row)
            await s.flush()
            return _api_key(row)

    async def list_api_keys(self, tenant_id: str, user_id: str) -> list[ApiKey]:
        async with self._db.read() as s:
            rows = await s.scalars(
                select(ApiKeyRow)
                .where(ApiKeyRow.tenant_id == tenant_id, ApiKeyRow.user_id == user_id)
                .order_by(ApiKeyRow.created_at, ApiKeyRow.id)
            )
            return [_api_key(row) for row in rows]

    async def delete_api_key(self, tenant_id: str, user_id: str, api_key_id: str) -> bool:
        async with self._db.transaction() as s:
            row = await s.scalar(
                select(ApiKeyRow).where(
                    ApiKeyRow.id == api_key_id,
                    ApiKeyRow.tenant_id == tenant_id,
                    ApiKeyRow.user_id == user_id,
                ).with_for_update()  # deleted once: a second deletion at once finds nothing
            )
            if row is None:
                return False
            await s.delete(row)
            await _event(s, "api_key", row.key_id)
            return True

    async def find_api_key(self, key_id: str) -> ApiKeyOwner | None:
        async with self._db.read() as s:
            found = (
                await s.execute(
                    select(ApiKeyRow, UserRow)
                    .join(UserRow, and_(UserRow.id == ApiKeyRow.user_id,
                                        UserRow.tenant_id == ApiKeyRow.tenant_id))
                    .where(ApiKeyRow.key_id == key_id)
                )
            ).first()
            if found is None:
                return None
            key, user = found
            owner = _user(user)
            return ApiKeyOwner(key=_api_key(key), role=owner.role, is_superuser=owner.is_superuser)

    async def _revoke_keys(self, s: AsyncSession, tenant_id: str, user_id: str) -> None:
        key_ids = list(
            await s.scalars(
                select(ApiKeyRow.key_id).where(
                    ApiKeyRow.tenant_id == tenant_id,
                    ApiKeyRow.user_id == user_id,
                    ApiKeyRow.revoked_at.is_(None),
                )
            )
        )
        if key_ids:
            await s.execute(
                update(ApiKeyRow).where(ApiKeyRow.key_id.in_(key_ids)).values(revoked_at=utcnow())
            )
            for key_id in key_ids:
                await _event(s, "api_key", key_id)

    # -- events and revocation state -------------------------------------------------------

    async def events_since(self, seq: int, *, limit: int = 1000) -> list[AuthEvent]:
        async with self._db.read() as s:
            rows = await s.scalars(
                select(AuthEventRow).where(AuthEventRow.seq > seq).order_by(AuthEventRow.seq)
                .limit(limit)
            )
            events = []
            for row in rows:
                kind: EventKind
                if row.kind == "session":
                    kind = "session"
                elif row.kind == "user":
                    kind = "user"
                elif row.kind == "tenant":
                    kind = "tenant"
                else:
                    kind = "api_key"
                events.append(AuthEvent(seq=row.seq, kind=kind, subject=row.subject))
            return events

    async def pruned_through(self, seq: int) -> bool:
        # Events are pruned oldest first (by creation time, stamped after the append turn):
        # while one numbered seq or below is left, none after it has gone.
        async with self._db.read() as s:
            kept = await s.scalar(
                select(AuthEventRow.seq).where(AuthEventRow.seq <= seq).limit(1)
            )
            return kept is None

    async def revocation_snapshot(self, now: datetime) -> RevocationSnapshot:
        async with self._db.read() as s:
            # One snapshot for the watermark and every table. SQLite: the read session is one
            # transaction already (WAL: one snapshot from its first read). PostgreSQL reads
            # each statement at a new snapshot unless asked for REPEATABLE READ.
            if s.get_bind().dialect.name == "postgresql":
                await s.connection(execution_options={
                    "isolation_level": "REPEATABLE READ", "postgresql_readonly": True,
                })
            last_seq = int(await s.scalar(select(func.max(AuthEventRow.seq))) or 0)
            sessions = await s.execute(
                select(SessionRow.id, SessionRow.expires_at).where(
                    SessionRow.revoked_at.is_not(None), SessionRow.expires_at > now
                )
            )
            keys = await s.scalars(
                select(ApiKeyRow.key_id).where(ApiKeyRow.revoked_at.is_not(None))
            )
            users = await s.scalars(select(UserRow.id).where(UserRow.is_active.is_(False)))
            tenants = await s.scalars(select(TenantRow.id).where(TenantRow.status == "suspended"))
            return RevocationSnapshot(
                last_seq=last_seq,
                revoked_sessions={sid: expires for sid, expires in sessions.all()},
                revoked_key_ids=set(keys),
                inactive_user_ids=set(users),
                suspended_tenant_ids=set(tenants),
            )

    async def session_revoked(self, session_id: str) -> datetime | None:
        async with self._db.read() as s:
            row = await s.get(SessionRow, session_id)
            if row is None or row.revoked_at is None:
                return None
            return row.expires_at

    async def user_blocked(self, user_id: str) -> bool:
        async with self._db.read() as s:
            active = await s.scalar(select(UserRow.is_active).where(UserRow.id == user_id))
            return active is not True

    async def tenant_suspended(self, tenant_id: str) -> bool:
        async with self._db.read() as s:
            status = await s.scalar(select(TenantRow.status).where(TenantRow.id == tenant_id))
            return status == "suspended"
