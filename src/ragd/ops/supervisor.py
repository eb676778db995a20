"""Keep N forked copies of a server running, and stop them together.

``ragd serve --workers N`` binds its address once, then this supervisor forks N children that
serve on the inherited listening sockets (the kernel hands each new connection to one of
them). The parent does nothing else: it imports no model, opens no database and holds no
lock, so it stays small and cannot deadlock a child.

Why not uvicorn's ``Multiprocess``: it spawns fresh interpreters that must re-import the
application from a string (ours is built from settings validated in the parent), restarts a
dying child forever, and cannot tell "failed to start" from "crashed later" unless the child
exits with one particular status. Forking (Linux and other Unix) hands each child the sockets
and the settings as they are.

The contract with a child (``target(slot, ready) -> exit status``):

* ``slot`` (0 to N-1) is stable across restarts: a replacement gets the slot of the child it
  replaces, so work given to one slot (the ingestion workers) always runs exactly once.
* ``ready()`` says the child serves. A child that exits before ``ready()`` during the first
  start is a **start-up failure**: it would fail the same way again, so every child is
  stopped and :data:`STARTUP_FAILED` returned, as a single server would.
* Any later exit is a **crash**: the child is replaced after a back-off (0.5 s, doubling, at
  most 10 s), unless more than :attr:`RestartPolicy.max_restarts` crashes happened within
  :attr:`RestartPolicy.window_seconds`: then everything stops with :data:`GAVE_UP`.

SIGTERM or SIGINT to the parent: SIGTERM to every child, which finish their requests and
shut down; then :data:`STOPPED` (0) if they all ended cleanly. A second signal, or
``stop_timeout`` seconds, SIGKILLs what is left. If the parent itself dies (SIGKILL, the OOM
killer), the kernel sends every child SIGTERM (Linux), so none serves on unsupervised.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import NoReturn

__all__ = [
    "GAVE_UP",
    "STARTUP_FAILED",
    "STOPPED",
    "ChildTarget",
    "RestartBudget",
    "RestartPolicy",
    "Supervisor",
]

logger = logging.getLogger(__name__)

#: Exit statuses of :meth:`Supervisor.run`.
STOPPED = 0
GAVE_UP = 1
STARTUP_FAILED = 3

#: ``target(slot, ready) -> exit status``, run in the forked child.
ChildTarget = Callable[[int, Callable[[], None]], int]

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
#: How a child that was told to stop may end: normally, or re-raising the stop signal
#: (uvicorn does that after a graceful shutdown).
_CLEAN_ENDS = frozenset({0, -signal.SIGTERM, -signal.SIGINT})


@dataclass(frozen=True)
class RestartPolicy:
    """When to replace a crashed child, and when to give up."""

    max_restarts: int = 5
    window_seconds: float = 60.0
    first_delay: float = 0.5
    max_delay: float = 10.0


class RestartBudget:
    """Counts crashes in a sliding window; says how long to wait before the replacement, or
    that the children keep failing (None). ``clock`` is monotonic seconds (injectable)."""

    def __init__(
        self, policy: RestartPolicy, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._crashes: deque[float] = deque()

    def crashed(self) -> float | None:
        """Record a crash now: the delay before restarting, or None to give up."""
        now = self._clock()
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > self._policy.window_seconds:
            self._crashes.popleft()
        recent = len(self._crashes)
        if recent > self._policy.max_restarts:
            return None
        return min(self._policy.max_delay, self._policy.first_delay * 2.0 ** (recent - 1))


@dataclass(eq=False)
class _Child:
    slot: int
    pid: int
    ready_fd: int  # the read end of the child's readiness pipe; EOF when the child exits
    ready: bool = False
    exit_status: int | None = field(default=None)


class Supervisor:
    """Runs ``count`` children of ``target`` until a stop signal; see the module docstring.

    ``on_ready(pids)`` runs in the parent once every child of the first start is ready.
    """

    def __init__(
        self,
        target: ChildTarget,
        count: int,
        *,
        policy: RestartPolicy | None = None,
        stop_timeout: float = 60.0,
        on_ready: Callable[[list[int]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if count < 1:
            raise ValueError("count must be at least 1")
        self._target = target
        self._count = count
        self._budget = RestartBudget(policy or RestartPolicy(), clock)
        self._stop_timeout = stop_timeout
        self._on_ready = on_ready
        self._clock = clock
        self._children: dict[int, _Child] = {}  # by ready_fd
        self._restarts: dict[int, float] = {}  # slot -> when to start its replacement
        self._signals: list[int] = []
        self._selector = selectors.DefaultSelector()
        self._wake_r = self._wake_w = -1

    # -- the parent ---------------------------------------------------------------------------

    def run(self) -> int:
        """Start the children and supervise them until they are all stopped; the exit
        status: :data:`STOPPED`, :data:`GAVE_UP` or :data:`STARTUP_FAILED`."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        # The handlers only record the signal; the wake-up byte ends the wait in select().
        previous_fd = signal.set_wakeup_fd(self._wake_w)
        previous = {signum: signal.signal(signum, self._record) for signum in _STOP_SIGNALS}
        try:
            for slot in range(self._count):
                self._spawn(slot)
            return self._supervise()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            self._selector.close()
            for fd in (self._wake_r, self._wake_w, *self._children):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self._signals.append(signum)

    def _supervise(self) -> int:
        starting = True
        while True:
            if self._signals:
                logger.info("stopping the server processes",
                            extra={"signal": signal.Signals(self._signals[-1]).name})
                return self._stop(STOPPED)
            for child in self._wait(self._next_restart()):
                if child.exit_status is None:  # it became ready
                    if starting and self._all_ready():
                        starting = False
                        if self._on_ready is not None:
                            self._on_ready(self.pids)
                    continue
                if starting and not child.ready:
                    logger.error("a server process failed to start; stopping the others",
                                 extra={"pid": child.pid, "exit_status": child.exit_status})
                    return self._stop(STARTUP_FAILED)
                delay = self._budget.crashed()
                if delay is None:
                    logger.error("server processes keep failing; giving up",
                                 extra={"pid": child.pid, "exit_status": child.exit_status})
                    return self._stop(GAVE_UP)
                logger.warning("a server process died; replacing it",
                               extra={"pid": child.pid, "slot": child.slot,
                                      "exit_status": child.exit_status,
                                      "restart_in_seconds": delay})
                self._restarts[child.slot] = self._clock() + delay
            now = self._clock()
            for slot, due in list(self._restarts.items()):
                if due <= now:
                    del self._restarts[slot]
                    self._spawn(slot)

    def _all_ready(self) -> bool:
        children = self._children.values()
        return len(children) == self._count and all(child.ready for child in children)

    @property
    def pids(self) -> list[int]:
        return sorted(child.pid for child in self._children.values())

    def _next_restart(self) -> float | None:
        if not self._restarts:
            return None
        return max(0.0, min(self._restarts.values()) - self._clock())

    def _wait(self, timeout: float | None) -> list[_Child]:
        """Children that became ready or exited (reaped), waiting at most ``timeout``."""
        changed: list[_Child] = []
        for key, _ in self._selector.select(timeout):
            if key.fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 512):
                        pass
                continue
            child: _Child = key.data
            if os.read(child.ready_fd, 64):
                child.ready = True
            else:  # EOF: the child's end closed, so it exited
                self._selector.unregister(child.ready_fd)
                os.close(child.ready_fd)
                del self._children[child.ready_fd]
                _, status = os.waitpid(child.pid, 0)
                child.exit_status = os.waitstatus_to_exitcode(status)
            changed.append(child)
        return changed

    def _stop(self, status: int) -> int:
        """SIGTERM every child and wait for them; SIGKILL on a second signal or timeout."""
        self._restarts.clear()
        self._signal_all(signal.SIGTERM)
        handled = len(self._signals)
        deadline = self._clock() + self._stop_timeout
        killed = False
        while self._children:
            remaining = deadline - self._clock()
            if not killed and (len(self._signals) > handled or remaining <= 0):
                logger.warning("killing the server processes that have not stopped",
                               extra={"pids": self.pids})
                self._signal_all(signal.SIGKILL)
                killed = True
                status = status or GAVE_UP
            for child in self._wait(None if killed else max(remaining, 0.0)):
                if child.exit_status is not None and child.exit_status not in _CLEAN_ENDS:
                    status = status or GAVE_UP
        return status

    def _signal_all(self, signum: int) -> None:
        for child in self._children.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)

    def _spawn(self, slot: int) -> None:
        ready_r, ready_w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns from here
            os.close(ready_r)
            self._child(slot, ready_w, parent)
        os.close(ready_w)
        child = _Child(slot=slot, pid=pid, ready_fd=ready_r)
        self._children[ready_r] = child
        self._selector.register(ready_r, selectors.EVENT_READ, child)
        logger.info("started a server process", extra={"pid": pid, "slot": slot})

    # -- the child ----------------------------------------------------------------------------

    def _child(  # pragma: no cover - in the child
        self, slot: int, ready_w: int, parent: int
    ) -> NoReturn:
        """Run the target in a freshly forked child and exit with its status."""
        status = 1
        try:
            _stop_with(parent)
            # Nothing of the parent's supervision belongs here: default signal handling (the
            # server installs its own), and none of the parent's descriptors but the sockets.
            signal.set_wakeup_fd(-1)
            for signum in _STOP_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            self._selector.close()
            for fd in (self._wake_r, self._wake_w, *self._children):
                os.close(fd)
            said = False

            def ready() -> None:
                nonlocal said
                if not said:
                    said = True
                    os.write(ready_w, b"r")

            status = self._target(slot, ready)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - report anything, then exit with a status
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(status)


def _stop_with(parent: int) -> None:  # pragma: no cover - in the child
    """Have the kernel send this child SIGTERM when the supervisor dies, however it dies
    (SIGKILL, the OOM killer), so that no server keeps the port unsupervised (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
