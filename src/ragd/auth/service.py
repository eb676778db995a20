"""Authentication use cases: register, login, refresh, logout, API keys, and request auth."""

from __future__ import annotations

import logging
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from email_validator import EmailNotValidError, validate_email

from ragd.auth import apikeys
from ragd.auth.passwords import MAX_PASSWORD_CHARS, PasswordHasher, check_password
from ragd.auth.principal import Principal
from ragd.auth.ratelimit import RateLimiter, wait_seconds
from ragd.auth.revocation import RevocationList
from ragd.auth.tokens import TokenService, new_jti
from ragd.db.tables import utcnow
from ragd.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    RateLimited,
)
from ragd.hygiene import utc_datetime
from ragd.settings import AuthSettings
from ragd.stores.base import ApiKey, IdentityStore, RotateOutcome, Tenant, User
from ragd.stores.rate_limits import Hit, Rate, Verdict

logger = logging.getLogger(__name__)

_BAD_LOGIN = "invalid email or password"
MAX_API_KEYS_PER_USER = 100


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"  # noqa: S105 - a token type, not a secret


def normalize_email(value: str) -> str:
    """Validate syntax (no DNS lookups) and return the canonical, lower-case address.

    NFKC first: compatibility characters (fullwidth ``ａ``, ligatures, superscripts) fold
    into the characters they look like, so a look-alike address is the same account rather
    than a second one that shows identically.
    """
    try:
        result = validate_email(
            unicodedata.normalize("NFKC", value).strip(), check_deliverability=False
        )
    except EmailNotValidError as exc:
        raise InvalidInput(f"invalid email address: {exc}", code="invalid_email") from None
    return result.normalized.lower()


def _bad_login(reason: str) -> AuthenticationFailed:
    # One message and code for every credential failure: nothing reveals which part was wrong.
    return AuthenticationFailed(_BAD_LOGIN, reason=reason, code="invalid_credentials")


def _login_key(value: str) -> str:
    try:
        return normalize_email(value)
    except InvalidInput:
        return unicodedata.normalize("NFKC", value).strip().lower()[:320]


class AuthService:
    """Credentials in, tokens and principals out. Knows nothing about HTTP."""

    def __init__(
        self,
        store: IdentityStore,
        tokens: TokenService,
        passwords: PasswordHasher,
        revocation: RevocationList,
        settings: AuthSettings,
        *,
        throttle: RateLimiter,
        allow_registration: bool,
    ) -> None:
        self._store = store
        self._tokens = tokens
        self._passwords = passwords
        self._revocation = revocation
        self._settings = settings
        self._allow_registration = allow_registration
        # Buckets in the database, shared by every process and replica: N of them do not
        # give an attacker N times the attempts.
        self._throttle = throttle
        window = settings.login_window_seconds
        self._per_account = Rate(settings.login_attempts_per_account, window)
        self._per_address = Rate(settings.login_attempts_per_ip, window)

    # -- passwords ------------------------------------------------------------------------

    def check_password_policy(self, password: str, *user_inputs: str) -> None:
        check_password(
            password,
            min_length=self._settings.password_min_length,
            min_score=self._settings.password_min_score,
            user_inputs=[value for value in user_inputs if value],
        )

    async def hash_new_password(self, password: str, *user_inputs: str) -> str:
        self.check_password_policy(password, *user_inputs)
        return await self._passwords.hash(password)

    # -- registration and login -------------------------------------------------------------

    @property
    def registration_open(self) -> bool:
        """Whether anyone may create a tenant with :meth:`register`."""
        return self._allow_registration


    async def register(
        self, *, email: str, password: str, tenant_name: str, client_ip: str
    ) -> tuple[Tenant, User, TokenPair]:
        if not self._allow_registration:
            raise PermissionDenied("registration is disabled", code="registration_disabled")
        await self._limit(
            self._throttle.bucket("register-address", client_ip, self._per_address)
        )
        address = normalize_email(email)
        name = tenant_name.strip()
        if not name:
            raise InvalidInput("tenant_name must not be blank", code="invalid_tenant_name")
        local_part = address.split("@", 1)[0]
        password_hash = await self.hash_new_password(password, address, local_part, name)
        try:
            tenant, user = await self._store.create_tenant_with_admin(
                name, address, password_hash
            )
        except Conflict:
            # One answer whichever was taken, after the same hashing work as a success:
            # anyone may call this, so it must not say which addresses have accounts.
            raise Conflict(
                "registration refused: this email address or tenant name cannot be used",
                code="registration_refused",
            ) from None
        logger.info("tenant registered", extra={"tenant_id": tenant.id, "user_id": user.id})
        return tenant, user, await self._start_session(user)

    async def login(self, *, email: str, password: str, client_ip: str) -> TokenPair:
        address = _login_key(email)
        # Per address, then per account *and* address: an attacker who exhausts an account's
        # attempts from their address cannot lock its owner out, who logs in from another.
        # One transaction for both buckets (one write per attempt).
        account = self._throttle.bucket(
            "login-account", f"{address}|{client_ip}", self._per_account
        )
        attempt = await self._limit(
            self._throttle.bucket("login-address", client_ip, self._per_address), account
        )
        if len(password) > MAX_PASSWORD_CHARS:
            raise _bad_login("bad_password")
        user = await self._store.get_user_by_email(address)
        if user is None:
            await self._passwords.verify_dummy(password)
            raise _bad_login("unknown_user")
        ok, needs_rehash = await self._passwords.verify(user.password_hash, password)
        if not ok:
            raise _bad_login("bad_password")
        await self._revocation.refresh_if_changed()
        decision = self._revocation.check(
            user_id=user.id, tenant_id=user.tenant_id, session_id=None
        )
        if not user.is_active or not decision.allowed:
            raise PermissionDenied("this account is disabled", code="account_disabled")
        if attempt.had_earlier_hits(1, self._per_account):
            await self._throttle.reset(account)  # a first-try login skips this write
        if needs_rehash:
            await self._store.set_password_hash(
                user.tenant_id, user.id, await self._passwords.hash(password)
            )
        await self._store.record_login(user.tenant_id, user.id)
        return await self._start_session(user)

    async def _start_session(self, user: User) -> TokenPair:
        session_id = secrets.token_urlsafe(18)
        jti = new_jti()
        refresh, expires = self._tokens.issue_refresh(
            user_id=user.id, tenant_id=user.tenant_id, session_id=session_id, jti=jti
        )
        # The tokens carry the role as of the session's start, read where the session is
        # created: a demotion since the password check is seen here, or revokes the session.
        current = await self._store.create_session(
            user.tenant_id,
            user.id,
            session_id=session_id,
            refresh_jti=jti,
            expires_at=datetime.fromtimestamp(expires, UTC),
        )
        if current is None:
            raise PermissionDenied("this account is disabled", code="account_disabled")
        access, expires_in = self._tokens.issue_access(
            user_id=current.id,
            tenant_id=current.tenant_id,
            session_id=session_id,
            role=current.role,
            is_superuser=current.is_superuser,
        )
        return TokenPair(access_token=access, refresh_token=refresh, expires_in=expires_in)

    async def _limit(self, *buckets: Hit) -> Verdict:
        verdict = await self._throttle.hit(*buckets)
        wait = wait_seconds(verdict)
        if wait is not None:
            raise RateLimited("too many attempts; try again later", retry_after=wait)
        return verdict

    # -- refresh and logout -----------------------------------------------------------------

    async def refresh(self, refresh_token: str) -> TokenPair:
        claims = self._tokens.verify_refresh(refresh_token)
        await self._revocation.refresh_if_changed()
        decision = self._revocation.check(
            user_id=claims.user_id, tenant_id=claims.tenant_id, session_id=claims.session_id
        )
        if not decision.allowed:
            raise AuthenticationFailed(reason=decision.reason or "revoked", code="token_revoked")
        user = await self._store.get_user(claims.tenant_id, claims.user_id)
        if user is None or not user.is_active:
            raise AuthenticationFailed(reason="user_inactive", code="token_revoked")
        new = new_jti()
        refresh, expires = self._tokens.issue_refresh(
            user_id=user.id, tenant_id=user.tenant_id, session_id=claims.session_id, jti=new
        )
        rotation = await self._store.rotate_refresh_token(
            claims.jti,
            new_jti=new,
            new_expires_at=datetime.fromtimestamp(expires, UTC),
            grace=timedelta(seconds=self._settings.refresh_reuse_grace_seconds),
        )
        if rotation.outcome is RotateOutcome.REUSED:
            await self._revocation.changed_here()
            logger.warning(
                "refresh token reuse: session revoked",
                extra={"session_id": claims.session_id, "user_id": claims.user_id},
            )
            raise AuthenticationFailed(
                "refresh token was already used; the session is revoked",
                reason="refresh_reuse",
                code="refresh_token_reused",
            )
        if rotation.outcome is not RotateOutcome.ROTATED:
            raise AuthenticationFailed(reason=f"refresh_{rotation.outcome}", code="token_revoked")
        access, expires_in = self._tokens.issue_access(
            user_id=user.id,
            tenant_id=user.tenant_id,
            session_id=claims.session_id,
            role=user.role,
            is_superuser=user.is_superuser,
        )
        return TokenPair(access_token=access, refresh_token=refresh, expires_in=expires_in)

    async def logout(self, principal: Principal) -> None:
        if principal.session_id is None:
            raise InvalidInput(
                "API keys have no session; delete the key with DELETE /api/v1/auth/api-keys/{id}",
                code="no_session",
            )
        await self._store.revoke_session(principal.tenant_id, principal.session_id, "logout")
        await self._revocation.changed_here()

    async def logout_all(self, principal: Principal) -> int:
        count = await self._store.revoke_user_sessions(
            principal.tenant_id, principal.user_id, "logout_all"
        )
        await self._revocation.changed_here()
        return count

    # -- request authentication ---------------------------------------------------------------

    async def authenticate(self, credential: str) -> Principal:
        """Turn a bearer token or API key into a principal, or raise AuthenticationFailed.

        Access tokens cost a signature check and in-memory lookups; no database query.
        """
        if apikeys.looks_like_key(credential):
            return await self._authenticate_api_key(credential)
        claims = self._tokens.verify_access(credential)
        await self._revocation.refresh_if_changed()
        decision = self._revocation.check(
            user_id=claims.user_id, tenant_id=claims.tenant_id, session_id=claims.session_id
        )
        if not decision.allowed:
            raise AuthenticationFailed(reason=decision.reason or "revoked", code="token_revoked")
        return Principal(
            user_id=claims.user_id,
            tenant_id=claims.tenant_id,
            role=claims.role,
            is_superuser=claims.is_superuser,
            method="access_token",
            session_id=claims.session_id,
        )

    async def _authenticate_api_key(self, value: str) -> Principal:
        parsed = apikeys.parse(value)
        if parsed is None:
            raise AuthenticationFailed(reason="api_key_malformed")
        await self._revocation.refresh_if_changed()
        hit, owner = self._revocation.cached_api_key(parsed.key_id)
        if not hit:
            owner = await self._store.find_api_key(parsed.key_id)
            self._revocation.remember_api_key(parsed.key_id, owner)
        if owner is None or not apikeys.matches(parsed.secret, owner.key.secret_hash):
            raise AuthenticationFailed(reason="api_key_unknown")
        key = owner.key
        if key.revoked_at is not None or key.key_id in self._revocation.revoked_key_ids:
            raise AuthenticationFailed(reason="api_key_revoked", code="token_revoked")
        if key.expires_at is not None and key.expires_at <= utcnow():
            raise AuthenticationFailed("API key expired", reason="api_key_expired",
                                       code="token_expired")
        decision = self._revocation.check(
            user_id=key.user_id, tenant_id=key.tenant_id, session_id=None
        )
        if not decision.allowed:
            raise AuthenticationFailed(reason=decision.reason or "revoked", code="token_revoked")
        return Principal(
            user_id=key.user_id,
            tenant_id=key.tenant_id,
            role=owner.role,
            is_superuser=owner.is_superuser,
            method="api_key",
            api_key_id=key.id,
        )

    # -- API keys ----------------------------------------------------------------------------

    async def create_api_key(
        self, principal: Principal, *, name: str, expires_at: datetime | None
    ) -> tuple[ApiKey, str]:
        """Create a key for the caller; the plaintext is returned once and never stored."""
        clean = name.strip()
        if not clean:
            raise InvalidInput("name must not be blank", code="invalid_name")
        if expires_at is not None:
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
            try:
                expires_at = utc_datetime(expires_at)
            except ValueError as exc:
                raise InvalidInput(f"expires_at {exc}", code="invalid_expiry") from None
            if expires_at <= utcnow():
                raise InvalidInput("expires_at must be in the future", code="invalid_expiry")
        plaintext, key_id, secret_hash = apikeys.generate()
        key = await self._store.create_api_key(
            principal.tenant_id,
            principal.user_id,
            key_id=key_id,
            name=clean,
            secret_hash=secret_hash,
            expires_at=expires_at,
            max_keys=MAX_API_KEYS_PER_USER,
        )
        return key, plaintext

    async def list_api_keys(self, principal: Principal) -> list[ApiKey]:
        return await self._store.list_api_keys(principal.tenant_id, principal.user_id)

    async def delete_api_key(self, principal: Principal, api_key_id: str) -> None:
        deleted = await self._store.delete_api_key(
            principal.tenant_id, principal.user_id, api_key_id
        )
        if not deleted:
            raise NotFound("API key not found")
        await self._revocation.changed_here()

    # -- housekeeping ------------------------------------------------------------------------

    async def prune(self) -> int:
        """Delete expired sessions, tokens and events, and login-throttling buckets that are
        full again, from the database (one process of those sharing it does it: see
        ``container.run_housekeeping``)."""
        return await self._store.prune_expired(utcnow()) + await self._throttle.prune()

    def forget_stale(self) -> None:
        """Forget this process's in-memory entries that no longer matter (every process)."""
        self._revocation.forget_expired(utcnow())
