"""The change-signal family's factory, keyed on the database backend (``db/backends.py``).

A change signal tells every process sharing the data (``ragd serve --workers N``, separate
``ragd worker`` processes) that one of the database's change logs moved: ``auth_events``
(the revocation list syncs before the next request) or ``index_changes`` (the search backend
applies them before the next search). Its users also sync periodically, so a lost signal only
delays a change, and the logs themselves stay the truth.

On SQLite every process shares the data dir, so the signal is a marker file there; on
PostgreSQL it will be LISTEN/NOTIFY on a channel named after the log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from ragd.db.backends import POSTGRESQL, SQLITE, choose
from ragd.db.sequence import AUTH_EVENTS, INDEX_CHANGES
from ragd.ops.files import ChangeSignal, FileChangeSignal
from ragd.settings import Settings

__all__ = ["CHANNELS", "SIGNALS", "build_change_signal"]

#: The change logs a signal can announce (named as in ``db/sequence.py``).
CHANNELS = (AUTH_EVENTS, INDEX_CHANGES)
#: Each log's marker file, relative to the data dir.
MARKERS: Mapping[str, Path] = {
    AUTH_EVENTS: Path("auth-events.marker"),
    INDEX_CHANGES: Path("indexes", "changes.marker"),
}


def _marker_file(settings: Settings, channel: str) -> ChangeSignal:
    marker = settings.data_dir / MARKERS[channel]
    # A notification replaces the marker through a sibling file: its directory must exist
    # even in a process that has not opened the search indexes (which create indexes/).
    marker.parent.mkdir(parents=True, exist_ok=True)
    return FileChangeSignal(marker)


SIGNALS: Mapping[str, Callable[[Settings, str], ChangeSignal]] = {
    SQLITE: _marker_file, POSTGRESQL: _marker_file,
}


def build_change_signal(settings: Settings, channel: str) -> ChangeSignal:
    """The signal for one change log, one of :data:`CHANNELS`."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown change log {channel!r}; valid: {', '.join(CHANNELS)}")
    return choose(settings.database_url, SIGNALS, "change signals")(settings, channel)
