"""The one RSS reader: this process, another process, and a process tree."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from ragd.ops.memory import process_rss, read_process_memory

MIB = 2**20
BALLAST = 64 * MIB

#: A grandchild holding BALLAST bytes (written, so resident) says "ready" and waits on stdin.
GRANDCHILD = (
    "import sys\n"
    f"ballast = b'x' * {BALLAST}\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)
#: A child that starts the grandchild, prints its pid once it is ready, and waits for stdin
#: to close; the grandchild waits on a pipe held by the child, so both end with the child.
CHILD = (
    "import subprocess, sys\n"
    f"child = subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}],"
    " stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
    "child.stdout.readline()\n"
    "print(child.pid, flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def tree() -> Iterator[tuple[int, int]]:
    """(child pid, grandchild pid); the grandchild holds the ballast."""
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        grandchild = int(process.stdout.readline())
        yield process.pid, grandchild
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)


def test_this_process() -> None:
    # A Python process with pytest loaded holds well over 10 MB.
    assert process_rss() > 10 * MIB
    assert read_process_memory().rss > 10 * MIB


def test_another_process_and_its_descendants(tree: tuple[int, int]) -> None:
    child, grandchild = tree
    # RSS moves by a few pages as processes run; the ballast is what must be counted where.
    assert process_rss(grandchild) >= BALLAST
    assert process_rss(grandchild, descendants=True) >= BALLAST
    assert process_rss(child) < BALLAST
    assert process_rss(child, descendants=True) >= BALLAST + process_rss(child) // 2
