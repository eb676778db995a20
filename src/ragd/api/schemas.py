"""Request and response bodies shared by the routes. Inputs forbid unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from ragd import hygiene
from ragd.api.fields import Input, NameLine, Timestamp, at_least_one_change
from ragd.auth import apikeys
from ragd.stores.base import ApiKey, Role, Tenant, TenantStatus, User

Email = Annotated[
    str, StringConstraints(min_length=3, max_length=320), AfterValidator(hygiene.check_label),
    Field(json_schema_extra={"format": "email"}),
]
Password = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=100), *NameLine]


class RegisterIn(Input):
    email: Email
    password: Password
    tenant_name: Name


class LoginIn(Input):
    email: Email
    password: Password


class RefreshIn(Input):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a token type, not a secret
    expires_in: int = Field(description="Access token lifetime in seconds.")


class TenantOut(BaseModel):
    id: str
    name: str
    status: TenantStatus
    created_at: datetime

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls(id=tenant.id, name=tenant.name, status=tenant.status,
                   created_at=tenant.created_at)


class UserOut(BaseModel):
    id: str
    tenant_id: str
    email: str
    role: Role
    is_active: bool
    is_verified: bool
    is_superuser: bool
    created_at: datetime
    last_login_at: datetime | None

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            tenant_id=user.tenant_id,
            email=user.email,
            role=user.role,
            is_active=user.is_active,
            is_verified=user.is_verified,
            is_superuser=user.is_superuser,
            created_at=user.created_at,
            last_login_at=user.last_login_at,
        )


class RegisterOut(TokenOut):
    user: UserOut
    tenant: TenantOut


class MeOut(UserOut):
    tenant: TenantOut
    auth_method: Literal["access_token", "api_key"]


class ApiKeyCreateIn(Input):
    name: Name
    expires_at: Timestamp | None = None


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The public start of the key, safe to display.")
    created_at: datetime
    expires_at: datetime | None
    revoked: bool

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=apikeys.display_prefix(key.key_id),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked=key.revoked_at is not None,
        )


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The full key. Shown once; only a hash is stored.")


class UserCreateIn(Input):
    email: Email
    password: Password
    role: Role = "member"


class UserPatchIn(Input):
    model_config = ConfigDict(json_schema_extra=at_least_one_change)

    role: Role | None = None
    is_active: bool | None = None


class TenantCreateIn(Input):
    name: Name


class TenantPatchIn(Input):
    model_config = ConfigDict(json_schema_extra=at_least_one_change)

    name: Name | None = None
    status: TenantStatus | None = None


class LogoutAllOut(BaseModel):
    sessions_revoked: int
