"""Browser sessions (``/api/v1/auth/session``): the refresh token lives in an HttpOnly,
SameSite=Strict cookie scoped to the session routes, spent only with the CSRF token and
from the same origin; the access token is the only credential a page holds."""

from __future__ import annotations

from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from ragd.app import create_app
from ragd.auth.csrf import csrf_matches, csrf_token
from tests.conftest import (
    STRONG_PASSWORD,
    assert_error,
    bearer,
    make_settings,
    register,
    running,
    unique_email,
)

SESSION = "/api/v1/auth/session"
REFRESH = f"{SESSION}/refresh"
ME = "/api/v1/auth/me"


def cookies_set(response: httpx.Response) -> dict[str, SimpleCookie]:
    """Each Set-Cookie of the response, parsed, by cookie name."""
    found: dict[str, SimpleCookie] = {}
    for header in response.headers.get_list("set-cookie"):
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(header)
        for name in parsed:
            found[name] = parsed
    return found


async def sign_in(client: httpx.AsyncClient) -> tuple[str, httpx.Response]:
    email = unique_email("browser")
    await register(client, email=email)
    client.cookies.clear()
    response = await client.post(SESSION, json={"email": email, "password": STRONG_PASSWORD})
    assert response.status_code == 200, response.text
    return email, response


def presenting(refresh: str) -> dict[str, str]:
    """Headers that present ``refresh`` as the session cookie, with its CSRF token."""
    return {"Cookie": f"ragd_refresh={refresh}", "X-CSRF-Token": csrf_token(refresh)}


def csrf(client: httpx.AsyncClient) -> dict[str, str]:
    return {"X-CSRF-Token": client.cookies.get("ragd_csrf", path="/") or ""}


async def test_sign_in_keeps_the_refresh_token_out_of_reach_of_the_page(
    client: httpx.AsyncClient,
) -> None:
    _, response = await sign_in(client)
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    cookies = cookies_set(response)
    refresh = cookies["ragd_refresh"]["ragd_refresh"]
    assert refresh["httponly"] is True and refresh["samesite"] == "strict"
    assert refresh["path"] == SESSION and not refresh["secure"]  # plain HTTP here
    token = cookies["ragd_csrf"]["ragd_csrf"]
    assert token["path"] == "/" and not token["httponly"] and token["samesite"] == "strict"
    assert csrf_matches(refresh.value, token.value)
    me = await client.get(ME, headers=bearer(body["access_token"]))
    assert me.status_code == 200


async def test_the_cookie_is_no_credential_anywhere_else(client: httpx.AsyncClient) -> None:
    await sign_in(client)
    # The client sends its cookies wherever their path allows; /auth/me wants a bearer.
    assert_error(await client.get(ME), 401)
    assert_error(await client.get(ME, headers={"Cookie": "ragd_refresh=x"}), 401)


async def test_refresh_needs_the_csrf_token_of_the_current_cookie(
    client: httpx.AsyncClient,
) -> None:
    await sign_in(client)
    assert_error(await client.post(REFRESH), 403, "csrf_failed")
    assert_error(await client.post(REFRESH, headers={"X-CSRF-Token": "guess"}), 403,
                 "csrf_failed")
    old = csrf(client)
    renewed = await client.post(REFRESH, headers=old)
    assert renewed.status_code == 200, renewed.text
    assert set(renewed.json()) == {"access_token", "token_type", "expires_in"}
    assert (await client.get(ME, headers=bearer(renewed.json()["access_token"]))).status_code \
        == 200
    # The cookie rotated, and with it the CSRF token: the old one no longer matches.
    assert csrf(client) != old
    assert_error(await client.post(REFRESH, headers=old), 403, "csrf_failed")
    assert (await client.post(REFRESH, headers=csrf(client))).status_code == 200


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.test"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
])
async def test_refresh_refuses_cross_site_requests(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    await sign_in(client)
    assert_error(await client.post(REFRESH, headers={**csrf(client), **headers}), 403,
                 "csrf_failed")
    same = {"Origin": "http://ragd.test", "Sec-Fetch-Site": "same-origin"}
    assert (await client.post(REFRESH, headers={**csrf(client), **same})).status_code == 200


async def test_refresh_without_a_session_cookie(client: httpx.AsyncClient) -> None:
    assert_error(await client.post(REFRESH, headers={"X-CSRF-Token": "x"}), 401, "no_session")


async def test_a_spent_cookie_presented_again_revokes_the_session(
    client: httpx.AsyncClient,
) -> None:
    _, response = await sign_in(client)
    spent = cookies_set(response)["ragd_refresh"]["ragd_refresh"].value
    renewed = await client.post(REFRESH, headers=csrf(client))
    assert renewed.status_code == 200
    client.cookies.clear()
    replay = await client.post(REFRESH, headers=presenting(spent))
    assert replay.status_code == 401
    assert_error(await client.get(ME, headers=bearer(renewed.json()["access_token"])), 401)


async def test_sign_out_revokes_the_session_and_clears_the_cookies(
    client: httpx.AsyncClient,
) -> None:
    _, response = await sign_in(client)
    access = response.json()["access_token"]
    refresh = cookies_set(response)["ragd_refresh"]["ragd_refresh"].value
    out = await client.delete(SESSION, headers=bearer(access))
    assert out.status_code == 204
    cleared = cookies_set(out)
    assert cleared["ragd_refresh"]["ragd_refresh"]["max-age"] == "0"
    assert cleared["ragd_csrf"]["ragd_csrf"]["max-age"] == "0"
    assert_error(await client.get(ME, headers=bearer(access)), 401)
    client.cookies.clear()
    again = await client.post(REFRESH, headers=presenting(refresh))
    assert again.status_code == 401


async def test_register_starts_a_cookie_session(client: httpx.AsyncClient) -> None:
    options = await client.get(f"{SESSION}/options")
    assert options.json() == {"registration_open": True}
    response = await client.post(f"{SESSION}/register", json={
        "email": unique_email("reg"), "password": STRONG_PASSWORD, "tenant_name": "cookie co"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert "refresh_token" not in body and body["tenant"]["name"] == "cookie co"
    assert body["user"]["role"] == "admin"
    assert "ragd_refresh" in cookies_set(response)
    assert (await client.post(REFRESH, headers=csrf(client))).status_code == 200


async def test_closed_registration_is_closed_for_sessions_too(tmp_path: Path) -> None:
    app: FastAPI = create_app(make_settings(tmp_path / "data", allow_registration=False))
    async with running(app) as client:
        assert (await client.get(f"{SESSION}/options")).json() == {"registration_open": False}
        refused = await client.post(f"{SESSION}/register", json={
            "email": unique_email("reg"), "password": STRONG_PASSWORD, "tenant_name": "x co"})
        assert_error(refused, 403, "registration_disabled")
        assert "set-cookie" not in refused.headers


async def test_cookies_are_secure_over_https(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "data"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://ragd.test") as client:
            _, response = await sign_in(client)
            for name in ("ragd_refresh", "ragd_csrf"):
                assert cookies_set(response)[name][name]["secure"] is True
