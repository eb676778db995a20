"""The in-process revocation list, kept in step with the database.

The database is the source of truth (sessions, keys, users, tenants, and an ``auth_events``
log of changes). Every request is checked against in-memory sets only, so a verified token
costs no query. Correctness on the *next* request comes from two rules:

1. A process that changes auth state commits, then calls :meth:`RevocationList.sync` before
   answering, so its own next request already sees the change.
2. Every other process hears of it through a change signal (:mod:`ragd.ops.signals`): a
   marker file in the shared data dir on SQLite, a NOTIFY that the committing transaction
   itself sends on PostgreSQL (so replicas on other hosts hear it too). Every check first
   asks the signal (a ``stat``, or a counter the listener bumps) and, when it moved, reads
   the new events from the database before deciding. A signal that cannot hear (the
   listener is reconnecting) says "changed" on every check, so each request reads the log
   rather than trust silence; after a reconnect the list reloads in full. A periodic sync
   covers anything else.

Catching up is sound because appends to the log commit in sequence order
(:mod:`ragd.db.sequence`): every event after the watermark is read, none skipped. A gap in
the numbers is then a rolled-back append (PostgreSQL's sequences are not transactional), or
pruned events: only when the log no longer holds the watermark itself can events after it
have been pruned, and the list reloads from the tables instead.

A failing sync never lets a request through: the check raises ``Unavailable`` instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ragd.db.tables import utcnow
from ragd.errors import Unavailable
from ragd.ops.files import ChangeSignal
from ragd.stores.base import ApiKeyOwner, AuthEventLog

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    """Why a principal is rejected, or ``None`` fields when it is accepted."""

    reason: str | None

    @property
    def allowed(self) -> bool:
        return self.reason is None


ALLOWED = Decision(None)


class RevocationList:
    """Revoked sessions and keys, inactive users and suspended tenants, in memory.

    ``clock`` (monotonic seconds) times the periodic sync; it is an injection point for tests.
    """

    def __init__(
        self,
        events: AuthEventLog,
        signal: ChangeSignal,
        *,
        sync_interval: float = 2.0,
        api_key_cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._events = events
        self._signal = signal
        self._sync_interval = sync_interval
        self._clock = clock
        self._lock = asyncio.Lock()
        self._last_seq = 0
        self._last_sync = 0.0
        self._wanted = 0  # change signals seen
        self._done = 0  # signals covered by a finished sync
        self._loaded = False
        self._reload = False  # the signal may have lost notifications: start over
        #: Full loads from the tables so far (plain data for tests and health pages).
        self.loads = 0
        self.revoked_sessions: dict[str, datetime] = {}
        self.revoked_key_ids: set[str] = set()
        self.inactive_users: set[str] = set()
        self.suspended_tenants: set[str] = set()
        self._api_keys: OrderedDict[str, ApiKeyOwner | None] = OrderedDict()
        self._api_key_cache_size = api_key_cache_size

    @property
    def last_seq(self) -> int:
        return self._last_seq

    async def load(self) -> None:
        """Read the full state from the database (at startup)."""
        async with self._lock:
            await self._load_locked()

    async def _load_locked(self) -> None:
        self._reload = False  # a reconnect seen from now on asks for the next load
        try:
            snap = await self._events.revocation_snapshot(utcnow())
        except BaseException:
            self._reload = True
            raise
        self.revoked_sessions = dict(snap.revoked_sessions)
        self.revoked_key_ids = set(snap.revoked_key_ids)
        self.inactive_users = set(snap.inactive_user_ids)
        self.suspended_tenants = set(snap.suspended_tenant_ids)
        self._api_keys.clear()
        self._last_seq = snap.last_seq
        self._last_sync = self._clock()
        self._loaded = True
        self.loads += 1

    async def sync(self, *, generation: int | None = None) -> None:
        """Apply every event committed since the last sync.

        With ``generation``, return at once if a sync that started after that change signal
        already finished (requests queued behind one sync do not each repeat it).
        """
        async with self._lock:
            if generation is not None and self._done >= generation and not self._stale():
                return
            # This sync reads the database after every signal seen so far: it covers them
            # all, so the requests queued behind it need no sync of their own.
            target = self._wanted
            await self._sync_locked()
            self._done = max(self._done, target)

    def _stale(self) -> bool:
        return self._clock() - self._last_sync > self._sync_interval

    async def _sync_locked(self) -> None:
        if not self._loaded or self._reload:
            await self._load_locked()
            return
        while True:
            events = await self._events.events_since(self._last_seq)
            if not events:
                break
            if events[0].seq > self._last_seq + 1 and await self._events.pruned_through(
                self._last_seq
            ):
                # Events after the watermark may have been pruned while we were away (a gap
                # alone is only a rolled-back append): start over from the tables.
                await self._load_locked()
                return
            for event in events:
                await self._apply(event.kind, event.subject)
                self._last_seq = event.seq
        self._last_sync = self._clock()

    async def _apply(self, kind: str, subject: str) -> None:
        if kind == "session":
            expires = await self._events.session_revoked(subject)
            if expires is not None:
                self.revoked_sessions[subject] = expires
        elif kind == "user":
            if await self._events.user_blocked(subject):
                self.inactive_users.add(subject)
            else:
                self.inactive_users.discard(subject)
            for key_id, owner in list(self._api_keys.items()):
                if owner is not None and owner.key.user_id == subject:
                    del self._api_keys[key_id]
        elif kind == "tenant":
            if await self._events.tenant_suspended(subject):
                self.suspended_tenants.add(subject)
            else:
                self.suspended_tenants.discard(subject)
        elif kind == "api_key":
            self.revoked_key_ids.add(subject)
            self._api_keys.pop(subject, None)

    async def refresh_if_changed(self) -> None:
        """Sync when another process signalled a change, or when the list is stale.

        A signal bumps a generation counter; every request that sees an unfinished generation
        waits for a sync covering it, including requests that arrive while another request's
        sync is in flight (they must not slip past with the old state).
        """
        missed = self._signal.missed()
        if missed:
            self._reload = True
        if self._signal.changed() or missed:
            self._wanted += 1
        if self._wanted > self._done or self._stale():
            try:
                await self.sync(generation=self._wanted)
            except Exception as exc:  # noqa: BLE001 - any failure must fail closed
                logger.error("revocation sync failed", extra={"error": type(exc).__name__})
                raise Unavailable("authentication state is unavailable; retry shortly") from None

    async def changed_here(self) -> None:
        """Call after committing an auth change in this process."""
        await self.sync()
        self._signal.notify()

    def check(self, *, user_id: str, tenant_id: str, session_id: str | None) -> Decision:
        """Decide on a principal whose credential already verified (no I/O)."""
        if session_id is not None and session_id in self.revoked_sessions:
            return Decision("session_revoked")
        if user_id in self.inactive_users:
            return Decision("user_inactive")
        if tenant_id in self.suspended_tenants:
            return Decision("tenant_suspended")
        return ALLOWED

    # -- API keys: a positive/negative cache that revocation events evict ---------------------

    def cached_api_key(self, key_id: str) -> tuple[bool, ApiKeyOwner | None]:
        """Return ``(hit, owner)``; ``owner`` is None for a cached miss."""
        if key_id in self._api_keys:
            self._api_keys.move_to_end(key_id)
            return True, self._api_keys[key_id]
        return False, None

    def remember_api_key(self, key_id: str, owner: ApiKeyOwner | None) -> None:
        self._api_keys[key_id] = owner
        self._api_keys.move_to_end(key_id)
        while len(self._api_keys) > self._api_key_cache_size:
            self._api_keys.popitem(last=False)

    def forget_expired(self, now: datetime) -> int:
        """Drop revoked sessions past their expiry; their tokens can no longer verify."""
        stale = [sid for sid, expires in self.revoked_sessions.items() if expires <= now]
        for sid in stale:
            del self.revoked_sessions[sid]
        return len(stale)
