"""Authentication flows over real HTTP: registration, login, throttling, refresh rotation,
logout, account administration, tenant suspension, API keys, cross-process revocation and
password rehashing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import argon2
import httpx
import pytest
from fastapi import FastAPI

from ragd.app import create_app
from ragd.settings import Settings
from tests.conftest import (
    STRONG_PASSWORD,
    assert_error,
    bearer,
    login,
    make_settings,
    register,
    running,
    unique_email,
)

API = "/api/v1"
ME = f"{API}/auth/me"
REFRESH = f"{API}/auth/refresh"
LOGIN = f"{API}/auth/login"
REGISTER = f"{API}/auth/register"
KEYS = f"{API}/auth/api-keys"
TENANT_USERS = f"{API}/tenant/users"
ADMIN_TENANTS = f"{API}/admin/tenants"
WRONG_PASSWORD = "not-the-right-password-77"


# -- helpers ---------------------------------------------------------------------------------


@asynccontextmanager
async def client_from(app: FastAPI, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    """A second client on an app whose lifespan already runs, calling from another IP."""
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://ragd.test") as client:
        yield client


@asynccontextmanager
async def app_and_client(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with running(app) as client:
        yield app, client


async def me_status(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get(ME, headers=bearer(token))).status_code


async def key_status(client: httpx.AsyncClient, key: str) -> int:
    return (await client.get(ME, headers={"X-API-Key": key})).status_code


async def refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post(REFRESH, json={"refresh_token": token})


async def try_login(
    client: httpx.AsyncClient, email: str, password: str = STRONG_PASSWORD
) -> httpx.Response:
    return await client.post(LOGIN, json={"email": email, "password": password})


async def add_member(
    client: httpx.AsyncClient, admin_token: str, *, role: str = "member"
) -> dict[str, Any]:
    """Create a user in the admin's tenant (no session yet); return it with its email."""
    email = unique_email("member")
    response = await client.post(
        TENANT_USERS,
        headers=bearer(admin_token),
        json={"email": email, "password": STRONG_PASSWORD, "role": role},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["email"] == email
    return body


async def create_key(client: httpx.AsyncClient, token: str, **extra: Any) -> dict[str, Any]:
    response = await client.post(KEYS, headers=bearer(token), json={"name": "ci", **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def patch_user(
    client: httpx.AsyncClient, admin_token: str, user_id: str, **changes: Any
) -> httpx.Response:
    return await client.patch(
        f"{TENANT_USERS}/{user_id}", headers=bearer(admin_token), json=changes
    )


def high_limits(data_dir: Path, **auth: Any) -> Settings:
    """Settings whose login throttling stays out of the way unless a test lowers it."""
    values = {"login_attempts_per_ip": 10_000, "login_attempts_per_account": 10_000, **auth}
    return make_settings(data_dir, auth=values)


# -- registration ----------------------------------------------------------------------------


async def test_register_returns_tokens_admin_user_and_tenant(client: httpx.AsyncClient) -> None:
    response = await client.post(
        REGISTER,
        json={"email": "founder@acme.io", "password": STRONG_PASSWORD, "tenant_name": "Acme"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["access_token"] and body["refresh_token"]
    assert body["expires_in"] == 15 * 60
    assert body["user"]["email"] == "founder@acme.io"
    assert body["user"]["role"] == "admin"
    assert body["user"]["is_active"] is True and body["user"]["is_superuser"] is False
    assert body["tenant"]["name"] == "Acme" and body["tenant"]["status"] == "active"
    assert body["user"]["tenant_id"] == body["tenant"]["id"]
    assert "password" not in str(body["user"]).lower()
    me = await client.get(ME, headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.json()["id"] == body["user"]["id"]


async def test_register_normalises_email_and_login_accepts_either_form(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        REGISTER,
        json={"email": "  Alice@ACME.io ", "password": STRONG_PASSWORD, "tenant_name": "alice"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["user"]["email"] == "alice@acme.io"
    for form in ("alice@acme.io", "  Alice@ACME.io ", "ALICE@acme.IO"):
        tokens = await login(client, form)
        assert (await client.get(ME, headers=bearer(tokens["access_token"]))).json()[
            "email"
        ] == "alice@acme.io"


@pytest.mark.parametrize(
    ("email", "password", "tenant"),
    [
        pytest.param("weak1@acme.io", "password123", "tenant-one", id="common-password"),
        pytest.param("weak2@acme.io", "Xq7#vLp2!", "tenant-two", id="9-chars-strong-ish"),
        pytest.param(
            "zanzibarquokka@acme.io",
            "zanzibarquokkazanzibarquokka",
            "tenant-three",
            id="email-local-part-twice",
        ),
    ],
)
async def test_register_rejects_weak_password(
    client: httpx.AsyncClient, email: str, password: str, tenant: str
) -> None:
    response = await client.post(
        REGISTER, json={"email": email, "password": password, "tenant_name": tenant}
    )
    assert_error(response, 422, "weak_password")
    # Nothing was created: the same email registers once the password is strong.
    ok = await client.post(
        REGISTER, json={"email": email, "password": STRONG_PASSWORD, "tenant_name": tenant}
    )
    assert ok.status_code == 201, ok.text


@pytest.mark.parametrize("length", [72, 73, 256])
async def test_long_passwords_are_accepted(client: httpx.AsyncClient, length: int) -> None:
    """zxcvbn refuses input over 72 characters; the policy scores a prefix, so a long
    passphrase is a 201, never a 500."""
    password = ("correct-horse-battery-staple-" * 10)[:length]
    email = unique_email("long")
    response = await client.post(
        REGISTER, json={"email": email, "password": password, "tenant_name": f"long-{length}"}
    )
    assert response.status_code == 201, response.text
    assert (await try_login(client, email, password)).status_code == 200


async def test_password_built_from_email_is_fine_for_someone_else(
    client: httpx.AsyncClient,
) -> None:
    """Control for the case above: it is weak only because it repeats the user's own email."""
    response = await client.post(
        REGISTER,
        json={
            "email": "unrelated@acme.io",
            "password": "zanzibarquokkazanzibarquokka",
            "tenant_name": "unrelated",
        },
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "alice@@acme.io", "@acme.io"])
async def test_register_rejects_invalid_email(client: httpx.AsyncClient, email: str) -> None:
    response = await client.post(
        REGISTER, json={"email": email, "password": STRONG_PASSWORD, "tenant_name": "x-corp"}
    )
    assert_error(response, 422, "invalid_email")


async def test_register_disabled_is_403(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", allow_registration=False)
    async with running(create_app(settings)) as client:
        response = await client.post(
            REGISTER,
            json={"email": "x@acme.io", "password": STRONG_PASSWORD, "tenant_name": "x"},
        )
        assert_error(response, 403, "registration_disabled")


async def test_register_refusals_do_not_say_which_field_was_taken(
    client: httpx.AsyncClient,
) -> None:
    """Anyone may register: a taken email and a taken tenant name get one answer, so the
    endpoint is no oracle for which addresses have accounts."""
    await register(client, email="dup@acme.io", tenant="Globex")
    taken_email = await client.post(
        REGISTER,
        json={"email": "DUP@acme.io", "password": STRONG_PASSWORD, "tenant_name": "another"},
    )
    taken_name = await client.post(
        REGISTER,
        json={"email": unique_email(), "password": STRONG_PASSWORD, "tenant_name": "gLOBEX"},
    )
    assert_error(taken_email, 409, "registration_refused")
    assert_error(taken_name, 409, "registration_refused")
    assert taken_email.json() == taken_name.json()


@pytest.mark.parametrize(
    "look_alike",
    ["\uff44\uff55\uff50@acme.io",  # fullwidth "dup"
     "DUP@\uff41\uff43\uff4d\uff45.io"],  # fullwidth "acme"
)
async def test_nfkc_look_alike_email_is_the_same_account(
    client: httpx.AsyncClient, look_alike: str
) -> None:
    """A fullwidth spelling shows like the real address: it must not become a second
    account, and it names the same account at login."""
    owner = await register(client, email="dup@acme.io")
    response = await client.post(
        REGISTER,
        json={"email": look_alike, "password": STRONG_PASSWORD, "tenant_name": "look-alike"},
    )
    assert_error(response, 409, "registration_refused")
    tokens = (await try_login(client, look_alike)).json()
    me = await client.get(ME, headers=bearer(tokens["access_token"]))
    assert me.json()["id"] == owner["user"]["id"]


# -- login -----------------------------------------------------------------------------------


async def test_oauth2_form_login_returns_bearer_tokens(client: httpx.AsyncClient) -> None:
    user = await register(client)
    response = await client.post(
        f"{API}/auth/token", data={"username": user["email"], "password": STRONG_PASSWORD}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["refresh_token"]
    assert await me_status(client, body["access_token"]) == 200


async def test_oauth2_form_login_with_wrong_password_is_401(client: httpx.AsyncClient) -> None:
    user = await register(client)
    response = await client.post(
        f"{API}/auth/token", data={"username": user["email"], "password": WRONG_PASSWORD}
    )
    assert_error(response, 401, "invalid_credentials")


async def test_unknown_user_and_wrong_password_are_indistinguishable(
    client: httpx.AsyncClient,
) -> None:
    user = await register(client)
    wrong = await try_login(client, user["email"], WRONG_PASSWORD)
    unknown = await try_login(client, "nobody-here@acme.io", WRONG_PASSWORD)
    assert_error(wrong, 401, "invalid_credentials")
    assert_error(unknown, 401, "invalid_credentials")
    assert wrong.json() == unknown.json()
    assert wrong.headers.get("www-authenticate") == unknown.headers.get("www-authenticate")


async def test_unknown_user_and_wrong_password_do_the_same_hashing_work(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No user enumeration by timing: each path runs one argon2 verification against a hash
    of the same cost parameters (the work that dominates a login). Speed itself is measured
    in bench/auth_overhead.py, not asserted here."""
    verified: list[argon2.Parameters] = []
    real_verify = argon2.PasswordHasher.verify

    def counting_verify(self: argon2.PasswordHasher, hash: str, password: str) -> bool:
        verified.append(argon2.extract_parameters(hash))
        return real_verify(self, hash, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", counting_verify)
    user = await register(client)
    assert_error(await try_login(client, user["email"], WRONG_PASSWORD), 401)
    wrong = list(verified)
    verified.clear()
    assert_error(await try_login(client, "ghost@acme.io", WRONG_PASSWORD), 401)
    unknown = list(verified)
    assert len(wrong) == len(unknown) == 1
    assert wrong == unknown


async def test_login_of_unknown_user_is_401(client: httpx.AsyncClient) -> None:
    assert_error(await try_login(client, "nobody@acme.io"), 401, "invalid_credentials")


# -- rate limiting ---------------------------------------------------------------------------


def _assert_rate_limited(response: httpx.Response) -> None:
    assert_error(response, 429, "rate_limited")
    retry_after = response.headers.get("retry-after")
    assert retry_after is not None and retry_after.isdigit(), retry_after
    assert int(retry_after) >= 1


async def test_account_rate_limit_blocks_fourth_attempt_even_with_right_password(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path / "data", auth={"login_attempts_per_account": 3})
    async with running(create_app(settings)) as client:
        user = await register(client)
        for _ in range(3):
            assert_error(await try_login(client, user["email"], WRONG_PASSWORD), 401)
        _assert_rate_limited(await try_login(client, user["email"], STRONG_PASSWORD))


async def test_account_rate_limit_treats_email_spellings_as_one_account(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", auth={"login_attempts_per_account": 3})
    async with running(create_app(settings)) as client:
        await register(client, email="carol@acme.io")
        for spelling in ("carol@acme.io", "CAROL@acme.io", " Carol@ACME.io "):
            assert_error(await try_login(client, spelling, WRONG_PASSWORD), 401)
        _assert_rate_limited(await try_login(client, "carol@acme.io"))


async def test_account_rate_limit_cannot_lock_the_owner_out_from_elsewhere(
    tmp_path: Path,
) -> None:
    """The per-account budget is per account and client address: an attacker who spends it
    is throttled, while the owner, from another address, still logs in."""
    settings = make_settings(tmp_path / "data", auth={"login_attempts_per_account": 3})
    async with app_and_client(settings) as (app, client):
        user = await register(client)
        async with client_from(app, "198.51.100.66") as attacker:
            for _ in range(3):
                assert_error(await try_login(attacker, user["email"], WRONG_PASSWORD), 401)
            _assert_rate_limited(await try_login(attacker, user["email"]))
        async with client_from(app, "198.51.100.7") as owner:
            assert (await try_login(owner, user["email"])).status_code == 200


async def test_ip_rate_limit_blocks_fourth_attempt_across_emails(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", auth={"login_attempts_per_ip": 3})
    async with app_and_client(settings) as (app, client):
        user = await register(client)  # counts against "register:<ip>", not login
        for i in range(3):
            assert_error(await try_login(client, f"spray{i}@acme.io", WRONG_PASSWORD), 401)
        _assert_rate_limited(await try_login(client, user["email"]))
        # The limit is per IP: the same account from elsewhere still logs in.
        async with client_from(app, "198.51.100.20") as other:
            assert (await try_login(other, user["email"])).status_code == 200


async def test_successful_login_resets_account_counter(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", auth={"login_attempts_per_account": 3})
    async with running(create_app(settings)) as client:
        user = await register(client)
        for _ in range(2):
            assert_error(await try_login(client, user["email"], WRONG_PASSWORD), 401)
        assert (await try_login(client, user["email"])).status_code == 200
        # Without the reset this would be attempts 4-6 and be throttled.
        for _ in range(3):
            assert_error(await try_login(client, user["email"], WRONG_PASSWORD), 401)
        _assert_rate_limited(await try_login(client, user["email"], WRONG_PASSWORD))


# -- refresh rotation ------------------------------------------------------------------------


async def test_refresh_returns_new_pair_and_old_access_token_stays_valid(
    client: httpx.AsyncClient,
) -> None:
    first = await register(client)
    response = await refresh(client, first["refresh_token"])
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["token_type"] == "bearer"
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert await me_status(client, second["access_token"]) == 200
    assert await me_status(client, first["access_token"]) == 200
    third = await refresh(client, second["refresh_token"])
    assert third.status_code == 200, third.text


async def test_rotated_refresh_token_is_spent(client: httpx.AsyncClient) -> None:
    first = await register(client)
    assert (await refresh(client, first["refresh_token"])).status_code == 200
    assert_error(await refresh(client, first["refresh_token"]), 401, "refresh_token_reused")


async def test_refresh_token_reuse_revokes_whole_family_but_not_other_sessions(
    client: httpx.AsyncClient,
) -> None:
    first = await register(client)
    other = await login(client, first["email"])
    second = (await refresh(client, first["refresh_token"])).json()
    third_response = await refresh(client, second["refresh_token"])
    assert third_response.status_code == 200, third_response.text
    newest = third_response.json()
    assert await me_status(client, newest["access_token"]) == 200

    assert_error(await refresh(client, first["refresh_token"]), 401, "refresh_token_reused")

    assert_error(await client.get(ME, headers=bearer(newest["access_token"])), 401)
    assert_error(await refresh(client, newest["refresh_token"]), 401)
    assert await me_status(client, second["access_token"]) == 401
    assert await me_status(client, first["access_token"]) == 401
    # The same user's separate login is another family and is untouched.
    assert await me_status(client, other["access_token"]) == 200
    assert (await refresh(client, other["refresh_token"])).status_code == 200


@pytest.mark.parametrize("concurrency", [2, 10])
async def test_concurrent_refresh_with_same_token_succeeds_exactly_once(
    client: httpx.AsyncClient, concurrency: int
) -> None:
    user = await register(client)
    responses = await asyncio.gather(
        *(refresh(client, user["refresh_token"]) for _ in range(concurrency))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [401] * (concurrency - 1), statuses
    for response in responses:
        if response.status_code == 401:
            assert_error(response, 401)
            assert response.json()["error"]["code"] in {"refresh_token_reused", "token_revoked"}


# -- logout ----------------------------------------------------------------------------------


async def test_logout_revokes_that_sessions_access_and_refresh_tokens(
    client: httpx.AsyncClient,
) -> None:
    user = await register(client)
    other = await login(client, user["email"])
    response = await client.post(f"{API}/auth/logout", headers=bearer(user["access_token"]))
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert_error(await client.get(ME, headers=bearer(user["access_token"])), 401)
    assert_error(await refresh(client, user["refresh_token"]), 401)
    assert await me_status(client, other["access_token"]) == 200


async def test_logout_all_revokes_every_session_of_the_user(client: httpx.AsyncClient) -> None:
    admin = await register(client)
    member = await add_member(client, admin["access_token"])
    sessions = [await login(client, member["email"]) for _ in range(3)]
    response = await client.post(
        f"{API}/auth/logout-all", headers=bearer(sessions[0]["access_token"])
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"sessions_revoked": 3}
    for session in sessions:
        assert_error(await client.get(ME, headers=bearer(session["access_token"])), 401)
        assert_error(await refresh(client, session["refresh_token"]), 401)
    # Other users are unaffected.
    assert await me_status(client, admin["access_token"]) == 200


async def test_logout_all_leaves_api_keys_working(client: httpx.AsyncClient) -> None:
    user = await register(client)
    key = await create_key(client, user["access_token"])
    response = await client.post(f"{API}/auth/logout-all", headers=bearer(user["access_token"]))
    assert response.status_code == 200
    assert await me_status(client, user["access_token"]) == 401
    assert await key_status(client, key["key"]) == 200


# -- tenant administration -------------------------------------------------------------------


async def test_deactivated_member_loses_access_refresh_api_keys_and_login(
    client: httpx.AsyncClient,
) -> None:
    admin = await register(client)
    member = await add_member(client, admin["access_token"])
    session = await login(client, member["email"])
    key = await create_key(client, session["access_token"])
    assert await me_status(client, session["access_token"]) == 200
    assert await key_status(client, key["key"]) == 200

    response = await patch_user(client, admin["access_token"], member["id"], is_active=False)
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False

    assert_error(await client.get(ME, headers=bearer(session["access_token"])), 401)
    assert_error(await refresh(client, session["refresh_token"]), 401)
    assert_error(await client.get(ME, headers={"X-API-Key": key["key"]}), 401)
    assert_error(await try_login(client, member["email"]), 403, "account_disabled")


async def test_reactivated_member_can_log_in_again(client: httpx.AsyncClient) -> None:
    admin = await register(client)
    member = await add_member(client, admin["access_token"])
    session = await login(client, member["email"])
    key = await create_key(client, session["access_token"])
    await patch_user(client, admin["access_token"], member["id"], is_active=False)
    assert_error(await try_login(client, member["email"]), 403, "account_disabled")

    response = await patch_user(client, admin["access_token"], member["id"], is_active=True)
    assert response.status_code == 200 and response.json()["is_active"] is True
    fresh = await login(client, member["email"])
    assert await me_status(client, fresh["access_token"]) == 200
    # What deactivation revoked stays revoked.
    assert await me_status(client, session["access_token"]) == 401
    assert await key_status(client, key["key"]) == 401


async def test_role_change_ends_sessions_and_new_login_has_new_role(
    client: httpx.AsyncClient,
) -> None:
    admin = await register(client)
    member = await add_member(client, admin["access_token"])
    session = await login(client, member["email"])
    assert_error(await client.get(TENANT_USERS, headers=bearer(session["access_token"])), 403)

    response = await patch_user(client, admin["access_token"], member["id"], role="admin")
    assert response.status_code == 200 and response.json()["role"] == "admin"

    assert_error(await client.get(ME, headers=bearer(session["access_token"])), 401)
    assert_error(await refresh(client, session["refresh_token"]), 401)
    fresh = await login(client, member["email"])
    me = await client.get(ME, headers=bearer(fresh["access_token"]))
    assert me.status_code == 200 and me.json()["role"] == "admin"
    users = await client.get(TENANT_USERS, headers=bearer(fresh["access_token"]))
    assert users.status_code == 200


async def test_last_admin_cannot_demote_deactivate_or_delete_self(
    client: httpx.AsyncClient,
) -> None:
    admin = await register(client)
    await add_member(client, admin["access_token"])  # a member is not another admin
    token, user_id = admin["access_token"], admin["user"]["id"]
    assert_error(await patch_user(client, token, user_id, role="member"), 409, "last_admin")
    assert_error(await patch_user(client, token, user_id, is_active=False), 409, "last_admin")
    deleted = await client.delete(f"{TENANT_USERS}/{user_id}", headers=bearer(token))
    assert_error(deleted, 409, "last_admin")
    me = await client.get(ME, headers=bearer(token))
    assert me.status_code == 200
    assert me.json()["role"] == "admin" and me.json()["is_active"] is True


async def test_admin_can_step_down_when_another_admin_exists(client: httpx.AsyncClient) -> None:
    admin = await register(client)
    await add_member(client, admin["access_token"], role="admin")
    response = await patch_user(client, admin["access_token"], admin["user"]["id"], role="member")
    assert response.status_code == 200 and response.json()["role"] == "member"


async def test_tenant_admin_cannot_touch_users_of_another_tenant(
    client: httpx.AsyncClient,
) -> None:
    attacker = await register(client)
    victim_admin = await register(client)
    victim = await add_member(client, victim_admin["access_token"])
    session = await login(client, victim["email"])
    response = await patch_user(client, attacker["access_token"], victim["id"], is_active=False)
    assert_error(response, 404, "not_found")
    deleted = await client.delete(
        f"{TENANT_USERS}/{victim['id']}", headers=bearer(attacker["access_token"])
    )
    assert_error(deleted, 404, "not_found")
    assert await me_status(client, session["access_token"]) == 200


# -- platform administration -----------------------------------------------------------------


@pytest.fixture
async def platform_admin(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
    email = unique_email("root")
    await app.state.services.accounts.create_superuser(
        email=email, password=STRONG_PASSWORD, tenant_name="platform-ops"
    )
    tokens: dict[str, Any] = await login(client, email)
    me = await client.get(ME, headers=bearer(tokens["access_token"]))
    assert me.status_code == 200 and me.json()["is_superuser"] is True
    tokens["tenant_id"] = me.json()["tenant"]["id"]
    return tokens


async def test_suspended_tenant_is_locked_out_until_reactivated(
    client: httpx.AsyncClient, platform_admin: dict[str, Any]
) -> None:
    victim = await register(client)
    victim_key = await create_key(client, victim["access_token"])
    bystander = await register(client)
    root = bearer(platform_admin["access_token"])

    response = await client.patch(
        f"{ADMIN_TENANTS}/{victim['tenant']['id']}", headers=root, json={"status": "suspended"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "suspended"

    assert_error(await client.get(ME, headers=bearer(victim["access_token"])), 401)
    assert_error(await client.get(ME, headers={"X-API-Key": victim_key["key"]}), 401)
    assert_error(await client.get(ME, headers=bearer(victim_key["key"])), 401)
    assert_error(await try_login(client, victim["email"]), 403, "account_disabled")
    assert await me_status(client, bystander["access_token"]) == 200

    response = await client.patch(
        f"{ADMIN_TENANTS}/{victim['tenant']['id']}", headers=root, json={"status": "active"}
    )
    assert response.status_code == 200 and response.json()["status"] == "active"
    assert await me_status(client, victim["access_token"]) == 200
    assert await key_status(client, victim_key["key"]) == 200
    assert (await try_login(client, victim["email"])).status_code == 200


async def test_admin_tenants_requires_platform_admin(
    client: httpx.AsyncClient, platform_admin: dict[str, Any]
) -> None:
    tenant_admin = await register(client)
    assert_error(
        await client.get(ADMIN_TENANTS, headers=bearer(tenant_admin["access_token"])),
        403,
        "forbidden",
    )
    assert_error(await client.get(ADMIN_TENANTS), 401)
    listed = await client.get(ADMIN_TENANTS, headers=bearer(platform_admin["access_token"]))
    assert listed.status_code == 200
    assert tenant_admin["tenant"]["id"] in {t["id"] for t in listed.json()}


async def test_platform_admin_cannot_suspend_own_tenant(
    client: httpx.AsyncClient, platform_admin: dict[str, Any]
) -> None:
    response = await client.patch(
        f"{ADMIN_TENANTS}/{platform_admin['tenant_id']}",
        headers=bearer(platform_admin["access_token"]),
        json={"status": "suspended"},
    )
    assert_error(response, 409, "own_tenant")
    assert await me_status(client, platform_admin["access_token"]) == 200


# -- API keys --------------------------------------------------------------------------------


async def test_api_key_is_shown_once_and_listed_by_prefix_only(client: httpx.AsyncClient) -> None:
    user = await register(client)
    created = await create_key(client, user["access_token"])
    assert created["key"].startswith("ragd_")
    assert created["key"].startswith(created["prefix"])
    assert created["revoked"] is False and created["expires_at"] is None
    listed = await client.get(KEYS, headers=bearer(user["access_token"]))
    assert listed.status_code == 200
    [entry] = listed.json()
    assert entry["id"] == created["id"] and entry["prefix"] == created["prefix"]
    assert "key" not in entry
    assert created["key"] not in listed.text
    secret = created["key"].rsplit("_", 1)[1]
    assert secret not in listed.text


async def test_api_key_authenticates_via_bearer_and_x_api_key(client: httpx.AsyncClient) -> None:
    user = await register(client)
    key = (await create_key(client, user["access_token"]))["key"]
    for headers in (bearer(key), {"X-API-Key": key}):
        response = await client.get(ME, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["auth_method"] == "api_key"
        assert response.json()["id"] == user["user"]["id"]


@pytest.mark.parametrize("where", ["secret", "key_id"])
async def test_api_key_with_one_character_changed_is_rejected(
    client: httpx.AsyncClient, where: str
) -> None:
    user = await register(client)
    key = (await create_key(client, user["access_token"]))["key"]
    index = len(key) - 1 if where == "secret" else len("ragd_")
    replacement = "a" if key[index] != "a" else "b"
    altered = key[:index] + replacement + key[index + 1 :]
    assert altered != key and len(altered) == len(key)
    assert_error(await client.get(ME, headers=bearer(altered)), 401, "not_authenticated")
    assert await key_status(client, key) == 200


async def test_deleted_api_key_is_rejected_on_next_request(client: httpx.AsyncClient) -> None:
    user = await register(client)
    created = await create_key(client, user["access_token"])
    assert await key_status(client, created["key"]) == 200  # now in the server's cache
    response = await client.delete(f"{KEYS}/{created['id']}", headers=bearer(user["access_token"]))
    assert response.status_code == 204
    assert_error(await client.get(ME, headers={"X-API-Key": created["key"]}), 401)
    listed = await client.get(KEYS, headers=bearer(user["access_token"]))
    assert listed.json() == []


async def test_api_key_expiry_in_the_past_is_422(client: httpx.AsyncClient) -> None:
    user = await register(client)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    response = await client.post(
        KEYS, headers=bearer(user["access_token"]), json={"name": "old", "expires_at": past}
    )
    assert_error(response, 422, "invalid_expiry")


async def test_api_key_naive_expiry_is_422(client: httpx.AsyncClient) -> None:
    user = await register(client)
    naive = (datetime.now(UTC) + timedelta(days=1)).replace(tzinfo=None).isoformat()
    assert "+" not in naive and not naive.endswith("Z")
    response = await client.post(
        KEYS, headers=bearer(user["access_token"]), json={"name": "naive", "expires_at": naive}
    )
    assert_error(response, 422, "validation_error")


async def test_api_key_stops_working_when_it_expires(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register(client)
    expires = datetime.now(UTC) + timedelta(hours=1)
    created = await create_key(client, user["access_token"], expires_at=expires.isoformat())
    assert await key_status(client, created["key"]) == 200
    # The service's clock moves past the expiry (no waiting for real time to pass).
    monkeypatch.setattr("ragd.auth.service.utcnow", lambda: expires + timedelta(seconds=1))
    response = await client.get(ME, headers={"X-API-Key": created["key"]})
    assert_error(response, 401, "token_expired")


async def test_logout_with_api_key_is_422_no_session(client: httpx.AsyncClient) -> None:
    user = await register(client)
    key = (await create_key(client, user["access_token"]))["key"]
    assert_error(await client.post(f"{API}/auth/logout", headers=bearer(key)), 422, "no_session")
    assert await key_status(client, key) == 200


# -- several processes on one data dir -------------------------------------------------------


def _slow_sync(data_dir: Path) -> Settings:
    # A long periodic sync: only the marker-file signal can make the change visible at once.
    return make_settings(data_dir, auth={"revocation_sync_seconds": 300})


async def test_logout_through_one_app_is_seen_by_another_on_next_request(
    tmp_path: Path,
) -> None:
    settings = _slow_sync(tmp_path / "data")
    async with running(create_app(settings)) as a, running(create_app(settings)) as b:
        user = await register(a)
        assert await me_status(a, user["access_token"]) == 200
        assert await me_status(b, user["access_token"]) == 200
        response = await b.post(f"{API}/auth/logout", headers=bearer(user["access_token"]))
        assert response.status_code == 204
        assert_error(await a.get(ME, headers=bearer(user["access_token"])), 401)


async def test_api_key_deleted_through_one_app_is_refused_by_another(tmp_path: Path) -> None:
    settings = _slow_sync(tmp_path / "data")
    async with running(create_app(settings)) as a, running(create_app(settings)) as b:
        user = await register(a)
        created = await create_key(a, user["access_token"])
        assert await key_status(a, created["key"]) == 200  # cached by A
        response = await b.delete(f"{KEYS}/{created['id']}", headers=bearer(user["access_token"]))
        assert response.status_code == 204
        assert_error(await a.get(ME, headers={"X-API-Key": created["key"]}), 401)


# -- password rehash -------------------------------------------------------------------------


def _stored_hash(settings: Settings, email: str) -> str:
    with sqlite3.connect(settings.data_dir / "ragd.db") as conn:
        row = conn.execute("SELECT password_hash FROM users WHERE email = ?", (email,)).fetchone()
    assert row is not None
    value: str = row[0]
    return value


async def test_login_rehashes_password_when_argon2_parameters_change(tmp_path: Path) -> None:
    data = tmp_path / "data"
    before = make_settings(data, auth={"argon2_time_cost": 2})
    async with running(create_app(before)) as client:
        user = await register(client)
        await login(client, user["email"])
    assert ",t=2," in _stored_hash(before, user["email"])

    after = make_settings(data, auth={"argon2_time_cost": 3})
    async with running(create_app(after)) as client:
        await login(client, user["email"])
        assert ",t=3," in _stored_hash(after, user["email"])
        # The rehashed password still logs in.
        await login(client, user["email"])
