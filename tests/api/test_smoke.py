from __future__ import annotations

import httpx

from tests.conftest import bearer, register


async def test_register_then_me(client: httpx.AsyncClient) -> None:
    body = await register(client)
    response = await client.get("/api/v1/auth/me", headers=bearer(body["access_token"]))
    assert response.status_code == 200
    me = response.json()
    assert me["email"] == body["email"]
    assert me["role"] == "admin"
    assert me["tenant"]["id"] == body["tenant"]["id"]
