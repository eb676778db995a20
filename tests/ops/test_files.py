"""Change signals, atomic writes and locks on real files."""

from __future__ import annotations

import asyncio
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragd.ops.files import (
    FileChangeSignal,
    Leadership,
    atomic_write,
    lock_file,
    locked,
    read_json,
    try_lock_file,
    write_json_atomic,
)
from tests.waiting import HANG_TIMEOUT, settle


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


def test_try_lock_gets_a_free_lock_and_never_waits_for_a_held_one(tmp_path: Path) -> None:
    path = tmp_path / ".lock"
    held = try_lock_file(path)
    assert held is not None
    with held:
        assert try_lock_file(path) is None
        assert not _try_lock(path, fcntl.LOCK_SH)
    again = try_lock_file(path)
    assert again is not None
    with again:
        pass


async def test_locked_waits_for_the_holder_then_holds(tmp_path: Path) -> None:
    path = tmp_path / "startup.lock"
    inside = asyncio.Event()
    order: list[str] = []

    async def second() -> None:
        await inside.wait()
        async with locked(path):
            order.append("second")
            assert not _try_lock(path, fcntl.LOCK_EX)

    waiter = asyncio.create_task(second())
    async with locked(path):
        inside.set()
        await settle()
        assert not waiter.done()  # it waits while the lock is held
        order.append("first")
    await asyncio.wait_for(waiter, HANG_TIMEOUT)
    assert order == ["first", "second"]
    assert _try_lock(path, fcntl.LOCK_EX)


async def test_a_cancelled_wait_for_a_lock_leaves_nothing_held(tmp_path: Path) -> None:
    path = tmp_path / "startup.lock"
    with lock_file(path):
        waiter = asyncio.create_task(locked(path).__aenter__())
        await settle()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert _try_lock(path, fcntl.LOCK_EX)


def test_one_leader_at_a_time_and_release_hands_over(tmp_path: Path) -> None:
    path = tmp_path / "housekeeping.lock"
    first, second = Leadership(path), Leadership(path)
    assert first.acquire()
    assert first.acquire()  # already held: still the leader
    assert not second.acquire()
    first.release()
    assert second.acquire()
    assert not first.acquire()
    second.release()
    second.release()  # releasing twice is harmless


def test_a_dead_leaders_lock_goes_to_the_next_process_that_asks(tmp_path: Path) -> None:
    path = tmp_path / "housekeeping.lock"
    script = (
        "import sys; from pathlib import Path; from ragd.ops.files import Leadership\n"
        "leader = Leadership(Path(sys.argv[1])); assert leader.acquire()\n"
        "print('leading', flush=True); sys.stdin.read()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "leading\n"
        here = Leadership(path)
        assert not here.acquire()
    finally:
        holder.kill()
        holder.wait(HANG_TIMEOUT)
    assert here.acquire()  # the kernel dropped the dead holder's lock
    here.release()


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
