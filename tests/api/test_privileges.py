"""The privilege hierarchy: member < tenant admin < platform admin.

Nobody changes, deactivates or deletes a user of higher privilege, and the platform always
keeps an active platform administrator. Every (actor, target, action) is tried.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import STRONG_PASSWORD, assert_error, bearer, login, unique_email

USERS = "/api/v1/tenant/users"
TENANTS = "/api/v1/admin/tenants"
ME = "/api/v1/auth/me"
RANK = {"member": 0, "admin": 1, "platform": 2}
ACTIONS = ("demote", "promote", "deactivate", "delete")


async def _platform_admin(app: FastAPI, client: httpx.AsyncClient, tenant: str) -> dict[str, Any]:
    email = unique_email("root")
    user = await app.state.services.accounts.create_superuser(
        email=email, password=STRONG_PASSWORD, tenant_name=tenant
    )
    token = (await login(client, email))["access_token"]
    return {"id": user.id, "token": token, "email": email}


async def _user(client: httpx.AsyncClient, admin_token: str, role: str) -> dict[str, Any]:
    email = unique_email(role)
    response = await client.post(
        USERS, headers=bearer(admin_token),
        json={"email": email, "password": STRONG_PASSWORD, "role": role},
    )
    assert response.status_code == 201, response.text
    token = (await login(client, email))["access_token"]
    return {"id": response.json()["id"], "token": token, "email": email}


async def _act(client: httpx.AsyncClient, token: str, user_id: str, action: str) -> httpx.Response:
    url = f"{USERS}/{user_id}"
    if action == "delete":
        return await client.delete(url, headers=bearer(token))
    change = {"demote": {"role": "member"}, "promote": {"role": "admin"},
              "deactivate": {"is_active": False}}[action]
    return await client.patch(url, headers=bearer(token), json=change)


@pytest.fixture
async def team(app: FastAPI, client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """One tenant holding two of each kind of principal (so no last-admin rule interferes
    with the hierarchy being tested), all logged in."""
    first = await _platform_admin(app, client, "platform")
    second = await _platform_admin(app, client, "platform")
    people = {"platform": first, "platform2": second}
    for role in ("admin", "member"):
        people[role] = await _user(client, first["token"], role)
        people[f"{role}2"] = await _user(client, first["token"], role)
    return people


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("target", ["member", "admin", "platform"])
@pytest.mark.parametrize("actor", ["member", "admin", "platform"])
async def test_nobody_acts_on_a_higher_privilege(
    client: httpx.AsyncClient, team: dict[str, dict[str, Any]], actor: str, target: str,
    action: str,
) -> None:
    # The actor's twin acts on someone else, so nobody acts on themselves here.
    victim = team[f"{target}2"] if actor == target else team[target]
    before = (await client.get(USERS, headers=bearer(team["platform"]["token"]))).json()
    response = await _act(client, team[actor]["token"], victim["id"], action)
    if actor == "member":
        assert_error(response, 403)  # members manage nobody
    elif RANK[target] > RANK[actor]:
        assert_error(response, 403, "outranked")
    else:
        assert response.status_code in (200, 204), response.text
        return
    # A refused change changed nothing, and the victim's session still works.
    after = (await client.get(USERS, headers=bearer(team["platform"]["token"]))).json()
    assert after == before
    assert (await client.get(ME, headers=bearer(victim["token"]))).status_code == 200


async def test_the_last_active_platform_admin_cannot_be_removed(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    root = await _platform_admin(app, client, "platform")
    other = await _platform_admin(app, client, "platform")
    # Another tenant admin exists, so only the platform rule can refuse.
    await _user(client, root["token"], "admin")
    response = await _act(client, root["token"], other["id"], "deactivate")
    assert response.status_code == 200, response.text
    for action in ("deactivate", "delete"):
        assert_error(await _act(client, root["token"], root["id"], action), 409,
                     "last_platform_admin")
    me = await client.get(ME, headers=bearer(root["token"]))
    assert me.status_code == 200 and me.json()["is_active"] is True
    # Stepping down from the tenant role is fine: the platform privilege stays.
    assert (await _act(client, root["token"], root["id"], "demote")).status_code == 200


async def test_a_platform_admin_of_a_suspended_tenant_does_not_count(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    root = await _platform_admin(app, client, "platform")
    elsewhere = await _platform_admin(app, client, "elsewhere")
    await _user(client, root["token"], "admin")
    me = (await client.get(ME, headers=bearer(elsewhere["token"]))).json()
    suspended = await client.patch(f"{TENANTS}/{me['tenant']['id']}",
                                   headers=bearer(root["token"]), json={"status": "suspended"})
    assert suspended.status_code == 200, suspended.text
    assert_error(await _act(client, root["token"], root["id"], "deactivate"), 409,
                 "last_platform_admin")


async def test_two_platform_admins_can_each_remove_the_other_only_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    one = await _platform_admin(app, client, "platform")
    two = await _platform_admin(app, client, "platform")
    await _user(client, one["token"], "admin")
    assert (await _act(client, one["token"], two["id"], "delete")).status_code == 204
    assert_error(await _act(client, one["token"], one["id"], "delete"), 409,
                 "last_platform_admin")
