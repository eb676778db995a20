"""A fork server: one pre-started process that forks a fresh child for every task.

Starting a Python interpreter and importing the parser libraries costs ~50 ms of CPU; paid
once per document, that was a fifth of a 2-core machine while small documents were ingested.
The fork server (the "zygote" of Android and Chromium) pays it once: it imports what the
children need, then waits on a control socket. For every task the parent sends it a pair of
sockets (the child's stdin+stdout and its stderr); the zygote forks, the child moves those
sockets to fds 0, 1 and 2, closes everything else, starts its own session and runs the entry
function (which applies its limits before it reads anything). A child serves one task and
exits: nothing a hostile input does in one child reaches the next, because every child is a
fresh copy of a zygote that never saw any input.

The zygote itself runs ``python -I -B -m ragd.ingestion.forkserver CONFIG`` in a new session
with a minimal environment. Control messages are datagrams on a ``SOCK_SEQPACKET`` pair (one
message per send, file descriptors passed with ``SCM_RIGHTS``):

* parent → zygote: ``F <request>`` with two fds (fork a child), ``K <pid>`` (kill that child's
  process group, if it is still the zygote's unreaped child, so a pid is never reused under us);
* zygote → parent: ``R`` (ready), ``P <request> <pid>`` (forked), ``E <request>`` (the fork
  failed), ``X <pid> <wait status>`` (a child ended and was reaped).

When the parent goes away the control socket closes and the zygote kills its children and
exits; children also get ``SIGKILL`` if the zygote dies (``PR_SET_PDEATHSIG``). If the zygote
dies, the parent kills the process groups of the children it knew and fails their tasks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

__all__ = ["Child", "ForkServer", "ForkServerGone"]

logger = logging.getLogger(__name__)

_MESSAGE = 256


class ForkServerGone(Exception):
    """The zygote died or could not start; the task did not run (or was cut short)."""


@dataclass(eq=False)
class Child:
    """One forked child as the parent sees it: its pid, the parent's ends of its stdin+stdout
    socket and of its stderr socket, and its wait status once the zygote reaped it
    (:class:`ForkServerGone` instead if the zygote died first: the child was killed)."""

    pid: int
    io: socket.socket
    err: socket.socket
    exited: asyncio.Future[int] = field(repr=False)

    @property
    def returncode(self) -> int | None:
        """Like :attr:`subprocess.Popen.returncode` (negative: killed by that signal)."""
        if not self.exited.done() or self.exited.cancelled() or self.exited.exception():
            return None
        return os.waitstatus_to_exitcode(self.exited.result())

    async def wait(self) -> int | None:
        """Wait until the child is gone; its :attr:`returncode`, None if it was lost with its
        fork server."""
        with contextlib.suppress(ForkServerGone):
            await self.exited
        return self.returncode

    def close(self) -> None:
        self.io.close()
        self.err.close()


class ForkServer:
    """The parent's handle on one zygote. Methods run on the event loop; :meth:`start` is
    called lazily by :meth:`fork`."""

    def __init__(self, entry: str, config: Mapping[str, Any], *, prepare: str | None = None,
                 sys_path: tuple[str, ...] = ()) -> None:
        self._config = {"entry": entry, "prepare": prepare, "sys_path": list(sys_path),
                        "config": dict(config)}
        self._process: asyncio.subprocess.Process | None = None
        self._control: socket.socket | None = None
        self._ready: asyncio.Future[None] | None = None
        self._requests: dict[int, asyncio.Future[tuple[int, asyncio.Future[int]]]] = {}
        #: Wait-status futures of the children forked and not yet reaped, by pid.
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._next_request = 0

    @property
    def pid(self) -> int | None:
        """The zygote's pid while it runs."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def running(self) -> int:
        """Children forked and not yet reaped."""
        return len(self._exits)

    async def start(self) -> None:
        """Start the zygote (if it is not running) and wait until it has imported its code."""
        import asyncio

        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            try:
                await self._spawn()
            except BaseException:
                ready, self._ready = self._ready, None
                ready.cancel()
                raise
        await asyncio.shield(self._ready)

    async def _spawn(self) -> None:
        import asyncio

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            config = {**self._config, "control_fd": theirs.fileno()}
            env = {"PATH": os.environ.get("PATH", os.defpath),
                   "LANG": os.environ.get("LANG", "C.UTF-8")}
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-B", "-m", __name__, json.dumps(config),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                env=env, cwd="/", pass_fds=(theirs.fileno(),),
                start_new_session=True,  # the server's terminal signals never reach it
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._control = ours
        asyncio.get_running_loop().add_reader(ours.fileno(), self._on_control)

    async def fork(self) -> Child:
        """A new child, already running the entry function and waiting on its stdin."""
        import asyncio

        await self.start()
        control = self._control
        if control is None:
            raise ForkServerGone("the fork server is not running")
        request = self._next_request = self._next_request + 1
        answer: asyncio.Future[tuple[int, asyncio.Future[int]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._requests[request] = answer
        ours_io, theirs_io = socket.socketpair()
        ours_err, theirs_err = socket.socketpair()
        try:
            try:
                socket.send_fds(control, [b"F %d" % request],
                                [theirs_io.fileno(), theirs_err.fileno()])
            except OSError as exc:
                raise ForkServerGone(f"the fork server is gone ({exc})") from None
            finally:
                theirs_io.close()
                theirs_err.close()
            pid, exited = await answer
        except BaseException:
            self._requests.pop(request, None)
            ours_io.close()
            ours_err.close()
            raise
        return Child(pid, ours_io, ours_err, exited)

    def kill(self, child: Child) -> None:
        """SIGKILL the child's process group, unless it has already been reaped."""
        if child.exited.done() or self._control is None:
            return
        with contextlib.suppress(OSError):
            self._control.send(b"K %d" % child.pid)

    async def close(self) -> None:
        """Stop the zygote (it kills its children) and wait for it."""
        control, self._control = self._control, None
        process, self._process = self._process, None
        ready, self._ready = self._ready, None
        if control is not None:
            import asyncio

            asyncio.get_running_loop().remove_reader(control.fileno())
            control.close()  # the zygote sees EOF: it kills its children and exits
        if process is not None:
            await process.wait()
        self._gone("the fork server was closed")
        if ready is not None and not ready.done():
            ready.cancel()

    def _on_control(self) -> None:
        control = self._control
        if control is None:
            return
        while True:
            try:
                message = control.recv(_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                self._died()
                return
            self._handle(message)

    def _handle(self, message: bytes) -> None:
        kind, *fields = message.split()
        if kind == b"R" and self._ready is not None and not self._ready.done():
            self._ready.set_result(None)
        elif kind == b"P":
            request, pid = int(fields[0]), int(fields[1])
            answer = self._requests.pop(request, None)
            exited: asyncio.Future[int] = _loop().create_future()
            self._exits[pid] = exited
            if answer is not None and not answer.done():
                answer.set_result((pid, exited))
            elif self._control is not None:  # the caller gave up waiting: let the child go
                with contextlib.suppress(OSError):
                    self._control.send(b"K %d" % pid)
        elif kind == b"E":
            answer = self._requests.pop(int(fields[0]), None)
            if answer is not None and not answer.done():
                answer.set_exception(ForkServerGone("the fork server could not fork"))
        elif kind == b"X":
            ended = self._exits.pop(int(fields[0]), None)
            if ended is not None and not ended.done():
                ended.set_result(int(fields[1]))

    def _died(self) -> None:
        """The control socket closed under us: the zygote died."""
        control, self._control = self._control, None
        if control is not None:
            _loop().remove_reader(control.fileno())
            control.close()
        ready, self._ready = self._ready, None
        if ready is not None and not ready.done():  # it died before it was ready
            ready.set_exception(ForkServerGone("the fork server died while starting"))
            ready.exception()  # retrieved here too: a caller may have given up waiting
        logger.warning("the parser fork server died; it is restarted on the next document")
        self._gone("the fork server died")

    def _gone(self, reason: str) -> None:
        for pid, exited in self._exits.items():
            # Orphans now (or about to be): make sure they are gone before anyone waits.
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            if not exited.done():
                exited.set_exception(ForkServerGone(reason))
        self._exits.clear()
        for answer in self._requests.values():
            if not answer.done():
                answer.set_exception(ForkServerGone(reason))
        self._requests.clear()


def _loop() -> asyncio.AbstractEventLoop:
    import asyncio

    return asyncio.get_running_loop()


# --- the zygote ------------------------------------------------------------------------------


def _resolve(target: str) -> Callable[..., Any]:
    import importlib

    module_name, _, function_name = target.partition(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module_name), function_name)
    return function


def _zygote_main(argv: list[str]) -> None:
    import selectors

    options = json.loads(argv[0])
    control = socket.socket(fileno=int(options["control_fd"]))
    sys.path[:0] = [str(path) for path in options["sys_path"]]
    config = options["config"]
    if options.get("prepare"):
        # A failing import is the child's to report (as that task's error), not ours.
        with contextlib.suppress(Exception):
            _resolve(str(options["prepare"]))(config)

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    control.send(b"R")
    while True:
        for key, _ in selector.select():
            if key.fileobj is control:
                message, fds, _, _ = socket.recv_fds(control, _MESSAGE, 2)
                if not message:
                    _stop(children)
                kind, *fields = message.split() or [b""]
                if kind == b"F" and len(fds) == 2:
                    _fork(options["entry"], config, fds, fields[0], control, children)
                elif kind == b"K" and int(fields[0]) in children:
                    _kill(int(fields[0]))
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            else:
                with contextlib.suppress(OSError):
                    os.read(wake_read, 4096)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            control.send(b"X %d %d" % (pid, status))


def _fork(entry: str, config: Mapping[str, Any], fds: list[int], request: bytes,
          control: socket.socket, children: set[int]) -> None:
    try:
        pid = os.fork()
    except OSError:
        control.send(b"E " + request)
        return
    if pid == 0:
        status = 70  # EX_SOFTWARE: the entry function never returned a status
        try:
            _become_child(fds)
            status = int(_resolve(entry)(config))
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(status)
    children.add(pid)
    control.send(b"P %s %d" % (request, pid))


def _become_child(fds: list[int]) -> None:
    """In the fresh child: own session, default signals, the two sockets as fds 0-2, nothing
    else open, and death with the zygote."""
    os.setsid()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _die_with_parent()
    io_fd, err_fd = fds
    os.dup2(io_fd, 0)
    os.dup2(io_fd, 1)
    os.dup2(err_fd, 2)
    os.closerange(3, _max_fd())


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the zygote died before prctl took effect
        os._exit(70)


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        return 4096


def _kill(pid: int) -> None:
    """SIGKILL a child and its process group (the group exists once the child ran setsid)."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


def _stop(children: set[int]) -> None:
    for pid in children:
        _kill(pid)
    os._exit(0)


if __name__ == "__main__":
    _zygote_main(sys.argv[1:])
