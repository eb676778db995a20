"""The change-signal family's factory, keyed on the database backend (``db/backends.py``).

A change signal tells every process sharing the data (``ragd serve --workers N``, separate
``ragd worker`` processes, replicas on other hosts) that one of the database's change logs
moved: ``auth_events`` (the revocation list syncs before the next request) or
``index_changes`` (the search backend applies them before the next search). Its users also
sync periodically, so a lost signal only delays a change, and the logs themselves stay the
truth.

On SQLite every process shares the data dir, so the signal is a marker file there. On
PostgreSQL replicas share no data dir: the signal is a LISTEN/NOTIFY channel named after the
log (``ragd_auth_events``), heard through the process's one :class:`~ragd.db.listen.Listener`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from ragd.db.backends import POSTGRESQL, SQLITE, choose
from ragd.db.listen import Listener, channel_name
from ragd.db.sequence import AUTH_EVENTS, INDEX_CHANGES
from ragd.errors import ConfigurationError
from ragd.ops.files import ChangeSignal, FileChangeSignal
from ragd.settings import Settings

__all__ = ["CHANNELS", "SIGNALS", "NotifyChangeSignal", "build_change_signal"]

#: The change logs a signal can announce (named as in ``db/sequence.py``).
CHANNELS = (AUTH_EVENTS, INDEX_CHANGES)
#: Each log's marker file, relative to the data dir.
MARKERS: Mapping[str, Path] = {
    AUTH_EVENTS: Path("auth-events.marker"),
    INDEX_CHANGES: Path("indexes", "changes.marker"),
}

SignalBuilder = Callable[[Settings, str, Listener | None], ChangeSignal]


class NotifyChangeSignal:
    """A change log's LISTEN/NOTIFY channel, heard through the process's listener.

    ``changed()`` is true once after any notifications arrived since the last check, and on
    every check while the channel is not heard (before the listener connects, while it
    reconnects): the log is then read each time instead of trusting silence, so the next
    request still sees a change. ``missed()`` is true once after each reconnect.

    ``notify()`` sends through the listener's connection, after the caller's commit. A
    writer may also notify inside its transaction (:func:`~ragd.db.listen.notify_on_commit`),
    which is delivered exactly at commit.
    """

    def __init__(self, listener: Listener, log: str) -> None:
        self._listener = listener
        self._channel = channel_name(log)
        self._heard = 0  # notifications (and reconnects) so far
        self._seen = 0
        self._reconnects = 0
        self._reconnects_seen = 0
        listener.subscribe(self._channel, self._on_notification)
        listener.on_reconnect(self._on_reconnect)

    def _on_notification(self, _payload: str) -> None:
        self._heard += 1

    def _on_reconnect(self) -> None:
        self._heard += 1
        self._reconnects += 1

    def changed(self) -> bool:
        if not self._listener.listening(self._channel):
            return True
        if self._heard == self._seen:
            return False
        self._seen = self._heard
        return True

    def missed(self) -> bool:
        if self._reconnects == self._reconnects_seen:
            return False
        self._reconnects_seen = self._reconnects
        return True

    def notify(self) -> None:
        self._listener.notify(self._channel)


def _marker_file(settings: Settings, log: str, _listener: Listener | None) -> ChangeSignal:
    marker = settings.data_dir / MARKERS[log]
    # A notification replaces the marker through a sibling file: its directory must exist
    # even in a process that has not opened the search indexes (which create indexes/).
    marker.parent.mkdir(parents=True, exist_ok=True)
    return FileChangeSignal(marker)


def _notify(_settings: Settings, log: str, listener: Listener | None) -> ChangeSignal:
    if listener is None:
        raise ConfigurationError(
            "change signals on PostgreSQL are heard through the process's listener "
            "(ragd.db.listen.build_listener); none was given"
        )
    return NotifyChangeSignal(listener, log)


SIGNALS: Mapping[str, SignalBuilder] = {SQLITE: _marker_file, POSTGRESQL: _notify}


def build_change_signal(
    settings: Settings, channel: str, listener: Listener | None = None
) -> ChangeSignal:
    """The signal for one change log, one of :data:`CHANNELS`; on PostgreSQL heard through
    ``listener``, the process's one (subscribe before it starts, so nothing is missed)."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown change log {channel!r}; valid: {', '.join(CHANNELS)}")
    return choose(settings.database_url, SIGNALS, "change signals")(settings, channel, listener)
