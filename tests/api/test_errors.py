"""The error model and hostile input: every failure is a stable error body, never a 500."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ragd.db import migrate
from ragd.settings import Settings
from tests.conftest import (
    STRONG_PASSWORD,
    TEST_SECRET,
    assert_error,
    bearer,
    login,
    register,
    unique_email,
)

LOGIN = "/api/v1/auth/login"
REGISTER = "/api/v1/auth/register"
USERS = "/api/v1/tenant/users"
API_KEYS = "/api/v1/auth/api-keys"
TENANTS = "/api/v1/admin/tenants"
SECRET_PASSWORD = "hunter2-SECRET-VALUE"
ONE_MIB = 1024 * 1024
HEX32 = re.compile(r"^[0-9a-f]{32}$")


def assert_not_server_error(response: httpx.Response) -> None:
    """No request in this file may crash the server. The readiness probe's 503 is the only
    5xx allowed, and only as the stable ``not_ready`` error."""
    if response.request.url.path == "/health/ready" and response.status_code == 503:
        return
    assert response.status_code < 500, (response.request.method, response.request.url,
                                        response.status_code)


@pytest.fixture
async def api(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The shared client, with every response checked by :func:`assert_not_server_error`."""

    async def check(response: httpx.Response) -> None:
        assert_not_server_error(response)

    client.event_hooks["response"].append(check)
    return client


@pytest.fixture
async def admin(api: httpx.AsyncClient) -> dict[str, Any]:
    """A registered tenant admin (body of the register response)."""
    return await register(api)


@pytest.fixture
async def superuser(app: FastAPI, api: httpx.AsyncClient) -> dict[str, str]:
    email = unique_email("root")
    await app.state.services.accounts.create_superuser(
        email=email, password=STRONG_PASSWORD, tenant_name="platform"
    )
    return bearer((await login(api, email))["access_token"])


def assert_validation_error(response: httpx.Response, code: str = "validation_error") -> list[
    dict[str, Any]
]:
    """A 422 with the error body; for ``validation_error`` also well-formed ``details``."""
    assert_error(response, 422, code)
    error = response.json()["error"]
    if code != "validation_error":
        return []
    details = error["details"]
    assert isinstance(details, list) and details
    for item in details:
        assert set(item) == {"loc", "msg", "type"}, item
        assert isinstance(item["loc"], list)
        assert isinstance(item["msg"], str) and item["msg"]
        assert isinstance(item["type"], str) and item["type"]
    return list(details)


def locs(details: list[dict[str, Any]]) -> list[list[Any]]:
    return [item["loc"] for item in details]


# -- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/nope", "/api/v1/nope", "/api/v2/auth/login", "/api/v1/auth/me/extra", "/health"]
)
async def test_unknown_route_is_404_error_body(api: httpx.AsyncClient, path: str) -> None:
    assert_error(await api.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", LOGIN),
        ("GET", LOGIN),
        ("DELETE", "/health/live"),
        ("POST", "/health/ready"),
        ("GET", "/api/v1/auth/logout"),
        ("POST", USERS + "/some-id"),
    ],
)
async def test_wrong_method_is_405_error_body(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await api.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    assert "allow" in response.headers


# -- malformed and invalid bodies ------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b'{"email": "a@b.io", "password": "' + SECRET_PASSWORD.encode() + b'"',  # truncated
        b'{"email": "a@b.io", "password": "' + SECRET_PASSWORD.encode() + b'",}',  # trailing ,
        b"{'email': 'a@b.io', 'password': '" + SECRET_PASSWORD.encode() + b"'}",  # quotes
        b"not json " + SECRET_PASSWORD.encode(),
        b"\xff\xfe" + SECRET_PASSWORD.encode(),  # not UTF-8
    ],
    ids=["truncated", "trailing-comma", "single-quotes", "garbage", "bad-utf8"],
)
async def test_malformed_json_is_422_without_echo(api: httpx.AsyncClient, content: bytes) -> None:
    response = await api.post(LOGIN, content=content,
                              headers={"content-type": "application/json"})
    assert_validation_error(response)
    assert SECRET_PASSWORD not in response.text
    assert "hunter2" not in response.text


@pytest.mark.parametrize(
    "body",
    [
        {"email": 12345, "password": SECRET_PASSWORD},
        {"email": ["a@b.io"], "password": SECRET_PASSWORD},
        {"password": SECRET_PASSWORD},
        {"email": "a@b.io", "password": SECRET_PASSWORD, "remember_me": True},
        {"email": "a@b.io", "password": SECRET_PASSWORD * 20},  # 400 chars > 256
        {"email": "a@b.io", "password": {"value": SECRET_PASSWORD}},
        {"email": "a@b.io", "password": [SECRET_PASSWORD]},
        {"email": "a@b.io", "password": SECRET_PASSWORD, "nested": {"password": SECRET_PASSWORD}},
    ],
    ids=["email-int", "email-list", "no-email", "extra-field", "too-long", "password-object",
         "password-list", "nested-extra"],
)
async def test_invalid_login_body_never_echoes_password(
    api: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await api.post(LOGIN, json=body)
    assert_validation_error(response)
    assert SECRET_PASSWORD not in response.text
    assert "hunter2" not in response.text


@pytest.mark.parametrize(
    ("body", "expected_loc"),
    [
        ({"email": 42, "password": STRONG_PASSWORD, "tenant_name": "t"}, ["body", "email"]),
        ({"email": "a@b.io", "password": ["x"], "tenant_name": "t"}, ["body", "password"]),
        ({"email": "a@b.io", "password": 1234567890, "tenant_name": "t"}, ["body", "password"]),
        ({"email": "a@b.io", "password": STRONG_PASSWORD, "tenant_name": None},
         ["body", "tenant_name"]),
        ({"email": "a@b.io", "password": STRONG_PASSWORD, "tenant_name": True},
         ["body", "tenant_name"]),
        ({"email": None, "password": STRONG_PASSWORD, "tenant_name": "t"}, ["body", "email"]),
    ],
    ids=["email-int", "password-list", "password-int", "tenant-null", "tenant-bool",
         "email-null"],
)
async def test_wrong_types_are_422(
    api: httpx.AsyncClient, body: dict[str, Any], expected_loc: list[str]
) -> None:
    details = assert_validation_error(await api.post(REGISTER, json=body))
    assert expected_loc in locs(details)


@pytest.mark.parametrize("body", [[], "a string", 42, None, [{"email": "a@b.io"}]],
                         ids=["list", "string", "number", "null", "list-of-objects"])
async def test_non_object_json_is_422(api: httpx.AsyncClient, body: Any) -> None:
    assert_validation_error(await api.post(LOGIN, json=body))


async def test_missing_fields_are_listed(api: httpx.AsyncClient) -> None:
    details = assert_validation_error(await api.post(REGISTER, json={}))
    assert {tuple(loc) for loc in locs(details)} >= {
        ("body", "email"), ("body", "password"), ("body", "tenant_name")
    }
    assert {item["type"] for item in details} == {"missing"}


async def test_missing_body_is_422(api: httpx.AsyncClient) -> None:
    assert_validation_error(await api.post(LOGIN))
    assert_validation_error(await api.post(LOGIN, content=b"",
                                           headers={"content-type": "application/json"}))


@pytest.mark.parametrize(
    "body",
    [
        {"tenant_id": "00000000-0000-0000-0000-000000000000"},
        {"role": "member", "tenant_id": "00000000-0000-0000-0000-000000000000"},
        {"is_active": True, "is_superuser": True},
        {"role": "member", "email": "new@b.io"},
        {"role": "member", "password": SECRET_PASSWORD},
    ],
    ids=["only-tenant", "role-and-tenant", "superuser", "email", "password"],
)
async def test_unknown_fields_in_patch_user_are_422(
    api: httpx.AsyncClient, admin: dict[str, Any], body: dict[str, Any]
) -> None:
    response = await api.patch(f"{USERS}/{admin['user']['id']}", json=body,
                               headers=bearer(admin["access_token"]))
    details = assert_validation_error(response)
    assert any(item["type"] == "extra_forbidden" for item in details)
    assert SECRET_PASSWORD not in response.text
    # Nothing changed.
    me = await api.get("/api/v1/auth/me", headers=bearer(admin["access_token"]))
    assert me.status_code == 200
    assert me.json()["tenant"]["id"] == admin["tenant"]["id"]
    assert me.json()["is_superuser"] is False


@pytest.mark.parametrize(
    "body",
    [
        {"is_superuser": True},
        {"role": "admin"},
        {"tenant_id": "00000000-0000-0000-0000-000000000000"},
        {"is_verified": True},
    ],
)
async def test_register_refuses_mass_assignment(api: httpx.AsyncClient, body: dict[str, Any]
                                                ) -> None:
    payload = {"email": unique_email(), "password": STRONG_PASSWORD, "tenant_name": "masstest"}
    payload.update(body)
    details = assert_validation_error(await api.post(REGISTER, json=payload))
    assert [item["type"] for item in details] == ["extra_forbidden"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "a" * 390 + "@b.io" + "x" * 5),  # 400 chars
        ("email", "a@"),  # too short
        ("password", "p" * 300),
        ("password", ""),
        ("tenant_name", "t" * 101),
        ("tenant_name", ""),
    ],
    ids=["email-400", "email-2", "password-300", "password-empty", "tenant-101", "tenant-empty"],
)
async def test_oversized_or_empty_register_fields_are_422(
    api: httpx.AsyncClient, field: str, value: str
) -> None:
    payload = {"email": unique_email(), "password": STRONG_PASSWORD, "tenant_name": "sizes"}
    payload[field] = value
    response = await api.post(REGISTER, json=payload)
    details = assert_validation_error(response)
    assert ["body", field] in locs(details)
    if field == "password" and value:
        assert value not in response.text


async def test_register_field_limits_are_inclusive(api: httpx.AsyncClient) -> None:
    """The limits themselves are accepted: 100-char tenant name (the 101-char one is not)."""
    response = await api.post(
        REGISTER,
        json={"email": unique_email(), "password": STRONG_PASSWORD, "tenant_name": "t" * 100},
    )
    assert response.status_code == 201, response.text


async def test_oversized_login_fields_are_422(api: httpx.AsyncClient) -> None:
    assert_validation_error(await api.post(LOGIN, json={"email": "e" * 400, "password": "x"}))
    response = await api.post(LOGIN, json={"email": "a@b.io", "password": "p" * 300})
    assert_validation_error(response)
    assert "p" * 300 not in response.text


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": "k" * 101}, ["body", "name"]),
        ({"name": ""}, ["body", "name"]),
        ({}, ["body", "name"]),
        ({"name": 5}, ["body", "name"]),
        ({"name": "ok", "expires_at": "not a date"}, ["body", "expires_at"]),
        ({"name": "ok", "expires_at": "2099-01-01T00:00:00"}, ["body", "expires_at"]),  # naive
        ({"name": "ok", "scopes": ["all"]}, ["body", "scopes"]),
    ],
    ids=["name-101", "name-empty", "no-name", "name-int", "bad-date", "naive-date", "extra"],
)
async def test_api_key_body_validation(
    api: httpx.AsyncClient, admin: dict[str, Any], body: dict[str, Any], loc: list[str]
) -> None:
    response = await api.post(API_KEYS, json=body, headers=bearer(admin["access_token"]))
    assert loc in locs(assert_validation_error(response))
    listing = await api.get(API_KEYS, headers=bearer(admin["access_token"]))
    assert listing.json() == []


async def test_api_key_name_limit_is_inclusive(
    api: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    response = await api.post(API_KEYS, json={"name": "k" * 100},
                              headers=bearer(admin["access_token"]))
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("text/plain", b'{"email": "a@b.io", "password": "x"}'),
        ("application/x-www-form-urlencoded", b"email=a%40b.io&password=x"),
        ("multipart/form-data; boundary=xyz",
         b'--xyz\r\nContent-Disposition: form-data; name="email"\r\n\r\na@b.io\r\n--xyz--\r\n'),
        ("application/xml", b"<login><email>a@b.io</email></login>"),
    ],
    ids=["text", "form", "multipart", "xml"],
)
async def test_non_json_content_type_is_422(
    api: httpx.AsyncClient, content_type: str, content: bytes
) -> None:
    response = await api.post(LOGIN, content=content, headers={"content-type": content_type})
    assert_validation_error(response)


# -- body size limit ------------------------------------------------------------------------


def _padded_login(size: int) -> bytes:
    """A valid login body of exactly ``size`` bytes (padded with JSON whitespace)."""
    head = b'{"email": "nobody@example.com", "password": "wrong-password"'
    body = head + b" " * (size - len(head) - 1) + b"}"
    assert len(body) == size
    return body


async def _stream(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start:start + chunk]
        await asyncio.sleep(0)


@pytest.mark.parametrize("path", [LOGIN, REGISTER, API_KEYS, USERS + "/x", "/nowhere"])
async def test_declared_oversized_body_is_413(api: httpx.AsyncClient, path: str) -> None:
    """Refused from Content-Length alone, before routing or authentication."""
    response = await api.post(path, content=_padded_login(ONE_MIB + 1),
                              headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large")
    assert HEX32.match(response.headers["x-request-id"])


@pytest.mark.parametrize("size", [ONE_MIB + 1, 3 * ONE_MIB])
async def test_streamed_oversized_body_is_413(api: httpx.AsyncClient, size: int) -> None:
    """A chunked body has no Content-Length; it is counted as it arrives."""
    request = api.build_request("POST", LOGIN, content=_stream(_padded_login(size)),
                                headers={"content-type": "application/json"})
    assert "content-length" not in request.headers
    assert request.headers.get("transfer-encoding") == "chunked"
    response = await api.send(request)
    assert_error(response, 413, "payload_too_large")


async def test_streamed_oversized_body_to_authenticated_route_is_413(
    api: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    big = b'{"name": "' + b"k" * (2 * ONE_MIB) + b'"}'
    response = await api.post(API_KEYS, content=_stream(big),
                              headers={"content-type": "application/json",
                                       **bearer(admin["access_token"])})
    assert_error(response, 413, "payload_too_large")
    assert (await api.get(API_KEYS, headers=bearer(admin["access_token"]))).json() == []


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_body_at_limit_is_accepted(api: httpx.AsyncClient, streamed: bool) -> None:
    """Exactly 1 MiB is within the limit: the request reaches the route (bad credentials)."""
    data = _padded_login(ONE_MIB)
    content: Any = _stream(data) if streamed else data
    response = await api.post(LOGIN, content=content,
                              headers={"content-type": "application/json"})
    assert_error(response, 401, "invalid_credentials")


async def test_invalid_content_length_is_400(api: httpx.AsyncClient) -> None:
    request = api.build_request("POST", LOGIN, content=b"{}",
                                headers={"content-type": "application/json"})
    request.headers["content-length"] = "lots"
    assert_error(await api.send(request), 400, "bad_request")


# -- query and path parameters ----------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 10000}, {"limit": 201}, {"limit": -1}, {"offset": -1},
     {"limit": "ten"}, {"offset": "1.5"}, {"offset": 10**12}],
)
async def test_invalid_list_query_is_422(
    api: httpx.AsyncClient, admin: dict[str, Any], params: dict[str, Any]
) -> None:
    response = await api.get(USERS, params=params, headers=bearer(admin["access_token"]))
    details = assert_validation_error(response)
    assert all(loc[0] == "query" for loc in locs(details))


async def test_list_query_limits_are_inclusive(
    api: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    for params in ({"limit": 1}, {"limit": 200}, {"offset": 0}, {"offset": 1_000_000}):
        response = await api.get(USERS, params=params, headers=bearer(admin["access_token"]))
        assert response.status_code == 200, (params, response.text)


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 10000}, {"offset": -1}])
async def test_invalid_tenant_list_query_is_422(
    api: httpx.AsyncClient, superuser: dict[str, str], params: dict[str, int]
) -> None:
    assert_validation_error(await api.get(TENANTS, params=params, headers=superuser))


async def test_empty_patch_user_is_422(api: httpx.AsyncClient, admin: dict[str, Any]) -> None:
    for body in ({}, {"role": None}, {"role": None, "is_active": None}):
        response = await api.patch(f"{USERS}/{admin['user']['id']}", json=body,
                                   headers=bearer(admin["access_token"]))
        assert_validation_error(response, "empty_patch")


async def test_empty_patch_tenant_is_422(
    api: httpx.AsyncClient, superuser: dict[str, str], admin: dict[str, Any]
) -> None:
    response = await api.patch(f"{TENANTS}/{admin['tenant']['id']}", json={}, headers=superuser)
    assert_validation_error(response, "empty_patch")


@pytest.mark.parametrize("body", [{"role": "owner"}, {"is_active": "maybe"}, {"role": 1}])
async def test_invalid_patch_values_are_422(
    api: httpx.AsyncClient, admin: dict[str, Any], body: dict[str, Any]
) -> None:
    response = await api.patch(f"{USERS}/{admin['user']['id']}", json=body,
                               headers=bearer(admin["access_token"]))
    assert_validation_error(response)


@pytest.mark.parametrize("length", [65, 200, 2000])
@pytest.mark.parametrize(
    ("method", "body"),
    [("PATCH", {"role": "member"}), ("DELETE", None)],
)
async def test_long_user_path_id_is_422(
    api: httpx.AsyncClient, admin: dict[str, Any], method: str, body: Any, length: int
) -> None:
    response = await api.request(method, f"{USERS}/{'u' * length}", json=body,
                                 headers=bearer(admin["access_token"]))
    details = assert_validation_error(response)
    assert ["path", "user_id"] in locs(details)
    assert "u" * 65 not in response.text


async def test_user_path_id_of_64_chars_is_not_found(
    api: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    response = await api.patch(f"{USERS}/{'u' * 64}", json={"role": "member"},
                               headers=bearer(admin["access_token"]))
    assert_error(response, 404, "not_found")


async def test_long_tenant_path_id_is_422(
    api: httpx.AsyncClient, superuser: dict[str, str]
) -> None:
    response = await api.patch(f"{TENANTS}/{'t' * 65}", json={"name": "x"}, headers=superuser)
    assert ["path", "tenant_id"] in locs(assert_validation_error(response))


async def test_long_api_key_path_id_is_a_clean_error(
    api: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    """``/auth/api-keys/{id}`` declares no length limit (unlike the other id routes), so a
    long id is simply not found; either way it is a clean 4xx error body."""
    response = await api.delete(f"{API_KEYS}/{'k' * 500}", headers=bearer(admin["access_token"]))
    assert response.status_code in (404, 422), response.text
    assert_error(response, response.status_code)


async def test_unauthenticated_validation_order(api: httpx.AsyncClient) -> None:
    """Authentication is checked before the body: no credentials means 401, not 422."""
    response = await api.patch(f"{USERS}/{'u' * 65}", json={"tenant_id": "x"})
    assert_error(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Bearer"


# -- request id -----------------------------------------------------------------------------


async def test_request_id_generated_when_absent(api: httpx.AsyncClient) -> None:
    first = await api.get("/health/live")
    second = await api.get("/health/live")
    assert HEX32.match(first.headers["x-request-id"])
    assert HEX32.match(second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize("incoming", ["abc-123", "req.42:edge_7", "A" * 128])
async def test_sane_request_id_is_echoed(api: httpx.AsyncClient, incoming: str) -> None:
    response = await api.get("/health/live", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] == incoming
    assert len(response.headers.get_list("x-request-id")) == 1


@pytest.mark.parametrize(
    "incoming",
    ["A" * 129, "x" * 200, "a b", "a\tb", "abc/123", "<script>", "id;drop", "ä-unicode", "",
     "a,b"],
    ids=["129", "200", "space", "tab", "slash", "html", "semicolon", "non-ascii", "empty",
         "comma"],
)
async def test_hostile_request_id_is_replaced(api: httpx.AsyncClient, incoming: str) -> None:
    response = await api.get("/health/live", headers={b"X-Request-ID": incoming.encode()})
    echoed = response.headers["x-request-id"]
    assert HEX32.match(echoed), echoed
    assert echoed != incoming


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nope", 404), ("PUT", LOGIN, 405), ("GET", "/api/v1/auth/me", 401),
     ("POST", LOGIN, 422)],
)
async def test_request_id_on_error_responses(
    api: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    response = await api.request(method, path, headers={"X-Request-ID": "trace-9"})
    assert_error(response, status)
    assert response.headers["x-request-id"] == "trace-9"


# -- health -----------------------------------------------------------------------------------


def _assert_no_secrets(response: httpx.Response, settings: Settings) -> None:
    everything = response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())
    assert TEST_SECRET not in everything
    assert str(settings.data_dir) not in everything
    assert str(settings.data_dir.resolve()) not in everything
    assert "ragd.db" not in everything


async def test_health_live(api: httpx.AsyncClient, settings: Settings) -> None:
    response = await api.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    _assert_no_secrets(response, settings)


async def test_health_ready(api: httpx.AsyncClient, settings: Settings) -> None:
    response = await api.get("/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "migrations": "ok", "startup": "ok"}
    _assert_no_secrets(response, settings)


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
async def test_health_needs_no_auth_and_ignores_bad_credentials(
    api: httpx.AsyncClient, path: str
) -> None:
    for headers in ({}, bearer("garbage"), {"X-API-Key": "ragd_nope"}):
        response = await api.get(path, headers=headers)
        assert response.status_code == 200, response.text


def _set_revision(db_path: Path, revision: str) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    conn.close()


async def test_ready_is_503_when_schema_revision_is_wrong(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    db_path = settings.data_dir / "ragd.db"
    assert db_path.is_file()
    await asyncio.to_thread(_set_revision, db_path, "0005")  # an older revision

    response = await api.get("/health/ready")
    assert_error(response, 503, "not_ready")
    details = response.json()["error"]["details"]
    assert {"check": "migrations", "status": "pending"} in details
    assert {"check": "database", "status": "ok"} in details
    _assert_no_secrets(response, settings)

    await asyncio.to_thread(_set_revision, db_path, "9999")  # one this build does not know
    response = await api.get("/health/ready")
    assert_error(response, 503, "not_ready")
    assert {"check": "migrations", "status": "ahead"} in response.json()["error"]["details"]

    live = await api.get("/health/live")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}

    # Restoring the revision makes the process ready again.
    await asyncio.to_thread(_set_revision, db_path, migrate.HEAD_REVISION)
    assert (await api.get("/health/ready")).status_code == 200


async def test_ready_is_503_when_schema_is_missing(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    def drop(db_path: Path) -> None:
        with sqlite3.connect(db_path) as conn:
            conn.execute("DROP TABLE alembic_version")
        conn.close()

    await asyncio.to_thread(drop, settings.data_dir / "ragd.db")
    response = await api.get("/health/ready")
    assert_error(response, 503, "not_ready")
    assert (await api.get("/health/live")).status_code == 200
