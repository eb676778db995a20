"""Over real HTTP: an unexpected error is a 500 with the stable body and the request id, it
leaks nothing, and the keep-alive connection stays usable; every response carries the
security headers."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from ragd.settings import Settings
from tests.conftest import STRONG_PASSWORD, make_settings
from tests.generation.serving import serving

SECRET_DETAIL = "db-password=hunter2-in-an-exception"
SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
}


def _failing_routes(app: FastAPI) -> None:
    async def boom() -> dict[str, str]:
        raise RuntimeError(SECRET_DETAIL)

    async def boom_value() -> dict[str, str]:
        raise ValueError(SECRET_DETAIL)

    app.add_api_route("/boom", boom, methods=["GET"])
    app.add_api_route("/boom-value", boom_value, methods=["POST"])


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings: Settings = make_settings(tmp_path_factory.mktemp("errors") / "data")
    with serving(settings, prepare=_failing_routes) as url:
        yield url


def _connection(base: str) -> http.client.HTTPConnection:
    parts = urlsplit(base)
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)


def test_500_has_the_error_body_the_request_id_and_keeps_the_connection(base: str) -> None:
    conn = _connection(base)
    try:
        for path, method in (("/boom", "GET"), ("/boom-value", "POST"), ("/boom", "GET")):
            conn.request(method, path, headers={"X-Request-ID": "req-500-check"})
            socket_before = conn.sock
            response = conn.getresponse()
            body = response.read()
            assert response.status == 500
            assert json.loads(body) == {
                "error": {"code": "internal_error", "message": "internal server error"}
            }
            assert response.getheader("x-request-id") == "req-500-check"
            assert response.getheader("content-type") == "application/json"
            assert SECRET_DETAIL.encode() not in body and b"Traceback" not in body
            for name, value in SECURITY.items():
                assert response.getheader(name) == value
            assert (response.getheader("connection") or "").lower() != "close"
            # The next request goes over the very same connection and succeeds.
            conn.request("GET", "/health/live")
            assert conn.sock is socket_before
            after = conn.getresponse()
            assert after.status == 200 and json.loads(after.read()) == {"status": "ok"}
    finally:
        conn.close()


def test_a_500_without_a_request_id_gets_a_generated_one(base: str) -> None:
    response = httpx.get(f"{base}/boom")
    assert response.status_code == 500
    assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/health/live", 200),
        ("GET", "/api/v1/auth/me", 401),
        ("GET", "/nowhere", 404),
        ("PUT", "/api/v1/auth/login", 405),
        ("POST", "/api/v1/auth/login", 422),
        ("GET", "/boom", 500),
    ],
)
def test_every_response_carries_the_security_headers(
    base: str, method: str, path: str, status: int
) -> None:
    response = httpx.request(method, f"{base}{path}")
    assert response.status_code == status
    for name, value in SECURITY.items():
        assert response.headers.get(name) == value, name
    assert response.headers.get("cache-control") == "no-store"
    assert "strict-transport-security" not in response.headers  # plain HTTP


def test_hsts_only_behind_tls(base: str) -> None:
    # uvicorn trusts X-Forwarded-Proto from 127.0.0.1 (its default forwarded-allow-ips).
    response = httpx.get(f"{base}/health/live", headers={"X-Forwarded-Proto": "https"})
    assert response.headers["strict-transport-security"].startswith("max-age=")


def test_token_responses_are_never_cached(base: str, tmp_path: Path) -> None:
    registered = httpx.post(f"{base}/api/v1/auth/register", json={
        "email": "cache@acme.io", "password": STRONG_PASSWORD, "tenant_name": "cache"})
    assert registered.status_code == 201
    login = httpx.post(f"{base}/api/v1/auth/login",
                       json={"email": "cache@acme.io", "password": STRONG_PASSWORD})
    refresh = httpx.post(f"{base}/api/v1/auth/refresh",
                         json={"refresh_token": login.json()["refresh_token"]})
    for response in (registered, login, refresh):
        assert response.status_code in (200, 201)
        assert response.headers["cache-control"] == "no-store"
