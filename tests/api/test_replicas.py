"""Two replicas of the app on one database: auth state is shared, not per process.

On PostgreSQL the replicas have different data dirs, as on two hosts: a logout or an API
key's deletion through A reaches B by NOTIFY, and B refuses the credential on its next
request once the notification has arrived (the tests wait for that arrival, never for time;
the periodic sync is set to 300 s so only the notification can explain the refusal). When
B's LISTEN connection is killed, B reads the log on every request until it reconnects, then
reloads in full. On both backends, login throttling counts attempts through A and B as one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from ragd.app import create_app
from ragd.container import Services
from ragd.db.listen import channel_name
from ragd.db.sequence import AUTH_EVENTS, INDEX_CHANGES
from ragd.settings import Settings
from tests.conftest import (
    STRONG_PASSWORD,
    assert_error,
    bearer,
    login,
    make_settings,
    register,
    running,
)
from tests.postgres import PostgresServer
from tests.waiting import eventually

API = "/api/v1"
ME = f"{API}/auth/me"
LOGIN = f"{API}/auth/login"
KEYS = f"{API}/auth/api-keys"
WRONG_PASSWORD = "not-the-right-password-77"
AUTH_CHANNEL = channel_name(AUTH_EVENTS)


@dataclass
class Replica:
    app: FastAPI
    client: httpx.AsyncClient
    #: Auth notifications this replica's listener received (PostgreSQL).
    notifications: list[str] = field(default_factory=list)

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def listen(self) -> None:
        if self.services.listener is not None:
            self.services.listener.subscribe(AUTH_CHANNEL, self.notifications.append)

    async def hears(self, before: int) -> None:
        """Wait until a change made elsewhere has reached this replica: its listener got a
        notification (PostgreSQL); on SQLite the marker file is read by the request itself."""
        if self.services.listener is not None:
            await eventually(lambda: len(self.notifications) > before,
                             what="an auth notification on the other replica")

    async def status(self, **headers: str) -> int:
        return (await self.client.get(ME, headers=headers)).status_code


@asynccontextmanager
async def replicas(a: Settings, b: Settings) -> AsyncIterator[tuple[Replica, Replica]]:
    app_a, app_b = create_app(a), create_app(b)
    async with running(app_a) as client_a, running(app_b) as client_b:
        first, second = Replica(app_a, client_a), Replica(app_b, client_b)
        first.listen()
        second.listen()
        yield first, second


async def _pair(
    backend: str, tmp_path: Path, postgres: PostgresServer, **auth: Any
) -> tuple[Settings, Settings]:
    values = {"revocation_sync_seconds": 300, **auth}
    if backend == "sqlite":  # processes on one host share the data dir (serve --workers)
        shared = make_settings(tmp_path / "data", auth=values)
        return shared, shared
    url = await postgres.fresh_database("replicas")
    return (make_settings(tmp_path / "a", database={"url": url}, auth=values),
            make_settings(tmp_path / "b", database={"url": url}, auth=values))


BACKENDS = pytest.mark.parametrize("backend", ["sqlite", "postgresql"])


# -- revocation -------------------------------------------------------------------------------


@BACKENDS
async def test_a_logout_through_a_is_refused_by_b(
    backend: str, tmp_path: Path, postgres: PostgresServer
) -> None:
    async with replicas(*await _pair(backend, tmp_path, postgres)) as (a, b):
        user = await register(a.client)
        token = bearer(user["access_token"])
        assert await b.status(**token) == 200
        before = len(b.notifications)
        response = await a.client.post(f"{API}/auth/logout", headers=token)
        assert response.status_code == 204
        await b.hears(before)
        assert_error(await b.client.get(ME, headers=token), 401, "token_revoked")


@BACKENDS
async def test_an_api_key_deleted_through_a_is_refused_by_b(
    backend: str, tmp_path: Path, postgres: PostgresServer
) -> None:
    async with replicas(*await _pair(backend, tmp_path, postgres)) as (a, b):
        user = await register(a.client)
        response = await a.client.post(KEYS, headers=bearer(user["access_token"]),
                                       json={"name": "ci"})
        assert response.status_code == 201, response.text
        key = response.json()
        assert await b.status(**{"X-API-Key": key["key"]}) == 200  # B caches the key
        before = len(b.notifications)
        deleted = await a.client.delete(f"{KEYS}/{key['id']}",
                                        headers=bearer(user["access_token"]))
        assert deleted.status_code == 204
        await b.hears(before)
        assert_error(await b.client.get(ME, headers={"X-API-Key": key["key"]}), 401)


async def test_while_b_cannot_listen_it_reads_the_log_then_reloads_after_reconnecting(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """B's LISTEN connection is killed, and the database refuses new connections for a while
    so B stays deaf: a logout through A is still refused by B's next request (B reads the
    log on each check). Once B reconnects it reloads the revocation state in full, and later
    changes reach it by notification again."""
    settings_a, settings_b = await _pair("postgresql", tmp_path, postgres)
    database = settings_a.database_url.rsplit("/", 1)[1]
    async with replicas(settings_a, settings_b) as (a, b):
        user = await register(a.client)
        first = bearer(user["access_token"])
        second = bearer((await login(a.client, user["email"]))["access_token"])
        listener = b.services.listener
        assert listener is not None and listener.listening(AUTH_CHANNEL)
        assert await b.status(**first) == 200
        old_pid = listener.server_pid
        await postgres.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        try:
            await postgres.execute(f"SELECT pg_terminate_backend({old_pid})")
            await eventually(lambda: not listener.connected, what="B's listener dropped")
            response = await a.client.post(f"{API}/auth/logout", headers=first)
            assert response.status_code == 204
            assert_error(await b.client.get(ME, headers=first), 401, "token_revoked")
        finally:
            await postgres.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await eventually(lambda: listener.listening(AUTH_CHANNEL), what="B reconnected")
        assert listener.server_pid != old_pid
        loads = b.services.revocation.loads
        assert await b.status(**second) == 200  # this request's check reloads in full
        assert b.services.revocation.loads == loads + 1
        assert await b.status(**second) == 200
        assert b.services.revocation.loads == loads + 1  # once

        before = len(b.notifications)
        response = await a.client.post(f"{API}/auth/logout", headers=second)
        assert response.status_code == 204
        await b.hears(before)
        assert_error(await b.client.get(ME, headers=second), 401, "token_revoked")


# -- login throttling -------------------------------------------------------------------------


async def _login(replica: Replica, email: str, password: str) -> httpx.Response:
    return await replica.client.post(LOGIN, json={"email": email, "password": password})


def _throttled(response: httpx.Response) -> None:
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1


@BACKENDS
async def test_login_attempts_through_both_replicas_count_as_one(
    backend: str, tmp_path: Path, postgres: PostgresServer
) -> None:
    pair = await _pair(backend, tmp_path, postgres, login_attempts_per_account=3)
    async with replicas(*pair) as (a, b):
        user = await register(a.client)
        for replica in (a, b, a):
            assert_error(await _login(replica, user["email"], WRONG_PASSWORD), 401)
        # The fourth attempt is refused whichever replica gets it, right password or not.
        _throttled(await _login(b, user["email"], STRONG_PASSWORD))
        _throttled(await _login(a, user["email"], STRONG_PASSWORD))


@BACKENDS
async def test_concurrent_attempts_on_both_replicas_never_exceed_the_limit(
    backend: str, tmp_path: Path, postgres: PostgresServer
) -> None:
    pair = await _pair(backend, tmp_path, postgres, login_attempts_per_ip=4)
    async with replicas(*pair) as (a, b):
        responses = await asyncio.gather(*[
            _login((a, b)[n % 2], f"spray{n}@acme.example", WRONG_PASSWORD) for n in range(12)
        ])
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [401] * 4 + [429] * 8


@BACKENDS
async def test_hostile_login_values_are_throttled_or_refused_never_a_500(
    backend: str, tmp_path: Path, postgres: PostgresServer
) -> None:
    pair = await _pair(backend, tmp_path, postgres, login_attempts_per_account=2)
    hostile = [
        "a" * 300 + "@" + "b" * 15 + ".io",  # 320 characters, the most the API takes
        "\u202eoi.emca@lorac",
        "ｃａｒｏｌ@ａｃｍｅ.io",
        "carol'); DELETE FROM rate_limits; --@acme.io",
        "x" * 320,
        "🙂" * 80,
    ]
    async with replicas(*pair) as (a, b):
        for value in hostile:
            statuses = [
                (await _login((a, b)[n % 2], value, WRONG_PASSWORD)).status_code
                for n in range(3)
            ]
            assert all(status in (401, 422, 429) for status in statuses), (value, statuses)
            if statuses[0] == 401:
                assert statuses == [401, 401, 429], value


# -- the listener's lifecycle -----------------------------------------------------------------


async def test_each_replica_listens_while_it_runs_and_hangs_up_when_it_stops(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    settings, _ = await _pair("postgresql", tmp_path, postgres)
    database = settings.database_url.rsplit("/", 1)[1]
    app = create_app(settings)
    async with running(app):
        listener = app.state.services.listener
        assert listener is not None
        assert listener.listening(AUTH_CHANNEL)
        assert listener.listening(channel_name(INDEX_CHANGES))
        pid = listener.server_pid
    conn = await asyncpg.connect(postgres.dsn(database))
    try:
        async def hung_up() -> bool:
            count = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
            return count == 0

        await eventually(hung_up, what="the listener's session ended")
    finally:
        await conn.close()
