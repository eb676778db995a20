"""PostgreSQL LISTEN/NOTIFY: one connection per process that hears ragd's channels.

Other processes and hosts tell this one that something changed (an auth event committed, an
index change, a job enqueued) by a ``NOTIFY`` on one of ragd's channels; a :class:`Listener`
holds the one connection that ``LISTEN`` s to them and calls its subscribers' callbacks on the
event loop.

Why a dedicated connection, opened with asyncpg directly rather than taken from the
SQLAlchemy pool: a ``LISTEN`` belongs to a session, and a pooled connection is handed to
other work, recycled and pre-pinged; this one stays idle on purpose, for the life of the
process.

What a subscriber can rely on:

* A notification committed while the connection is up arrives once, after the commit, in
  commit order. One sent in a transaction with :func:`notify_on_commit` is delivered exactly
  when that transaction commits, and never if it rolls back.
* Notifications sent while the connection is down are lost (PostgreSQL queues them only for
  sessions that are listening). The listener reconnects with capped, jittered backoff and
  re-LISTENs every channel; then it calls the :meth:`Listener.on_reconnect` callbacks, so
  subscribers rebuild their state from the database instead of trusting that they missed
  nothing. :meth:`Listener.listening` says whether a channel is heard right now.
* Startup never waits for more than one connection attempt: when it fails, the process runs
  on (the subscribers' periodic syncs cover it) and the listener keeps trying.

The connection's DSN is derived from the SQLAlchemy URL by the asyncpg dialect's own
translation, so host, port, credentials and options (``ssl``...) match the pool's; neither
the URL nor the DSN is ever logged (they may carry a password).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = [
    "CHANNEL_PREFIX",
    "Listener",
    "build_listener",
    "channel_name",
    "notify_on_commit",
]

logger = logging.getLogger(__name__)

#: ragd's channels share this prefix, so they never collide with another application's on
#: the same database.
CHANNEL_PREFIX = "ragd_"
#: PostgreSQL's limit on a notification's payload (bytes, default build).
MAX_PAYLOAD_BYTES = 7999

Callback = Callable[[str], None]
Reconnected = Callable[[], None]


class Connection(Protocol):
    """The part of an asyncpg connection a listener uses (asyncpg ships no type stubs)."""

    async def add_listener(self, channel: str, callback: Callable[..., None]) -> None: ...

    def add_termination_listener(self, callback: Callable[..., None]) -> None: ...

    async def execute(self, query: str, *args: Any) -> str: ...

    async def close(self) -> None: ...

    def terminate(self) -> None: ...

    def is_closed(self) -> bool: ...

    def get_server_pid(self) -> int: ...


Connect = Callable[[], Awaitable[Connection]]


def channel_name(name: str) -> str:
    """The PostgreSQL channel of one of ragd's change logs or wake-ups (``auth_events`` ->
    ``ragd_auth_events``)."""
    return CHANNEL_PREFIX + name


async def notify_on_commit(session: AsyncSession, name: str, payload: str = "") -> None:
    """Have ``session``'s transaction notify channel ``name`` (see :func:`channel_name`) when
    it commits; nothing is sent if it rolls back.

    Idempotent within a transaction (PostgreSQL folds identical notifications of one
    transaction into one anyway; this saves the round trips). On a backend without NOTIFY
    (SQLite) it does nothing: there the caller signals after the commit.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    transaction = session.get_transaction()
    sent = session.info.setdefault("ragd_notify", {})
    key = (name, payload)
    if transaction is not None and sent.get(key) is transaction:
        return
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": channel_name(name), "payload": payload},
    )
    sent[key] = transaction


def asyncpg_connect(url: str, *, timeout: float = 10.0) -> Connect:
    """A function that opens one asyncpg connection to the database of SQLAlchemy ``url``.

    The keywords come from SQLAlchemy's asyncpg dialect, as the pool's connections get them;
    the pool-only ones are dropped. ``application_name`` tells the listener apart in
    ``pg_stat_activity``.
    """
    parsed = make_url(url).set(drivername="postgresql+asyncpg")
    args, kwargs = parsed.get_dialect()().create_connect_args(parsed)
    for pool_only in ("prepared_statement_cache_size", "prepared_statement_name_func",
                      "async_creator_fn"):
        kwargs.pop(pool_only, None)
    server_settings = {"application_name": "ragd-listener", **kwargs.pop("server_settings", {})}

    async def connect() -> Connection:
        # asyncpg has no type information: imported lazily, as an untyped module.
        asyncpg = importlib.import_module("asyncpg")
        conn: Connection = await asyncpg.connect(
            *args, timeout=timeout, server_settings=server_settings, **kwargs
        )
        return conn

    return connect


def build_listener(url: str) -> Listener | None:
    """The listener for the database at SQLAlchemy ``url``, or None when its backend has no
    LISTEN/NOTIFY (SQLite: processes there share a data dir and signal through files)."""
    if make_url(url).get_backend_name() != "postgresql":
        return None
    return Listener(asyncpg_connect(url))


class Listener:
    """One LISTEN connection for this process, kept open until :meth:`close`.

    ``subscribe`` and ``on_reconnect`` register callbacks (plain functions called on the
    event loop; keep them short: they must not block); subscribe before :meth:`start` so
    that nothing sent after the start is missed, or later (the channel is then LISTENed
    within a moment: :meth:`listening` tells when). :meth:`notify` sends a notification
    through the same connection, after whatever the caller committed.

    ``connect`` opens a connection (:func:`asyncpg_connect`); reconnection waits
    ``reconnect_initial`` seconds, doubling up to ``reconnect_max``, with jitter so that
    replicas do not all reconnect at once after a database restart. Every
    ``health_interval`` seconds of silence the connection is probed, so a half-open TCP
    connection (a host that vanished) is noticed and replaced.
    """

    def __init__(
        self,
        connect: Connect,
        *,
        reconnect_initial: float = 0.1,
        reconnect_max: float = 5.0,
        health_interval: float = 30.0,
        probe_timeout: float = 10.0,
        max_outbox: int = 1000,
    ) -> None:
        self._connect = connect
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        self._health_interval = health_interval
        self._probe_timeout = probe_timeout
        self._max_outbox = max_outbox
        self._subscribers: dict[str, list[Callback]] = {}
        self._reconnected: list[Reconnected] = []
        self._heard: set[str] = set()  # channels LISTENed on the current connection
        self._outbox: dict[tuple[str, str], None] = {}  # ordered; pending duplicates merge
        self._conn: Connection | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[bool] | None = None
        self._closed = False
        #: Connections established so far (plain data for health pages and tests).
        self.connections = 0

    # -- registration -------------------------------------------------------------------

    def subscribe(self, channel: str, callback: Callback) -> None:
        """Call ``callback(payload)`` for every notification on ``channel`` (a full channel
        name, e.g. ``channel_name("auth_events")``)."""
        self._subscribers.setdefault(channel, []).append(callback)
        self._wake.set()  # a running connection LISTENs to it now

    def on_reconnect(self, callback: Reconnected) -> None:
        """Call ``callback()`` each time the connection is established after a loss, or
        after a start whose first attempt failed: notifications may have been missed."""
        self._reconnected.append(callback)

    # -- state --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def listening(self, channel: str) -> bool:
        """True while notifications on ``channel`` reach this process."""
        return self.connected and channel in self._heard

    @property
    def server_pid(self) -> int | None:
        """The server process of the current connection (``pg_stat_activity.pid``)."""
        return self._conn.get_server_pid() if self.connected and self._conn else None

    # -- sending ------------------------------------------------------------------------

    def notify(self, channel: str, payload: str = "") -> None:
        """Send a notification on ``channel`` through this listener's connection, in order
        with earlier ones, without waiting. While the connection is down it waits in a
        bounded outbox (a hint: receivers also sync periodically)."""
        if len(payload.encode()) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"a notification's payload is at most {MAX_PAYLOAD_BYTES} bytes")
        key = (channel, payload)
        if key not in self._outbox:
            if len(self._outbox) >= self._max_outbox:
                logger.warning("listener outbox full; notification dropped",
                               extra={"channel": channel})
                return
            self._outbox[key] = None
        self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start listening; returns after the first connection attempt, whatever its
        outcome (a failure is logged and retried in the background)."""
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        first: asyncio.Future[bool] = loop.create_future()
        self._first = first
        self._task = asyncio.create_task(self._run(), name="ragd-listener")
        # The task resolves ``first`` after its first attempt (and never ends before it does,
        # unless it fails: then the start must not wait forever either).
        pending: set[asyncio.Future[Any]] = {first, self._task}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if not (first.done() and first.result()):
            logger.warning(
                "listener: no LISTEN connection yet; notifications from other processes "
                "are not heard until it connects (retrying in the background)"
            )

    async def close(self) -> None:
        """Stop listening and close the connection (idempotent)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the connection's one task ------------------------------------------------------

    async def _run(self) -> None:
        delay = self._reconnect_initial
        while not self._closed:
            try:
                conn = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure to connect is retried
                self._attempted(False)
                logger.warning("listener: cannot connect; retrying",
                               extra={"error": type(exc).__name__, "retry_in": round(delay, 3)})
                # Full jitter over the upper half: replicas spread out, none waits long.
                await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter
                delay = min(delay * 2, self._reconnect_max)
                continue
            delay = self._reconnect_initial
            self._conn = conn
            self.connections += 1
            if self._attempted(True):
                logger.info("listener: connected", extra={"channels": len(self._heard)})
            else:
                logger.warning("listener: reconnected; subscribers resync")
                self._call_reconnected()
            try:
                await self._serve(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a lost connection is replaced
                logger.warning("listener: connection lost; reconnecting",
                               extra={"error": type(exc).__name__})
            finally:
                self._conn = None
                self._heard.clear()
                await _discard(conn)

    def _attempted(self, connected: bool) -> bool:
        """Resolve the start's first attempt; True if this attempt was it (and connected)."""
        first = self._first
        if first is None or first.done():
            return False
        first.set_result(connected)
        return connected

    async def _open(self) -> Connection:
        conn = await self._connect()
        try:
            conn.add_termination_listener(lambda *_: self._wake.set())
            for channel in list(self._subscribers):
                await conn.add_listener(channel, self._dispatch)
                self._heard.add(channel)
        except BaseException:
            self._heard.clear()
            await _discard(conn)
            raise
        return conn

    async def _serve(self, conn: Connection) -> None:
        """LISTEN to new channels, send the outbox, probe when idle; return when the
        connection is gone (or raise when an operation on it fails)."""
        while True:
            self._wake.clear()  # set again by anything that arrives from here on
            if conn.is_closed():
                break
            for channel in [c for c in self._subscribers if c not in self._heard]:
                await conn.add_listener(channel, self._dispatch)
                self._heard.add(channel)
            while self._outbox:
                channel, payload = next(iter(self._outbox))
                await conn.execute("SELECT pg_notify($1, $2)", channel, payload)
                self._outbox.pop((channel, payload), None)
            if self._wake.is_set():
                continue
            try:
                async with asyncio.timeout(self._health_interval):
                    await self._wake.wait()
            except TimeoutError:
                async with asyncio.timeout(self._probe_timeout):
                    await conn.execute("SELECT 1")
        logger.warning("listener: connection closed by the server; reconnecting")

    def _dispatch(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        for callback in self._subscribers.get(channel, ()):
            try:
                callback(payload)
            except Exception:  # noqa: BLE001 - one subscriber's bug must not silence others
                logger.exception("listener: a subscriber failed", extra={"channel": channel})

    def _call_reconnected(self) -> None:
        for callback in self._reconnected:
            try:
                callback()
            except Exception:  # noqa: BLE001 - one subscriber's bug must not silence others
                logger.exception("listener: a reconnect subscriber failed")


async def _discard(conn: Connection) -> None:
    """Close ``conn`` politely, or drop it when the server does not answer."""
    if conn.is_closed():
        return
    try:
        async with asyncio.timeout(2.0):
            await conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection: only drop it
        conn.terminate()
