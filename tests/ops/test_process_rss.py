"""The one RSS reader: this process, another process, and a process tree."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from ragd.ops.memory import process_rss, read_process_memory

#: A child that starts a grandchild, prints the grandchild's pid, and waits for stdin to
#: close; the grandchild waits on a pipe held by the child, so both end with the child.
PARENT = (
    "import subprocess, sys\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'],"
    " stdin=subprocess.PIPE)\n"
    "print(child.pid, flush=True)\n"
    "sys.stdin.read()\n"
)


@pytest.fixture
def tree() -> Iterator[tuple[int, int]]:
    """(child pid, grandchild pid), both idle while the test reads them."""
    process = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
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
    assert process_rss() > 10 * 2**20
    assert read_process_memory().rss > 10 * 2**20


def test_another_process_and_its_descendants(tree: tuple[int, int]) -> None:
    child, grandchild = tree
    alone = process_rss(child)
    below = process_rss(grandchild)
    assert alone > 0 and below > 0
    # Idle processes blocked on a read keep their RSS, so the sum is exact.
    assert process_rss(child, descendants=True) == alone + below
    assert process_rss(grandchild, descendants=True) == below
