"""The LISTEN/NOTIFY listener (``db/listen.py``) against a real PostgreSQL: delivery, commit
semantics, order, reconnection after the server kills the connection, a start that cannot
connect, and a DSN that never reaches the logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text

from ragd.db.engine import Database
from ragd.db.listen import (
    Connection,
    Listener,
    asyncpg_connect,
    build_listener,
    channel_name,
    notify_on_commit,
)
from tests.postgres import PostgresServer
from tests.waiting import eventually

CHANNEL = channel_name("test")
BARRIER = channel_name("barrier")


class Heard:
    """What one channel's subscriber received, in order."""

    def __init__(self) -> None:
        self.payloads: list[str] = []

    def __call__(self, payload: str) -> None:
        self.payloads.append(payload)


@pytest.fixture
async def url(postgres: PostgresServer) -> str:
    return await postgres.fresh_database("listen")


@pytest.fixture
async def listener(url: str) -> AsyncIterator[Listener]:
    started = build_listener(url)
    assert started is not None
    yield started
    await started.close()


async def _send(url: str, channel: str, payload: str) -> None:
    db = Database(url)
    try:
        async with db.transaction() as s:
            await s.execute(text("SELECT pg_notify(:c, :p)"), {"c": channel, "p": payload})
    finally:
        await db.dispose()


async def test_sqlite_has_no_listener() -> None:
    assert build_listener("sqlite+aiosqlite:///x.db") is None


async def test_a_notification_reaches_the_subscriber(url: str, listener: Listener) -> None:
    heard = Heard()
    listener.subscribe(CHANNEL, heard)
    await listener.start()
    assert listener.listening(CHANNEL)
    await _send(url, CHANNEL, "hello")
    await eventually(lambda: heard.payloads == ["hello"])


async def test_notify_on_commit_is_sent_by_the_commit_only(url: str, listener: Listener) -> None:
    heard, barrier = Heard(), Heard()
    listener.subscribe(CHANNEL, heard)
    listener.subscribe(BARRIER, barrier)
    await listener.start()
    db = Database(url)
    try:
        with pytest.raises(RuntimeError):
            async with db.transaction() as s:
                await notify_on_commit(s, "test", "rolled back")
                raise RuntimeError("roll back")
        async with db.transaction() as s:
            await notify_on_commit(s, "test", "committed")
            await notify_on_commit(s, "test", "committed")  # one notification per transaction
        await _send(url, BARRIER, "after")
    finally:
        await db.dispose()
    # Notifications arrive in commit order: once the barrier is here, nothing else is coming.
    await eventually(lambda: barrier.payloads == ["after"])
    assert heard.payloads == ["committed"]


async def test_notify_on_commit_does_nothing_on_sqlite(tmp_path: object) -> None:
    db = Database("sqlite+aiosqlite://")
    try:
        async with db.transaction() as s:
            await notify_on_commit(s, "test")  # no NOTIFY there: must not fail
    finally:
        await db.dispose()


async def test_notify_sends_in_order_and_merges_pending_duplicates(
    url: str, listener: Listener
) -> None:
    receiver = build_listener(url)
    assert receiver is not None
    heard = Heard()
    receiver.subscribe(CHANNEL, heard)
    try:
        await receiver.start()
        await listener.start()
        for payload in ("a", "b", "a", "c"):  # the second "a" is still pending: merged
            listener.notify(CHANNEL, payload)
        await eventually(lambda: heard.payloads[-1:] == ["c"])
        assert heard.payloads == ["a", "b", "c"]
        with pytest.raises(ValueError, match="payload"):
            listener.notify(CHANNEL, "x" * 8000)
    finally:
        await receiver.close()


async def test_a_subscription_after_start_is_listened_to(url: str, listener: Listener) -> None:
    await listener.start()
    heard = Heard()
    listener.subscribe(CHANNEL, heard)
    await eventually(lambda: listener.listening(CHANNEL))
    await _send(url, CHANNEL, "late")
    await eventually(lambda: heard.payloads == ["late"])


async def test_a_killed_connection_is_replaced_and_subscribers_told(
    url: str, postgres: PostgresServer, listener: Listener
) -> None:
    heard, reconnects = Heard(), []
    listener.subscribe(CHANNEL, heard)
    listener.on_reconnect(lambda: reconnects.append(listener.server_pid))
    await listener.start()
    assert reconnects == []  # the start's own connection is not a reconnect
    first = listener.server_pid
    assert first is not None
    await postgres.execute(f"SELECT pg_terminate_backend({first})", url.rsplit("/", 1)[1])
    await eventually(lambda: listener.listening(CHANNEL) and listener.server_pid != first)
    assert len(reconnects) == 1 and reconnects[0] not in (None, first)
    assert listener.connections == 2
    await _send(url, CHANNEL, "after the reconnect")
    await eventually(lambda: heard.payloads == ["after the reconnect"])


async def test_a_start_that_cannot_connect_returns_and_keeps_trying(url: str) -> None:
    real = asyncpg_connect(url)
    attempts: list[int] = []
    gate = asyncio.Event()

    async def flaky() -> Connection:
        attempts.append(1)
        if not gate.is_set():
            raise ConnectionRefusedError("database unreachable")
        return await real()

    listener = Listener(flaky, reconnect_initial=0.01, reconnect_max=0.05)
    heard, reconnects = Heard(), []
    listener.subscribe(CHANNEL, heard)
    listener.on_reconnect(lambda: reconnects.append(1))
    try:
        await listener.start()  # returns after the failed first attempt
        assert not listener.connected and not listener.listening(CHANNEL)
        await eventually(lambda: len(attempts) >= 3)  # backing off, still trying
        gate.set()
        await eventually(lambda: listener.listening(CHANNEL))
        # The first connection after a failed start may have missed notifications.
        assert reconnects == [1]
        await _send(url, CHANNEL, "now")
        await eventually(lambda: heard.payloads == ["now"])
    finally:
        await listener.close()
    assert not listener.connected


async def test_close_ends_the_session(
    url: str, postgres: PostgresServer, listener: Listener
) -> None:
    await listener.start()
    pid = listener.server_pid
    await listener.close()
    await listener.close()  # idempotent
    conn = await asyncpg.connect(postgres.dsn(url.rsplit("/", 1)[1]))
    try:
        async def gone() -> bool:
            return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                                       pid) == 0

        await eventually(gone)
    finally:
        await conn.close()


async def test_the_dsn_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    # Port 1 on loopback: nothing listens there, so every attempt fails and is logged.
    url = "postgresql+asyncpg://ragd:pw-s3cret-xyz@127.0.0.1:1/ragd?ssl=disable"
    listener = build_listener(url)
    assert listener is not None
    caplog.set_level(logging.DEBUG, logger="ragd")
    try:
        await listener.start()
        await eventually(lambda: len(caplog.records) >= 2)
    finally:
        await listener.close()
    for record in caplog.records:
        rendered = f"{record.getMessage()} {record.__dict__}"
        assert "pw-s3cret-xyz" not in rendered and "127.0.0.1:1" not in rendered
