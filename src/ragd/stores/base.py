"""Storage contracts for identity data: records and repository Protocols.

Services depend on these Protocols only; ``ragd.stores.identity.SqlIdentityStore`` implements
all of them over SQLAlchemy (SQLite today, PostgreSQL through the same code later).

Contract shared by every implementation:

* Every method on tenant-owned data takes ``tenant_id`` explicitly and never returns or
  changes a row of another tenant (a miss is ``None``/``False``, never an error that reveals
  the row exists). The only lookups without a tenant are the ones that *establish* it:
  login by email and API-key lookup by key id.
* Methods that change authentication state (revocation, deactivation, suspension, role
  change) append an auth event in the same transaction, so every process's revocation list
  can catch up by reading events.
* Records are immutable snapshots; no ORM object escapes the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Literal, Protocol

Role = Literal["admin", "member"]
TenantStatus = Literal["active", "suspended"]
EventKind = Literal["session", "user", "tenant", "api_key"]


class Privilege(IntEnum):
    """The privilege hierarchy: nobody changes, deactivates or deletes a user above them."""

    MEMBER = 0
    TENANT_ADMIN = 1
    PLATFORM_ADMIN = 2

    @classmethod
    def of(cls, role: Role, is_superuser: bool) -> Privilege:
        if is_superuser:
            return cls.PLATFORM_ADMIN
        return cls.TENANT_ADMIN if role == "admin" else cls.MEMBER


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    status: TenantStatus
    created_at: datetime


@dataclass(frozen=True, slots=True)
class User:
    id: str
    tenant_id: str
    email: str
    password_hash: str
    role: Role
    is_active: bool
    is_verified: bool
    is_superuser: bool
    created_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    key_id: str
    tenant_id: str
    user_id: str
    name: str
    secret_hash: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class ApiKeyOwner:
    """An API key with its owner's role, as needed to authenticate a request.

    Activity and suspension are not copied here: the revocation list decides those.
    """

    key: ApiKey
    role: Role
    is_superuser: bool


@dataclass(frozen=True, slots=True)
class AuthEvent:
    seq: int
    kind: EventKind
    subject: str


class RotateOutcome(StrEnum):
    ROTATED = "rotated"
    REUSED = "reused"  # already rotated: the family is now revoked
    RACED = "raced"  # already rotated moments ago, within the grace period: refused only
    REVOKED = "revoked"  # the session was revoked or expired earlier
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Rotation:
    outcome: RotateOutcome
    session_id: str | None = None


@dataclass(frozen=True, slots=True)
class RevocationSnapshot:
    """Everything a revocation list needs, as of event ``last_seq``."""

    last_seq: int
    revoked_sessions: dict[str, datetime]  # session id -> when it would have expired
    revoked_key_ids: set[str]
    inactive_user_ids: set[str]
    suspended_tenant_ids: set[str]


class TenantRepository(Protocol):
    async def create_tenant(self, name: str) -> Tenant:
        """Create a tenant. Raises ``Conflict`` when the name (case-insensitive) exists."""
        ...

    async def create_tenant_with_admin(
        self,
        tenant_name: str,
        email: str,
        password_hash: str,
        *,
        is_superuser: bool = False,
        is_verified: bool = False,
    ) -> tuple[Tenant, User]:
        """Create a tenant and its first admin atomically (``Conflict`` on duplicates)."""
        ...

    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    async def get_tenant_by_name(self, name: str) -> Tenant | None: ...

    async def list_tenants(self, *, limit: int, offset: int) -> list[Tenant]: ...

    async def update_tenant(
        self, tenant_id: str, *, name: str | None = None, status: TenantStatus | None = None
    ) -> Tenant | None:
        """Rename and/or (un)suspend; a status change appends a ``tenant`` event."""
        ...


class UserRepository(Protocol):
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
        """Create a user in ``tenant_id``. Raises ``Conflict`` if the email is taken."""
        ...

    async def get_user(self, tenant_id: str, user_id: str) -> User | None: ...

    async def get_user_by_email(self, email: str) -> User | None:
        """Login lookup: emails are unique across tenants."""
        ...

    async def list_users(self, tenant_id: str, *, limit: int, offset: int) -> list[User]: ...

    async def update_user(
        self,
        tenant_id: str,
        user_id: str,
        *,
        acting: Privilege,
        role: Role | None = None,
        is_active: bool | None = None,
    ) -> User | None:
        """Change role/activity on behalf of a caller of privilege ``acting``.

        Deactivation or a role change revokes the user's sessions (and, on deactivation, API
        keys) in the same transaction. The checks run in that transaction too, so two
        concurrent changes cannot both pass them: ``PermissionDenied`` (``outranked``) when the
        user ranks above ``acting``; ``Conflict`` when the change would leave the tenant
        without an active admin (``last_admin``) or the platform without an active platform
        administrator (``last_platform_admin``)."""
        ...

    async def delete_user(self, tenant_id: str, user_id: str, *, acting: Privilege) -> bool:
        """Delete a user with its sessions and keys; the same checks as ``update_user``."""
        ...

    async def set_password_hash(self, tenant_id: str, user_id: str, password_hash: str) -> None:
        ...

    async def record_login(self, tenant_id: str, user_id: str) -> None: ...

    async def count_users(self) -> int: ...


class SessionRepository(Protocol):
    async def create_session(
        self,
        tenant_id: str,
        user_id: str,
        *,
        session_id: str,
        refresh_jti: str,
        expires_at: datetime,
    ) -> User | None:
        """Start a session (refresh-token family) with its first refresh token, and return
        the user as of that start: the role and privilege its tokens may carry. None, and no
        session, when the user is gone or inactive. A change of the user's role or state
        (which revokes the user's sessions) is either seen here or revokes this session too;
        never neither."""
        ...

    async def rotate_refresh_token(
        self,
        old_jti: str,
        *,
        new_jti: str,
        new_expires_at: datetime,
        grace: timedelta = timedelta(0),
    ) -> Rotation:
        """Mark ``old_jti`` used and record ``new_jti`` in its family, atomically.

        Exactly one of several concurrent calls with the same ``old_jti`` is ROTATED. A call
        on an already-rotated token revokes the whole family (RFC 9700 reuse detection),
        unless it was rotated less than ``grace`` ago (RACED: refused, family kept).
        """
        ...

    async def revoke_session(self, tenant_id: str, session_id: str, reason: str) -> bool: ...

    async def revoke_user_sessions(self, tenant_id: str, user_id: str, reason: str) -> int: ...

    async def prune_expired(self, now: datetime) -> int:
        """Delete sessions and refresh tokens past their expiry, and old events."""
        ...


class ApiKeyRepository(Protocol):
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
        """Store a new key. With ``max_keys``, refuse (:class:`~ragd.errors.InvalidInput`,
        ``too_many_keys``) when the user already has that many, checked in the transaction
        that creates it, so concurrent creations cannot pass the limit together."""
        ...

    async def list_api_keys(self, tenant_id: str, user_id: str) -> list[ApiKey]: ...

    async def delete_api_key(self, tenant_id: str, user_id: str, api_key_id: str) -> bool: ...

    async def find_api_key(self, key_id: str) -> ApiKeyOwner | None:
        """Authentication lookup by the key's public id (tenant not yet known)."""
        ...


class AuthEventLog(Protocol):
    """The auth event log and the state a revocation list is built from.

    Appends commit in sequence order (``ragd.db.sequence``), so "every event after N" is
    complete once read; numbers may have gaps (a rolled-back append). Old events are pruned.
    An append notifies the deployment's processes when it commits, where the backend can
    (PostgreSQL: NOTIFY on the ``auth_events`` channel, ``ragd.db.listen``).
    """

    async def events_since(self, seq: int, *, limit: int = 1000) -> list[AuthEvent]: ...

    async def pruned_through(self, seq: int) -> bool:
        """True when the log holds no event numbered ``seq`` or below: pruning may have
        reached past ``seq``, and events after it may be gone too. False means no event
        after ``seq`` was pruned, so a gap after it is only a rolled-back append."""
        ...

    async def revocation_snapshot(self, now: datetime) -> RevocationSnapshot:
        """Full state for a revocation list starting from scratch, read as one consistent
        snapshot: exactly the state after event ``last_seq``, so an event committed while
        it is read can be neither half in it nor missed by a sync from ``last_seq``."""
        ...

    async def session_revoked(self, session_id: str) -> datetime | None:
        """The expiry of a revoked session, or None if it is live or gone."""
        ...

    async def user_blocked(self, user_id: str) -> bool:
        """True when the user is inactive or deleted."""
        ...

    async def tenant_suspended(self, tenant_id: str) -> bool: ...


class IdentityStore(
    TenantRepository, UserRepository, SessionRepository, ApiKeyRepository, AuthEventLog, Protocol
):
    """All identity repositories together, as one backend implements them."""
