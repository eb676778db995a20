"""``/api/v1/auth``: registration, login, token refresh, logout, the caller, API keys."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Form, Path, Response, status

from ragd.api.deps import (
    AccountServiceDep,
    AuthServiceDep,
    ClientIP,
    CurrentPrincipal,
)
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.routing import ApiRoute
from ragd.api.schemas import (
    ApiKeyCreatedOut,
    ApiKeyCreateIn,
    ApiKeyOut,
    LoginIn,
    LogoutAllOut,
    MeOut,
    RefreshIn,
    RegisterIn,
    RegisterOut,
    TenantOut,
    TokenOut,
    UserOut,
)
from ragd.auth.service import TokenPair

router = APIRouter(prefix="/auth", tags=["auth"], responses=ERROR_RESPONSES, route_class=ApiRoute)


def _tokens(pair: TokenPair) -> TokenOut:
    return TokenOut(
        access_token=pair.access_token, refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
    )


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(body: RegisterIn, auth: AuthServiceDep, ip: ClientIP) -> RegisterOut:
    """Create a tenant with you as its admin, and sign in.

    Send your email, a password and a name for the tenant. The answer (201) holds an access
    token and a refresh token, as `POST /auth/login` gives them, with your user and the new
    tenant. Next: **Authorize** with the `access_token` (or send it as
    `Authorization: Bearer <access_token>`), then create a collection with
    `POST /api/v1/collections`.

    Registration is open in development; in production only when the server allows it
    (else 403 `registration_disabled`). A password too easy to guess is a 422
    `weak_password`; an email or tenant name already taken is a 409."""
    tenant, user, pair = await auth.register(
        email=body.email, password=body.password, tenant_name=body.tenant_name, client_ip=ip
    )
    return RegisterOut(**_tokens(pair).model_dump(), user=UserOut.of(user),
                       tenant=TenantOut.of(tenant))


@router.post("/login")
async def login(body: LoginIn, auth: AuthServiceDep, ip: ClientIP) -> TokenOut:
    """Exchange your email and password for an access token and a refresh token.

    The answer holds `access_token` (send it as `Authorization: Bearer <access_token>`; in
    this page, **Authorize** with it), `expires_in` (its lifetime in seconds) and
    `refresh_token` (trade it at `POST /auth/refresh` for a new pair before the access
    token expires). Next: create a collection with `POST /api/v1/collections`, or an API
    key for a script with `POST /api/v1/auth/api-keys`.

    Wrong credentials are a 401 that does not say which part was wrong; repeated failures
    are throttled (429 with `Retry-After`)."""
    return _tokens(await auth.login(email=body.email, password=body.password, client_ip=ip))


@router.post("/token")
async def token(
    username: Annotated[str, Form(min_length=1, max_length=320)],
    password: Annotated[str, Form(min_length=1, max_length=256)],
    auth: AuthServiceDep,
    ip: ClientIP,
    grant_type: Annotated[Literal["password"], Form()] = "password",
) -> TokenOut:
    """OAuth2 password flow (RFC 6749 4.3): form fields ``username`` (the email) and
    ``password``, for OAuth2 clients; the same as ``/login``."""
    return _tokens(await auth.login(email=username, password=password, client_ip=ip))


@router.post("/refresh")
async def refresh(body: RefreshIn, auth: AuthServiceDep) -> TokenOut:
    """Rotate: the presented refresh token is spent and a new pair is returned.

    Presenting a spent refresh token again revokes the whole session (reuse detection).
    """
    return _tokens(await auth.refresh(body.refresh_token))


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(principal: CurrentPrincipal, auth: AuthServiceDep) -> Response:
    """Revoke the current session: its access and refresh tokens stop working at once."""
    await auth.logout(principal)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/logout-all")
async def logout_all(principal: CurrentPrincipal, auth: AuthServiceDep) -> LogoutAllOut:
    """Revoke every session of the caller (API keys are managed separately)."""
    return LogoutAllOut(sessions_revoked=await auth.logout_all(principal))


@router.get("/me")
async def me(principal: CurrentPrincipal, accounts: AccountServiceDep) -> MeOut:
    user, tenant = await accounts.get_user(principal)
    return MeOut(**UserOut.of(user).model_dump(), tenant=TenantOut.of(tenant),
                 auth_method=principal.method)


@router.post("/api-keys", status_code=status.HTTP_201_CREATED)
async def create_api_key(
    body: ApiKeyCreateIn, principal: CurrentPrincipal, auth: AuthServiceDep
) -> ApiKeyCreatedOut:
    """Create an API key that acts as you, for scripts and services.

    Send a `name` to recognise it by and, optionally, `expires_at` (a future time; without
    it the key works until deleted). The answer (201) holds the full `key`: it is shown in
    this response only (only a hash is stored), so keep it now. Next: send it as
    `X-API-Key: <key>` (or `Authorization: Bearer <key>`) on any call; list your keys with
    `GET /api/v1/auth/api-keys` and revoke one with `DELETE /api/v1/auth/api-keys/{id}`."""
    key, plaintext = await auth.create_api_key(
        principal, name=body.name, expires_at=body.expires_at
    )
    return ApiKeyCreatedOut(**ApiKeyOut.of(key).model_dump(), key=plaintext)


@router.get("/api-keys")
async def list_api_keys(principal: CurrentPrincipal, auth: AuthServiceDep) -> list[ApiKeyOut]:
    return [ApiKeyOut.of(key) for key in await auth.list_api_keys(principal)]


@router.delete("/api-keys/{api_key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_api_key(
    api_key_id: Annotated[str, Path(min_length=1, max_length=64)],
    principal: CurrentPrincipal,
    auth: AuthServiceDep,
) -> Response:
    """Revoke and delete a key; requests using it fail from the next one on."""
    await auth.delete_api_key(principal, api_key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
