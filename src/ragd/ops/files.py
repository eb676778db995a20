"""Files that processes sharing a data dir coordinate through: change signals, atomic writes
and locks.

The low infrastructure under the auth revocation list, the derived indexes and model
preparation; it knows nothing about any of them.

* A **change signal** is a marker file whose ``stat`` (inode, mtime, size) moves on every
  notification: checking it costs one ``stat``, and a new inode per notification makes the
  change visible even within one mtime tick. A signal is a hint: its users also sync
  periodically, so a missed one only delays them.
* An **atomic write** fills a temporary sibling, fsyncs it, renames it over the target and
  fsyncs the directory: readers see the old or the new file, never a partial one, and the new
  one survives a crash once the call returns.
* A **lock** is an ``flock`` on a lock file: exclusive for writers, shared for readers; it is
  released when its descriptor closes, so a process that dies releases it too. Taken
  without waiting, it elects a **leader**: the one process (of ``ragd serve --workers N``,
  say) that does work one process is enough for, replaced by another when it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "ChangeSignal",
    "FileChangeSignal",
    "Leadership",
    "atomic_write",
    "directory_bytes",
    "file_signature",
    "fsync",
    "lock_file",
    "locked",
    "read_json",
    "tmp_path_for",
    "try_lock_file",
    "write_json_atomic",
]


# -- change signals -----------------------------------------------------------------------


class ChangeSignal(Protocol):
    """Tells the processes sharing a data dir (or a database) that some state changed.

    The seam a second transport plugs into: a marker file here, PostgreSQL LISTEN/NOTIFY in
    ``ops/signals.py``. A signal is a hint about a log that stays the truth: a transport
    that cannot hear other processes says ``changed()`` on every check rather than never.
    """

    def changed(self) -> bool:
        """True once after each change made since the previous call (cheap, non-blocking)."""
        ...

    def missed(self) -> bool:
        """True once after the transport may have lost notifications (it reconnected): a
        user holding state derived from the log rebuilds it rather than catch up from
        where it was."""
        ...

    def notify(self) -> None:
        """Announce a change to every process."""
        ...


class FileChangeSignal:
    """A marker file whose ``stat`` changes on every notification."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int, int]:
        return file_signature(self._path) or (0, 0, 0)

    def changed(self) -> bool:
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        return True

    def missed(self) -> bool:
        return False  # a marker's stamp only ever moves on: nothing is lost, only merged

    def notify(self) -> None:
        # Not fsynced: a marker lost in a crash is covered by its users' periodic sync.
        tmp = tmp_path_for(self._path)
        tmp.write_text(f"{time.time_ns()} {os.getpid()}\n", encoding="ascii")
        os.replace(tmp, self._path)  # a new inode: the stamp changes even within one mtime tick
        self._seen = self._stamp()


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """A cheap change marker for ``path`` (inode, mtime, size), or None when missing."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


# -- atomic, durable writes ---------------------------------------------------------------


def fsync(path: Path) -> None:
    """Flush a file, or a directory's entries (so a rename or create inside it survives a
    crash), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_path_for(path: Path) -> Path:
    """A temporary sibling of ``path`` unique to this process (same directory: same file
    system, so :func:`os.replace` is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Create ``path`` atomically: ``write`` fills a temporary sibling, which is fsynced and
    renamed over ``path``, then the directory is fsynced. Readers see the old or the new file,
    never a partial one."""
    tmp = tmp_path_for(path)
    try:
        write(tmp)
        fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync(path.parent)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically and durably."""
    payload = json.dumps(data, sort_keys=True).encode()
    atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object stored at ``path``, or None when the file is missing."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def directory_bytes(directory: Path) -> int:
    """Total size of the regular files directly inside ``directory``."""
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


# -- locks --------------------------------------------------------------------------------

#: How often :func:`locked` tries again. Polling, rather than a blocking ``flock`` in a
#: thread, keeps a cancelled wait clean: no thread stays blocked on a descriptor being closed.
LOCK_RETRY_SECONDS = 0.05


def lock_file(path: Path, *, shared: bool = False) -> contextlib.AbstractContextManager[None]:
    """Take an ``flock`` on ``path`` (created ``0600`` if missing), blocking until it is
    granted: exclusive, or ``shared`` with other shared holders. The lock is held on return
    (so a caller can take it in a worker thread); leaving the returned context releases it.
    """
    return _flock(path, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)


def try_lock_file(path: Path) -> contextlib.AbstractContextManager[None] | None:
    """:func:`lock_file` (exclusive) without waiting: the held lock, or None when another
    holder has it."""
    try:
        return _flock(path, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None


@contextlib.asynccontextmanager
async def locked(path: Path) -> AsyncIterator[None]:
    """Hold an exclusive lock on ``path`` for the block, waiting (on the event loop) for any
    other holder to let go first."""
    while (held := try_lock_file(path)) is None:  # noqa: ASYNC110 - no event: another process
        await asyncio.sleep(LOCK_RETRY_SECONDS)
    with held:
        yield


class Leadership:
    """One holder among the processes sharing a data dir.

    The first process whose :meth:`acquire` finds the lock on ``path`` free holds it until it
    exits (or calls :meth:`release`); the others get False and may ask again later, so one of
    them takes over once the holder is gone (the kernel drops a dead holder's lock).
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._held: contextlib.AbstractContextManager[None] | None = None

    @property
    def held(self) -> bool:
        return self._held is not None

    def acquire(self) -> bool:
        """True when this process holds the lock (now or already); never waits."""
        if self._held is None:
            held = try_lock_file(self._path)
            if held is None:
                return False
            held.__enter__()
            self._held = held
        return True

    def release(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            held.__exit__(None, None, None)


def _flock(path: Path, operation: int) -> contextlib.AbstractContextManager[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, operation)
    except BaseException:
        os.close(fd)
        raise
    return _held(fd)


@contextlib.contextmanager
def _held(fd: int) -> Iterator[None]:
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
