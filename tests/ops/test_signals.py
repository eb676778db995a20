"""The PostgreSQL change signal (``ops/signals.py``) where it differs from a marker file: it
cannot always hear. Before its listener connects, and while it reconnects, ``changed()`` is
true on every check (the log is read each time rather than silence trusted); a reconnect is
``missed()`` once, so a user rebuilds its state. The common contract runs in
``tests/contracts/test_signals.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragd.db.listen import build_listener
from ragd.db.sequence import AUTH_EVENTS
from ragd.errors import ConfigurationError
from ragd.ops.files import FileChangeSignal
from ragd.ops.signals import NotifyChangeSignal, build_change_signal
from tests.conftest import make_settings
from tests.postgres import PostgresServer
from tests.waiting import eventually


async def test_postgresql_signals_are_notify_channels_heard_by_the_listener(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await postgres.fresh_database("signals")
    settings = make_settings(tmp_path / "data", database={"url": url})
    listener = build_listener(url)
    assert listener is not None
    signal = build_change_signal(settings, AUTH_EVENTS, listener)
    assert isinstance(signal, NotifyChangeSignal)
    with pytest.raises(ConfigurationError, match="listener"):
        build_change_signal(settings, AUTH_EVENTS)
    sqlite = make_settings(tmp_path / "sqlite")
    assert isinstance(build_change_signal(sqlite, AUTH_EVENTS, listener), FileChangeSignal)
    await listener.close()


async def test_a_signal_that_cannot_hear_says_changed_on_every_check(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = await postgres.fresh_database("signals")
    settings = make_settings(tmp_path / "data", database={"url": url})
    listener = build_listener(url)
    assert listener is not None
    signal = build_change_signal(settings, AUTH_EVENTS, listener)
    try:
        assert signal.changed() and signal.changed()  # not started: nothing is heard
        await listener.start()
        assert not signal.changed() and not signal.missed()

        pid = listener.server_pid
        await postgres.execute(f"SELECT pg_terminate_backend({pid})", url.rsplit("/", 1)[1])
        await eventually(lambda: listener.server_pid not in (None, pid))
        assert signal.missed() and not signal.missed()
        assert signal.changed() and not signal.changed()
    finally:
        await listener.close()
    assert signal.changed() and signal.changed()  # closed: deaf again
