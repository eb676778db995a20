"""Small file helpers shared by the index partitions: durable atomic writes, sidecar reads."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

STATE_FILE = "applied_seq.json"


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry (so a rename or create inside it survives a crash)."""
    fd = os.open(directory, os.O_RDONLY)
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
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


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


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """A cheap change marker for ``path`` (inode, mtime, size), or None when missing."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def read_applied_seq(directory: Path) -> int:
    """The ``applied_seq`` recorded in a partition directory's sidecar (0 when absent)."""
    data = read_json(directory / STATE_FILE)
    return int(data.get("applied_seq", 0)) if data else 0


def directory_bytes(directory: Path) -> int:
    """Total size of the regular files directly inside ``directory``."""
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(directory):
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total
