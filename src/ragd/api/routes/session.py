"""``/api/v1/auth/session``: sign-in for browsers, with the refresh token in a cookie.

The web console (and any browser client) must not keep a refresh token where page content
could read it. These routes answer like ``/auth/login`` but put the refresh token in an
``HttpOnly``, ``SameSite=Strict`` cookie whose path is this prefix, so the browser sends it
to nothing else, and return only the access token, which the page keeps in memory. Spending
the cookie (``/refresh``) also needs the ``X-CSRF-Token`` header (see :mod:`ragd.auth.csrf`)
and a same-origin request. The cookie is never a credential anywhere else: every other route
still wants ``Authorization: Bearer``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Cookie, Header, Request, Response, status
from pydantic import BaseModel, Field

from ragd.api.deps import AuthServiceDep, ClientIP, CurrentPrincipal, SettingsDep
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.routing import ApiRoute
from ragd.api.schemas import LoginIn, RegisterIn, TenantOut, UserOut
from ragd.auth.csrf import csrf_matches, csrf_token
from ragd.auth.service import TokenPair
from ragd.errors import AuthenticationFailed, PermissionDenied
from ragd.settings import Settings

PREFIX = "/auth/session"
#: Where the refresh cookie is sent: this router's routes and nothing else.
COOKIE_PATH = "/api/v1" + PREFIX
REFRESH_COOKIE = "ragd_refresh"
CSRF_COOKIE = "ragd_csrf"
CSRF_HEADER = "X-CSRF-Token"

router = APIRouter(prefix=PREFIX, tags=["auth"], responses=ERROR_RESPONSES, route_class=ApiRoute)


class SessionOut(BaseModel):
    """A browser session: the access token; the refresh token went into a cookie."""

    access_token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    token_type: str = Field(default="bearer", description="Always `bearer`.")
    expires_in: int = Field(description="Access token lifetime in seconds; refresh before.")


class SessionRegisteredOut(SessionOut):
    user: UserOut
    tenant: TenantOut


class SessionOptionsOut(BaseModel):
    registration_open: bool = Field(description="Whether anyone may create a tenant here.")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _start(response: Response, request: Request, pair: TokenPair, settings: Settings) -> None:
    """Put the refresh token and its CSRF token in cookies."""
    max_age = settings.auth.refresh_token_ttl_seconds
    secure = _secure(request)
    response.set_cookie(
        REFRESH_COOKIE, pair.refresh_token, max_age=max_age, path=COOKIE_PATH,
        secure=secure, httponly=True, samesite="strict",
    )
    response.set_cookie(
        CSRF_COOKIE, csrf_token(pair.refresh_token), max_age=max_age, path="/",
        secure=secure, httponly=False, samesite="strict",
    )


def _end(response: Response, request: Request) -> None:
    secure = _secure(request)
    response.delete_cookie(REFRESH_COOKIE, path=COOKIE_PATH, secure=secure, httponly=True,
                           samesite="strict")
    response.delete_cookie(CSRF_COOKIE, path="/", secure=secure, samesite="strict")


def _same_origin(request: Request) -> bool:
    """No sign of a cross-site request: ``Sec-Fetch-Site`` and ``Origin`` where sent."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin == f"{request.url.scheme}://{host}"


@router.get("/options")
async def options(auth: AuthServiceDep) -> SessionOptionsOut:
    """What a sign-in page needs to know before anyone signs in."""
    return SessionOptionsOut(registration_open=auth.registration_open)


@router.post("")
async def sign_in(
    body: LoginIn, request: Request, response: Response, auth: AuthServiceDep,
    settings: SettingsDep, ip: ClientIP,
) -> SessionOut:
    """Sign in with email and password (as `/auth/login`): the access token is returned, the
    refresh token is set as an `HttpOnly`, `SameSite=Strict` cookie for these routes only."""
    pair = await auth.login(email=body.email, password=body.password, client_ip=ip)
    _start(response, request, pair, settings)
    return SessionOut(access_token=pair.access_token, expires_in=pair.expires_in)


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(
    body: RegisterIn, request: Request, response: Response, auth: AuthServiceDep,
    settings: SettingsDep, ip: ClientIP,
) -> SessionRegisteredOut:
    """Create a tenant with the caller as its admin (as `/auth/register`), signed in with a
    cookie session."""
    tenant, user, pair = await auth.register(
        email=body.email, password=body.password, tenant_name=body.tenant_name, client_ip=ip
    )
    _start(response, request, pair, settings)
    return SessionRegisteredOut(access_token=pair.access_token, expires_in=pair.expires_in,
                                user=UserOut.of(user), tenant=TenantOut.of(tenant))


@router.post("/refresh")
async def refresh(
    request: Request,
    response: Response,
    auth: AuthServiceDep,
    settings: SettingsDep,
    ragd_refresh: Annotated[str | None, Cookie(max_length=4096)] = None,
    x_csrf_token: Annotated[str | None, Header(max_length=128)] = None,
) -> SessionOut:
    """A new access token from the session cookie; the cookie rotates. Needs the
    `X-CSRF-Token` header (the value of the `ragd_csrf` cookie) and a same-origin request."""
    if not ragd_refresh:
        raise AuthenticationFailed("no session: sign in", reason="no_cookie", code="no_session")
    if not _same_origin(request) or not csrf_matches(ragd_refresh, x_csrf_token):
        raise PermissionDenied("CSRF check failed", code="csrf_failed")
    pair = await auth.refresh(ragd_refresh)
    _start(response, request, pair, settings)
    return SessionOut(access_token=pair.access_token, expires_in=pair.expires_in)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
async def sign_out(
    request: Request, principal: CurrentPrincipal, auth: AuthServiceDep
) -> Response:
    """Revoke the current session (its access and refresh tokens) and clear the cookies."""
    await auth.logout(principal)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    _end(response, request)
    return response
