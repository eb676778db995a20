"""Optional refresh reuse grace: concurrent refreshes refuse the loser without a logout."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from ragd.app import create_app
from tests.conftest import assert_error, bearer, make_settings, register, running


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": token})


async def test_with_grace_the_winner_of_a_race_keeps_a_working_session(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, auth={"refresh_reuse_grace_seconds": 30})
    async with running(create_app(settings)) as client:
        user = await register(client)
        responses = await asyncio.gather(
            *(_refresh(client, user["refresh_token"]) for _ in range(5))
        )
        winners = [r for r in responses if r.status_code == 200]
        assert len(winners) == 1
        for loser in (r for r in responses if r.status_code != 200):
            assert_error(loser, 401, "token_revoked")
        fresh = winners[0].json()
        me = await client.get("/api/v1/auth/me", headers=bearer(fresh["access_token"]))
        assert me.status_code == 200
        assert (await _refresh(client, fresh["refresh_token"])).status_code == 200


async def test_without_grace_reuse_revokes_the_family(tmp_path: Path) -> None:
    async with running(create_app(make_settings(tmp_path))) as client:
        user = await register(client)
        first = await _refresh(client, user["refresh_token"])
        assert first.status_code == 200
        assert_error(await _refresh(client, user["refresh_token"]), 401, "refresh_token_reused")
        me = await client.get("/api/v1/auth/me", headers=bearer(first.json()["access_token"]))
        assert_error(me, 401, "token_revoked")
