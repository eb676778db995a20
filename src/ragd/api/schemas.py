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


#: Shown in the examples of the auth routes; strong enough for the default password policy.
_EXAMPLE_EMAIL = "ada@example.com"
_EXAMPLE_PASSWORD = "correct-quartz-lantern-58"  # noqa: S105 - a documentation example


class RegisterIn(Input):
    """A new tenant and its first admin (``POST /auth/register``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"email": _EXAMPLE_EMAIL, "password": _EXAMPLE_PASSWORD, "tenant_name": "Acme Research"},
    ]})

    email: Email = Field(description="Your email address: the login of the tenant's first admin.")
    password: Password = Field(
        description="At least 10 characters (the server's password_min_length) and hard to "
        "guess: a zxcvbn score of 3 of 4 by default, counting words from the email and the "
        "tenant name against it. A refused password answers 422 weak_password with a hint."
    )
    tenant_name: Name = Field(
        description="Name of the new tenant (your organisation or project); one line."
    )


class LoginIn(Input):
    """Credentials for ``POST /auth/login``."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"email": _EXAMPLE_EMAIL, "password": _EXAMPLE_PASSWORD},
    ]})

    email: Email = Field(description="The email the account was registered with.")
    password: Password = Field(description="The account's password.")


class RefreshIn(Input):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class TokenOut(BaseModel):
    access_token: str = Field(
        description="Send it as `Authorization: Bearer <access_token>` on every other call."
    )
    refresh_token: str = Field(
        description="Trade it at POST /auth/refresh for a new pair before the access token "
        "expires; it can be used once."
    )
    token_type: Literal["bearer"] = Field(
        default="bearer", description="Always `bearer`."
    )
    expires_in: int = Field(description="Access token lifetime in seconds.")


class TenantOut(BaseModel):
    id: str = Field(description="The tenant's id.")
    name: str = Field(description="The tenant's name.")
    status: TenantStatus = Field(description="`suspended`: its users' requests are refused.")
    created_at: datetime = Field(description="When the tenant was created (UTC).")

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls(id=tenant.id, name=tenant.name, status=tenant.status,
                   created_at=tenant.created_at)


class UserOut(BaseModel):
    id: str = Field(description="The user's id.")
    tenant_id: str = Field(description="The tenant the user belongs to.")
    email: str = Field(description="The user's email (the login).")
    role: Role = Field(description="The user's role in the tenant; admins manage its users.")
    is_active: bool = Field(description="False once deactivated: the user cannot sign in.")
    is_verified: bool = Field(description="Whether the email address is marked verified.")
    is_superuser: bool = Field(description="A platform administrator (all tenants).")
    created_at: datetime = Field(description="When the user was created (UTC).")
    last_login_at: datetime | None = Field(description="The last sign-in (UTC), if any.")

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
    """The tokens of the new admin's first session, the admin and the tenant."""

    user: UserOut = Field(description="The new user, the tenant's admin.")
    tenant: TenantOut = Field(description="The new tenant.")


class MeOut(UserOut):
    tenant: TenantOut
    auth_method: Literal["access_token", "api_key"]


class ApiKeyCreateIn(Input):
    """A new API key (``POST /auth/api-keys``)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "ingest script", "expires_at": "2030-01-01T00:00:00Z"},
        {"name": "notebook"},
    ]})

    name: Name = Field(description="A label to recognise the key by in the key list.")
    expires_at: Timestamp | None = Field(
        default=None,
        description="When the key stops working: an ISO 8601 time with a UTC offset, in the "
        "future. Null or absent: it works until deleted.",
    )


class ApiKeyOut(BaseModel):
    id: str = Field(description="The key's id (DELETE /auth/api-keys/{id} revokes it).")
    name: str = Field(description="The label given when the key was created.")
    prefix: str = Field(description="The public start of the key, safe to display.")
    created_at: datetime = Field(description="When the key was created (UTC).")
    expires_at: datetime | None = Field(description="When the key stops working, if ever.")
    revoked: bool = Field(description="Whether the key was revoked.")

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
    key: str = Field(
        description="The full key. Shown once; only a hash is stored. Send it as "
        "`X-API-Key: <key>` (or `Authorization: Bearer <key>`)."
    )


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
