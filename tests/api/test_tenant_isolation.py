"""Cross-tenant isolation: one tenant's admin can neither see nor touch another tenant.

Two tenants, A and B, each with an admin (registered), a member (created by the admin) and an
API key for each of them. Every route that takes an id is called as A with B's ids; it must
answer 404 exactly as for an id that does not exist, and nothing may change on B's side.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import STRONG_PASSWORD, assert_error, bearer, login, register, unique_email

USERS = "/api/v1/tenant/users"
API_KEYS = "/api/v1/auth/api-keys"
ME = "/api/v1/auth/me"


@dataclass
class Account:
    id: str
    email: str
    access_token: str
    api_key: str
    api_key_id: str

    def token(self) -> dict[str, str]:
        return bearer(self.access_token)

    def key(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}

    def credential(self, kind: str) -> dict[str, str]:
        return self.token() if kind == "token" else self.key()


@dataclass
class Tenant:
    id: str
    name: str
    admin: Account
    member: Account


async def _create_key(client: httpx.AsyncClient, token: str, name: str) -> dict[str, Any]:
    response = await client.post(API_KEYS, json={"name": name}, headers=bearer(token))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["key"].startswith("ragd_")
    return body


async def _make_tenant(client: httpx.AsyncClient, label: str) -> Tenant:
    reg = await register(client, email=unique_email(f"{label}-admin"),
                         tenant=f"tenant-{label}-{uuid.uuid4().hex[:8]}")
    admin_token = reg["access_token"]
    admin_key = await _create_key(client, admin_token, f"{label}-admin-key")

    member_email = unique_email(f"{label}-member")
    created = await client.post(
        USERS,
        json={"email": member_email, "password": STRONG_PASSWORD, "role": "member"},
        headers=bearer(admin_token),
    )
    assert created.status_code == 201, created.text
    member = created.json()
    assert member["tenant_id"] == reg["tenant"]["id"]
    assert member["role"] == "member"
    member_token = (await login(client, member_email))["access_token"]
    member_key = await _create_key(client, member_token, f"{label}-member-key")

    return Tenant(
        id=reg["tenant"]["id"],
        name=reg["tenant"]["name"],
        admin=Account(reg["user"]["id"], reg["email"], admin_token, admin_key["key"],
                      admin_key["id"]),
        member=Account(member["id"], member_email, member_token, member_key["key"],
                       member_key["id"]),
    )


@dataclass
class World:
    a: Tenant
    b: Tenant


@pytest.fixture
async def world(client: httpx.AsyncClient) -> World:
    return World(a=await _make_tenant(client, "a"), b=await _make_tenant(client, "b"))


async def _snapshot(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, Any]:
    """Everything observable about a tenant through its own credentials."""
    users = await client.get(USERS, headers=tenant.admin.token(), params={"limit": 200})
    assert users.status_code == 200, users.text
    admin_keys = await client.get(API_KEYS, headers=tenant.admin.token())
    assert admin_keys.status_code == 200, admin_keys.text
    member_keys = await client.get(API_KEYS, headers=tenant.member.token())
    assert member_keys.status_code == 200, member_keys.text
    return {
        "users": users.json(),
        "admin_keys": admin_keys.json(),
        "member_keys": member_keys.json(),
    }


async def _assert_tenant_intact(
    client: httpx.AsyncClient, tenant: Tenant, before: dict[str, Any]
) -> None:
    """Nothing changed for ``tenant``: same users and keys, every credential still works."""
    after = await _snapshot(client, tenant)
    assert after == before

    users = {user["id"]: user for user in after["users"]}
    assert set(users) == {tenant.admin.id, tenant.member.id}
    assert users[tenant.member.id]["role"] == "member"
    assert users[tenant.member.id]["is_active"] is True
    assert users[tenant.admin.id]["role"] == "admin"
    assert users[tenant.admin.id]["is_active"] is True
    assert [key["id"] for key in after["admin_keys"]] == [tenant.admin.api_key_id]
    assert [key["id"] for key in after["member_keys"]] == [tenant.member.api_key_id]
    assert not any(key["revoked"] for key in after["admin_keys"] + after["member_keys"])

    # Existing sessions and keys still authenticate (a role change or deactivation would
    # have revoked them).
    for account in (tenant.admin, tenant.member):
        for kind in ("token", "key"):
            me = await client.get(ME, headers=account.credential(kind))
            assert me.status_code == 200, (kind, me.text)
            assert me.json()["id"] == account.id
            assert me.json()["tenant"]["id"] == tenant.id
    # And the member can still log in with their password.
    fresh = await login(client, tenant.member.email)
    me = await client.get(ME, headers=bearer(fresh["access_token"]))
    assert me.status_code == 200
    assert me.json()["role"] == "member"


# (method, path template, json body). Templates name an attribute of tenant B.
CROSS_TENANT_CALLS = [
    pytest.param("PATCH", USERS + "/{member_id}", {"role": "admin"}, id="promote-member"),
    pytest.param("PATCH", USERS + "/{member_id}", {"is_active": False}, id="deactivate-member"),
    pytest.param("PATCH", USERS + "/{member_id}", {"role": "member", "is_active": True},
                 id="noop-patch-member"),
    pytest.param("PATCH", USERS + "/{admin_id}", {"role": "member"}, id="demote-admin"),
    pytest.param("PATCH", USERS + "/{admin_id}", {"is_active": False}, id="deactivate-admin"),
    pytest.param("DELETE", USERS + "/{member_id}", None, id="delete-member"),
    pytest.param("DELETE", USERS + "/{admin_id}", None, id="delete-admin"),
    pytest.param("DELETE", API_KEYS + "/{member_key_id}", None, id="delete-member-key"),
    pytest.param("DELETE", API_KEYS + "/{admin_key_id}", None, id="delete-admin-key"),
]


def _ids(tenant: Tenant) -> dict[str, str]:
    return {
        "member_id": tenant.member.id,
        "admin_id": tenant.admin.id,
        "member_key_id": tenant.member.api_key_id,
        "admin_key_id": tenant.admin.api_key_id,
    }


@pytest.mark.parametrize("credential", ["token", "key"])
@pytest.mark.parametrize(("method", "template", "body"), CROSS_TENANT_CALLS)
async def test_admin_cannot_touch_other_tenant_by_id(
    client: httpx.AsyncClient,
    world: World,
    credential: str,
    method: str,
    template: str,
    body: dict[str, Any] | None,
) -> None:
    before_b = await _snapshot(client, world.b)
    before_a = await _snapshot(client, world.a)

    response = await client.request(
        method, template.format(**_ids(world.b)), json=body,
        headers=world.a.admin.credential(credential),
    )

    assert_error(response, 404, "not_found")
    await _assert_tenant_intact(client, world.b, before_b)
    # The attacker's own tenant is untouched too (B's ids are not resolved in A either).
    await _assert_tenant_intact(client, world.a, before_a)


@pytest.mark.parametrize(("method", "template", "body"), CROSS_TENANT_CALLS)
async def test_other_tenant_id_is_indistinguishable_from_missing_id(
    client: httpx.AsyncClient,
    world: World,
    method: str,
    template: str,
    body: dict[str, Any] | None,
) -> None:
    """A's admin learns nothing: B's real id and a made-up id get the same answer."""
    missing = {name: str(uuid.uuid4()) for name in _ids(world.b)}
    headers = world.a.admin.token()

    foreign = await client.request(method, template.format(**_ids(world.b)), json=body,
                                   headers=headers)
    absent = await client.request(method, template.format(**missing), json=body,
                                  headers=headers)

    assert_error(foreign, 404, "not_found")
    assert_error(absent, 404, "not_found")
    assert foreign.json() == absent.json()
    assert foreign.headers["content-type"] == absent.headers["content-type"]


async def test_patch_nonexistent_user_same_response_as_foreign_user(
    client: httpx.AsyncClient, world: World
) -> None:
    headers = world.a.admin.token()
    foreign = await client.patch(f"{USERS}/{world.b.member.id}", json={"role": "admin"},
                                 headers=headers)
    absent = await client.patch(f"{USERS}/{uuid.uuid4()}", json={"role": "admin"},
                                headers=headers)
    not_a_uuid = await client.patch(f"{USERS}/does-not-exist", json={"role": "admin"},
                                    headers=headers)
    for response in (foreign, absent, not_a_uuid):
        assert_error(response, 404, "not_found")
    assert foreign.json() == absent.json() == not_a_uuid.json()


@pytest.mark.parametrize("credential", ["token", "key"])
@pytest.mark.parametrize(
    "params",
    [{}, {"limit": 200}, {"limit": 1}, {"limit": 1, "offset": 1}, {"offset": 2},
     {"offset": 1_000_000}],
)
async def test_list_users_never_shows_other_tenant(
    client: httpx.AsyncClient, world: World, credential: str, params: dict[str, int]
) -> None:
    response = await client.get(USERS, params=params, headers=world.a.admin.credential(credential))
    assert response.status_code == 200, response.text
    users = response.json()
    assert {user["tenant_id"] for user in users} <= {world.a.id}
    ids = {user["id"] for user in users}
    assert ids <= {world.a.admin.id, world.a.member.id}
    assert not ids & {world.b.admin.id, world.b.member.id}
    emails = {user["email"] for user in users}
    assert not emails & {world.b.admin.email, world.b.member.email}


async def test_list_users_pages_cover_exactly_own_tenant(
    client: httpx.AsyncClient, world: World
) -> None:
    seen: list[str] = []
    for offset in range(5):
        page = await client.get(USERS, params={"limit": 1, "offset": offset},
                                headers=world.a.admin.token())
        assert page.status_code == 200, page.text
        seen += [user["id"] for user in page.json()]
    assert sorted(seen) == sorted([world.a.admin.id, world.a.member.id])


async def test_api_key_list_is_per_user(client: httpx.AsyncClient, world: World) -> None:
    for tenant, other in ((world.a, world.b), (world.b, world.a)):
        for account in (tenant.admin, tenant.member):
            response = await client.get(API_KEYS, headers=account.token())
            assert response.status_code == 200
            assert [key["id"] for key in response.json()] == [account.api_key_id]
            assert "key" not in response.json()[0]  # the secret is never listed
            assert other.admin.api_key_id not in response.text
            assert other.member.api_key_id not in response.text


async def test_admin_sees_only_own_tenant_in_me(client: httpx.AsyncClient, world: World) -> None:
    for tenant in (world.a, world.b):
        me = await client.get(ME, headers=tenant.admin.key())
        assert me.status_code == 200
        assert me.json()["tenant"]["id"] == tenant.id
        assert me.json()["auth_method"] == "api_key"


# Routes of /api/v1/tenant/users with a body acceptable to each, so only the role matters.
TENANT_ADMIN_CALLS = [
    pytest.param("GET", USERS, None, id="list"),
    pytest.param("POST", USERS, "create", id="create"),
    pytest.param("PATCH", USERS + "/{own_id}", {"is_active": True}, id="patch-self"),
    pytest.param("PATCH", USERS + "/{own_id}", {"role": "admin"}, id="promote-self"),
    pytest.param("PATCH", USERS + "/{admin_id}", {"role": "member"}, id="demote-admin"),
    pytest.param("DELETE", USERS + "/{admin_id}", None, id="delete-admin"),
    pytest.param("DELETE", USERS + "/{own_id}", None, id="delete-self"),
    pytest.param("PATCH", USERS + "/{other_member_id}", {"role": "admin"},
                 id="patch-other-tenant"),
]


@pytest.mark.parametrize("credential", ["token", "key"])
@pytest.mark.parametrize(("method", "template", "body"), TENANT_ADMIN_CALLS)
async def test_member_is_forbidden_on_tenant_admin_routes(
    client: httpx.AsyncClient,
    world: World,
    credential: str,
    method: str,
    template: str,
    body: Any,
) -> None:
    before_a = await _snapshot(client, world.a)
    before_b = await _snapshot(client, world.b)
    if body == "create":
        body = {"email": unique_email("sneaky"), "password": STRONG_PASSWORD, "role": "admin"}
    path = template.format(
        own_id=world.a.member.id, admin_id=world.a.admin.id, other_member_id=world.b.member.id
    )

    response = await client.request(method, path, json=body,
                                    headers=world.a.member.credential(credential))

    assert_error(response, 403, "forbidden")
    await _assert_tenant_intact(client, world.a, before_a)
    await _assert_tenant_intact(client, world.b, before_b)


@pytest.mark.parametrize("credential", ["token", "key"])
async def test_member_cannot_delete_own_admins_api_key(
    client: httpx.AsyncClient, world: World, credential: str
) -> None:
    """API keys belong to a user, not to the tenant: a colleague's key id is not found."""
    before = await _snapshot(client, world.a)

    response = await client.delete(f"{API_KEYS}/{world.a.admin.api_key_id}",
                                   headers=world.a.member.credential(credential))

    assert_error(response, 404, "not_found")
    await _assert_tenant_intact(client, world.a, before)


async def test_admin_cannot_delete_own_members_api_key(
    client: httpx.AsyncClient, world: World
) -> None:
    """Even the tenant admin manages only their own keys through /auth/api-keys."""
    before = await _snapshot(client, world.a)
    response = await client.delete(f"{API_KEYS}/{world.a.member.api_key_id}",
                                   headers=world.a.admin.token())
    assert_error(response, 404, "not_found")
    await _assert_tenant_intact(client, world.a, before)


async def test_own_operations_still_work_after_failed_attacks(
    client: httpx.AsyncClient, world: World
) -> None:
    """Sanity check that the 404s above come from isolation, not from broken routes."""
    attack = await client.patch(f"{USERS}/{world.b.member.id}", json={"role": "admin"},
                                headers=world.a.admin.token())
    assert_error(attack, 404, "not_found")
    attack = await client.delete(f"{API_KEYS}/{world.b.member.api_key_id}",
                                 headers=world.a.admin.token())
    assert_error(attack, 404, "not_found")

    # B's admin can do to B's member what A's admin could not.
    promoted = await client.patch(f"{USERS}/{world.b.member.id}", json={"role": "admin"},
                                  headers=world.b.admin.token())
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["role"] == "admin"
    assert promoted.json()["tenant_id"] == world.b.id

    # B's member deletes their own key; it stops working.
    deleted = await client.delete(f"{API_KEYS}/{world.b.member.api_key_id}",
                                  headers=world.b.member.key())
    assert deleted.status_code == 204, deleted.text
    assert_error(await client.get(ME, headers=world.b.member.key()), 401)

    removed = await client.delete(f"{USERS}/{world.b.member.id}", headers=world.b.admin.token())
    assert removed.status_code == 204, removed.text
    users = await client.get(USERS, headers=world.b.admin.token())
    assert [user["id"] for user in users.json()] == [world.b.admin.id]

    # Tenant A saw none of it.
    listing = await client.get(USERS, headers=world.a.admin.token())
    assert {user["id"] for user in listing.json()} == {world.a.admin.id, world.a.member.id}
