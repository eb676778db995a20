"""Account administration: a tenant admin's users, a platform admin's tenants."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ragd.auth.principal import Principal
from ragd.auth.revocation import RevocationList
from ragd.auth.service import AuthService, normalize_email
from ragd.errors import Conflict, InvalidInput, NotFound
from ragd.stores.base import IdentityStore, Role, Tenant, TenantStatus, User

logger = logging.getLogger(__name__)

BOOTSTRAP_EMAIL = "admin@example.com"
BOOTSTRAP_TENANT = "default"
BOOTSTRAP_FILE = "initial-admin.txt"


@dataclass(frozen=True, slots=True)
class BootstrapAdmin:
    email: str
    password: str
    path: Path


class AccountService:
    """Users within a tenant and tenants within the platform.

    Callers are authorised by the API layer (tenant admin / platform admin); every user
    operation is confined to ``principal.tenant_id``, so another tenant's user id is simply
    not found.
    """

    def __init__(
        self, store: IdentityStore, auth: AuthService, revocation: RevocationList
    ) -> None:
        self._store = store
        self._auth = auth
        self._revocation = revocation

    # -- users of the caller's tenant -------------------------------------------------------

    async def list_users(self, principal: Principal, *, limit: int, offset: int) -> list[User]:
        return await self._store.list_users(principal.tenant_id, limit=limit, offset=offset)

    async def create_user(
        self, principal: Principal, *, email: str, password: str, role: Role
    ) -> User:
        address = normalize_email(email)
        password_hash = await self._auth.hash_new_password(
            password, address, address.split("@", 1)[0]
        )
        user = await self._store.create_user(
            principal.tenant_id, address, password_hash, role=role
        )
        logger.info("user created", extra={"tenant_id": user.tenant_id, "user_id": user.id})
        return user

    async def update_user(
        self,
        principal: Principal,
        user_id: str,
        *,
        role: Role | None,
        is_active: bool | None,
    ) -> User:
        user = await self._store.update_user(
            principal.tenant_id, user_id, acting=principal.privilege, role=role,
            is_active=is_active,
        )
        if user is None:
            raise NotFound("user not found")
        await self._revocation.changed_here()
        return user

    async def delete_user(self, principal: Principal, user_id: str) -> None:
        if not await self._store.delete_user(
            principal.tenant_id, user_id, acting=principal.privilege
        ):
            raise NotFound("user not found")
        await self._revocation.changed_here()
        logger.info("user deleted", extra={"tenant_id": principal.tenant_id, "user_id": user_id})

    async def get_user(self, principal: Principal) -> tuple[User, Tenant]:
        user = await self._store.get_user(principal.tenant_id, principal.user_id)
        tenant = await self._store.get_tenant(principal.tenant_id)
        if user is None or tenant is None:
            raise NotFound("user not found")
        return user, tenant

    # -- tenants (platform administration) ----------------------------------------------------

    async def list_tenants(self, *, limit: int, offset: int) -> list[Tenant]:
        return await self._store.list_tenants(limit=limit, offset=offset)

    async def create_tenant(self, name: str) -> Tenant:
        clean = name.strip()
        if not clean:
            raise InvalidInput("name must not be blank", code="invalid_tenant_name")
        tenant = await self._store.create_tenant(clean)
        logger.info("tenant created", extra={"tenant_id": tenant.id})
        return tenant

    async def update_tenant(
        self,
        principal: Principal | None,
        tenant_id: str,
        *,
        name: str | None,
        status: TenantStatus | None,
    ) -> Tenant:
        if principal is not None and status == "suspended" and tenant_id == principal.tenant_id:
            raise Conflict("you cannot suspend your own tenant", code="own_tenant")
        clean = None if name is None else name.strip()
        if clean == "":
            raise InvalidInput("name must not be blank", code="invalid_tenant_name")
        tenant = await self._store.update_tenant(tenant_id, name=clean, status=status)
        if tenant is None:
            raise NotFound("tenant not found")
        if status is not None:
            await self._revocation.changed_here()
        return tenant

    async def create_superuser(self, *, email: str, password: str, tenant_name: str) -> User:
        """Create a platform administrator (CLI). The tenant is created if it is missing."""
        address = normalize_email(email)
        password_hash = await self._auth.hash_new_password(password, address)
        tenant = await self._store.get_tenant_by_name(tenant_name)
        if tenant is None:
            _, user = await self._store.create_tenant_with_admin(
                tenant_name, address, password_hash, is_superuser=True, is_verified=True
            )
        else:
            user = await self._store.create_user(
                tenant.id, address, password_hash, role="admin", is_superuser=True,
                is_verified=True,
            )
        logger.info("platform admin created", extra={"user_id": user.id})
        return user

    async def bootstrap_admin(self, data_dir: Path) -> BootstrapAdmin | None:
        """On an empty database, create a first platform admin with a random password.

        The credentials are written to ``initial-admin.txt`` (mode 0600) in the data dir and
        returned so the CLI can show them once. Returns None when users already exist.
        """
        if await self._store.count_users() > 0:
            return None
        password = secrets.token_urlsafe(18)
        try:
            await self.create_superuser(
                email=BOOTSTRAP_EMAIL, password=password, tenant_name=BOOTSTRAP_TENANT
            )
        except Conflict:  # another process won the race
            return None
        path = data_dir / BOOTSTRAP_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"email: {BOOTSTRAP_EMAIL}\npassword: {password}\n")
        logger.warning("created the first platform admin", extra={"email": BOOTSTRAP_EMAIL,
                                                                    "file": str(path)})
        return BootstrapAdmin(email=BOOTSTRAP_EMAIL, password=password, path=path)
