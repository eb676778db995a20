"""The process supervisor behind ``ragd serve --workers N``: its restart budget (a pure rule,
on a fake clock) and real forked children in a real parent process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ragd.ops.supervisor import GAVE_UP, STARTUP_FAILED, RestartBudget, RestartPolicy, Supervisor
from tests.fake_clock import FakeClock
from tests.waiting import HANG_TIMEOUT, eventually_sync

# -- the restart budget ----------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap_then_the_budget_gives_up() -> None:
    clock = FakeClock()
    budget = RestartBudget(RestartPolicy(max_restarts=5, window_seconds=60, first_delay=0.5,
                                         max_delay=4), clock)
    assert [budget.crashed() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert budget.crashed() is None  # a sixth crash within the window


def test_crashes_older_than_the_window_are_forgotten() -> None:
    clock = FakeClock()
    budget = RestartBudget(RestartPolicy(max_restarts=2, window_seconds=60, first_delay=1,
                                         max_delay=10), clock)
    assert budget.crashed() == 1
    assert budget.crashed() == 2
    clock.advance(61)
    assert budget.crashed() == 1  # the first two left the window
    clock.advance(30)
    assert budget.crashed() == 2
    assert budget.crashed() is None


def test_at_least_one_child() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Supervisor(lambda slot, ready: 0, 0)


# -- real processes ---------------------------------------------------------------------------

#: A parent supervising children that behave as ``mode`` says; each child appends
#: "start|ready <slot> <pid>" to the journal, the parent "all-ready <pids>".
PARENT = """
import logging, os, signal, sys
from pathlib import Path
from ragd.ops.supervisor import RestartPolicy, Supervisor

mode, count, journal = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
logging.basicConfig(level=logging.INFO, stream=sys.stderr)

def note(line):
    with journal.open("a") as out:
        out.write(line + "\\n")

def child(slot, ready):
    note(f"start {slot} {os.getpid()}")
    if mode == "fail-start":
        return 7
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready()
    note(f"ready {slot} {os.getpid()}")
    if mode == "crash":
        return 9
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)) if mode == "serve" else None
    while True:
        signal.pause()

policy = RestartPolicy(max_restarts=3, window_seconds=3600, first_delay=0, max_delay=0)
status = Supervisor(child, count, policy=policy,
                    on_ready=lambda pids: note("all-ready " + " ".join(map(str, pids)))).run()
note(f"exit {status}")
sys.exit(status)
"""


@dataclass
class Parent:
    proc: subprocess.Popen[bytes]
    journal: Path
    log: Path

    def lines(self, kind: str) -> list[list[str]]:
        text = self.journal.read_text() if self.journal.exists() else ""
        return [line.split()[1:] for line in text.splitlines() if line.split()[0] == kind]

    def ready_children(self) -> dict[int, int]:
        """slot -> pid of the latest child of each slot that said it is ready."""
        return {int(slot): int(pid) for slot, pid in self.lines("ready")}

    def wait(self) -> int:
        return self.proc.wait(HANG_TIMEOUT)


@contextmanager
def supervising(tmp_path: Path, mode: str, count: int) -> Iterator[Parent]:
    journal, log = tmp_path / "journal", tmp_path / "parent.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", PARENT, mode, str(count), str(journal)],
                                stdout=out, stderr=subprocess.STDOUT)
    parent = Parent(proc, journal, log)
    try:
        yield parent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (an orphan's waits for whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _all_ready(parent: Parent) -> list[int]:
    assert parent.proc.poll() is None, parent.log.read_text()
    ready = parent.lines("all-ready")
    return [int(pid) for pid in ready[0]] if ready else []


@pytest.mark.slow
def test_sigterm_stops_every_child_and_the_parent_exits_0(tmp_path: Path) -> None:
    with supervising(tmp_path, "serve", 3) as parent:
        pids = eventually_sync(lambda: _all_ready(parent), what="every child is ready")
        assert len(set(pids)) == 3
        assert sorted(parent.ready_children()) == [0, 1, 2]
        parent.proc.send_signal(signal.SIGTERM)
        assert parent.wait() == 0, parent.log.read_text()
    assert all(_gone(pid) for pid in pids)


@pytest.mark.slow
def test_a_killed_child_is_replaced_in_its_slot(tmp_path: Path) -> None:
    with supervising(tmp_path, "serve", 2) as parent:
        pids = eventually_sync(lambda: _all_ready(parent), what="every child is ready")
        victim_slot, victim = next(iter(parent.ready_children().items()))
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            assert parent.proc.poll() is None, parent.log.read_text()
            return parent.ready_children()[victim_slot] != victim

        eventually_sync(replaced, what="a replacement is ready")
        replacement = parent.ready_children()[victim_slot]
        assert replacement not in pids
        assert len(parent.lines("start")) == 3  # the other child was left alone
        parent.proc.send_signal(signal.SIGTERM)
        assert parent.wait() == 0, parent.log.read_text()
    assert _gone(replacement)
    assert "a server process died; replacing it" in parent.log.read_text()


@pytest.mark.slow
def test_children_stop_when_the_parent_is_killed(tmp_path: Path) -> None:
    """No orphan keeps serving unsupervised: the kernel sends each child SIGTERM."""
    with supervising(tmp_path, "serve", 2) as parent:
        pids = eventually_sync(lambda: _all_ready(parent), what="every child is ready")
        parent.proc.kill()
        parent.proc.wait(HANG_TIMEOUT)
        eventually_sync(lambda: all(_gone(pid) for pid in pids), what="the children stopped")


@pytest.mark.slow
def test_a_child_failing_before_it_is_ready_stops_everything_with_3(tmp_path: Path) -> None:
    with supervising(tmp_path, "fail-start", 2) as parent:
        assert parent.wait() == STARTUP_FAILED, parent.log.read_text()
    assert len(parent.lines("start")) <= 2  # no restart of a child that cannot start
    assert parent.lines("exit") == [[str(STARTUP_FAILED)]]
    assert "failed to start" in parent.log.read_text()


@pytest.mark.slow
def test_children_that_keep_dying_make_the_parent_give_up_with_1(tmp_path: Path) -> None:
    with supervising(tmp_path, "crash", 1) as parent:
        assert parent.wait() == GAVE_UP, parent.log.read_text()
    assert len(parent.lines("start")) == 4  # the first start and max_restarts=3 replacements
    assert "keep failing; giving up" in parent.log.read_text()


@pytest.mark.slow
def test_a_second_signal_kills_children_that_do_not_stop(tmp_path: Path) -> None:
    with supervising(tmp_path, "stubborn", 1) as parent:
        pids = eventually_sync(lambda: _all_ready(parent), what="the child is ready")
        parent.proc.send_signal(signal.SIGTERM)
        eventually_sync(lambda: "stopping the server processes" in parent.log.read_text(),
                        what="the parent is stopping")
        assert _all_ready(parent) and not _gone(pids[0])  # SIGTERM is ignored: still there
        parent.proc.send_signal(signal.SIGTERM)
        assert parent.wait() == GAVE_UP, parent.log.read_text()
    assert _gone(pids[0])
    assert "killing the server processes" in parent.log.read_text()
