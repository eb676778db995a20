"""Change signals, atomic writes and locks on real files."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from ragd.ops.files import FileChangeSignal, atomic_write, lock_file, read_json, write_json_atomic


def _try_lock(path: Path, operation: int) -> bool:
    """Whether another open file description gets ``operation`` at once."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_exclusive_lock_excludes_everyone_until_released(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    with lock_file(path):
        assert (path.stat().st_mode & 0o777) == 0o600
        assert not _try_lock(path, fcntl.LOCK_SH)
        assert not _try_lock(path, fcntl.LOCK_EX)
    assert _try_lock(path, fcntl.LOCK_EX)


def test_shared_locks_coexist_and_exclude_writers(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    with lock_file(path, shared=True), lock_file(path, shared=True):
        assert _try_lock(path, fcntl.LOCK_SH)
        assert not _try_lock(path, fcntl.LOCK_EX)
    assert _try_lock(path, fcntl.LOCK_EX)


def test_signal_fires_once_per_notification_of_another_process(tmp_path: Path) -> None:
    marker = tmp_path / "changes.marker"
    here, there = FileChangeSignal(marker), FileChangeSignal(marker)
    assert not there.changed()
    here.notify()
    assert not here.changed()  # its own notification
    assert there.changed()
    assert not there.changed()
    here.notify()
    here.notify()  # twice within one mtime tick still moves the stamp
    assert there.changed()


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json_atomic(path, {"applied_seq": 1})

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"{partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, fail)
    assert read_json(path) == {"applied_seq": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert read_json(tmp_path / "missing.json") is None
