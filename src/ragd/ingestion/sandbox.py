"""Run a parser on untrusted bytes in a separate, resource-limited process.

The parent (:func:`parse_in_sandbox`) checks the size and, for ZIP-based formats, the archive's
directory, then starts ``python -I -B -m ragd.ingestion.sandbox`` in a new session with a
minimal environment. The child caps its own address space, CPU time, file size and process
count *before* it reads the document, installs an audit hook that refuses network access,
file writes and process creation, then imports the parser and runs it.

Protocol: the parent writes one JSON header line and then the raw bytes to the child's stdin;
the child writes exactly one JSON object to stdout, ``{"ok": true, "document": {...}}`` or
``{"ok": false, "error": {"code", "message"}}``. The parent reads at most a bounded number of
bytes, validates the object field by field (never unpickles anything from the child) and maps
timeouts, signals and malformed output to :class:`ParseError`. Whatever the child does, the
caller gets a :class:`ParsedDocument` or a :class:`ParseError`, and no child outlives the call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, get_args

from ragd.ingestion.limits import ParseLimits, check_zip
from ragd.ingestion.parsers.base import (
    FORMATS,
    ParsedDocument,
    ParseError,
    Section,
    SectionKind,
)

if TYPE_CHECKING:
    from asyncio import StreamReader, StreamWriter
    from asyncio.subprocess import Process

__all__ = ["DEFAULT_TARGET", "SandboxPool", "parse_in_sandbox"]

logger = logging.getLogger(__name__)

#: The parser entry point the child runs, as ``"module:function"``.
DEFAULT_TARGET = "ragd.ingestion.parsers:parse"

_MIB = 1024 * 1024
_READ_CHUNK = 64 * 1024
_STDERR_TAIL = 8 * 1024
#: Python-level recursion in the child: enough for nested documents, low enough that a
#: pathological one ends in RecursionError rather than overflowing the C stack.
_RECURSION_LIMIT = 3000
#: Seconds between RLIMIT_CPU's soft limit (SIGXCPU) and its hard limit (SIGKILL).
_CPU_GRACE_SECONDS = 2
_MAX_MESSAGE = 500
_CODE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")
_SECTION_KINDS: frozenset[str] = frozenset(get_args(SectionKind))


async def parse_in_sandbox(
    data: bytes,
    *,
    filename: str | None,
    declared_type: str | None,
    limits: ParseLimits,
    target: str = DEFAULT_TARGET,
    sys_path: Sequence[str] = (),
) -> ParsedDocument:
    """Parse ``data`` with ``target`` in a resource-limited child process.

    ``target`` names the parser as ``"module:function"`` with the signature of
    ``ragd.ingestion.parsers.parse``; ``sys_path`` lists directories the child puts first on
    its import path (tests use it to run parsers defined in the test tree).

    Raises :class:`ParseError`: ``file_too_large`` before any process starts, the codes of
    :func:`~ragd.ingestion.limits.check_zip` for ZIP archives, ``timeout`` when the wall-clock
    limit passes, ``resource_limit`` when the memory or CPU limit is hit, ``parser_crashed``
    when the child dies of another signal or returns malformed output, and the parser's own
    codes otherwise.
    """
    _check_input(data, limits)
    process = await _spawn(limits, target, sys_path)
    return await _communicate(process, data, filename, declared_type, limits)


class SandboxPool:
    """Parser children started ahead of need, so a parse does not wait for a Python start.

    Each idle child has already applied its limits and imported every parser, and waits for
    its input on stdin; it serves exactly one document and exits (never reused, so nothing
    leaks from one untrusted file to the next). At most ``size`` children wait at a time;
    taking one starts its replacement in the background. The wall-clock limit starts when
    the document is sent. Idle children die with the parent (their stdin closes) or at
    :meth:`close`.
    """

    def __init__(
        self,
        limits: ParseLimits,
        *,
        size: int,
        target: str = DEFAULT_TARGET,
        sys_path: Sequence[str] = (),
        idle_seconds: float = 60.0,
    ) -> None:
        self._limits = limits
        self._idle_seconds = idle_seconds
        self._size = max(0, size)
        self._target = target
        self._sys_path = tuple(sys_path)
        self._idle: list[Process] = []
        self._starting: set[Any] = set()
        self._closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def parse(
        self, data: bytes, *, filename: str | None, declared_type: str | None
    ) -> ParsedDocument:
        """Like :func:`parse_in_sandbox`, with a child from the pool when one is ready."""
        _check_input(data, self._limits)
        process = None
        while self._idle and process is None:
            candidate = self._idle.pop()
            if candidate.returncode is None:
                process = candidate
            else:
                await candidate.wait()
        if process is None:
            process = await self._start()
        self._refill()
        return await _communicate(process, data, filename, declared_type, self._limits)

    async def _start(self) -> Process:
        return await _spawn(
            self._limits, self._target, self._sys_path,
            preload=self._target == DEFAULT_TARGET,
        )

    def _refill(self) -> None:
        import asyncio

        missing = self._size - len(self._idle) - len(self._starting)
        for _ in range(max(0, missing)):
            task = asyncio.create_task(self._start_idle())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _start_idle(self) -> None:
        import asyncio

        try:
            process = await self._start()
        except OSError:
            logger.warning("could not pre-start a parser process", exc_info=True)
            return
        if self._closed:
            await _discard(process)
            return
        self._idle.append(process)
        # A waiting child holds memory (~40 MB): let it go when ingestion has gone quiet.
        asyncio.get_running_loop().call_later(self._idle_seconds, self._expire, process)

    def _expire(self, process: Process) -> None:
        import asyncio

        if process in self._idle:
            self._idle.remove(process)
            task = asyncio.create_task(_discard(process))
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def close(self) -> None:
        """Kill the waiting children (and those being started)."""
        import asyncio

        self._closed = True
        for task in list(self._starting):
            task.cancel()
        for task in list(self._starting):
            try:
                await task
            except asyncio.CancelledError:
                pass
        idle, self._idle = self._idle, []
        for process in idle:
            await _discard(process)


async def _discard(process: Process) -> None:
    _kill_group(process.pid, process.returncode)
    await process.wait()


def _check_input(data: bytes, limits: ParseLimits) -> None:
    if len(data) > limits.max_file_bytes:
        raise ParseError(
            f"the file is {len(data) / _MIB:.1f} MB, more than the limit of "
            f"{limits.max_file_bytes / _MIB:.0f} MB",
            code="file_too_large",
        )
    if data.startswith(b"PK"):
        check_zip(data, limits)


async def _spawn(
    limits: ParseLimits, target: str, sys_path: Sequence[str], *, preload: bool = False
) -> Process:
    """Start a child that applies its limits, imports the parser and waits for its input."""
    import asyncio  # only the parent needs it; the child starts faster without it

    config = {
        "target": target,
        "memory_mb": limits.memory_mb,
        "cpu_seconds": limits.cpu_seconds,
        "sys_path": list(sys_path),
        "preload": preload,
    }
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": os.environ.get("LANG", "C.UTF-8")}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",  # isolated: no PYTHON* variables, no user site, no cwd on sys.path
        "-B",  # no .pyc writes (file writes are refused anyway)
        "-m",
        __name__,
        json.dumps(config),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd="/",
        start_new_session=True,  # its own process group, so a timeout kills everything
    )


async def _communicate(
    process: Process, data: bytes, filename: str | None, declared_type: str | None,
    limits: ParseLimits,
) -> ParsedDocument:
    """Send the document to a started child, wait for its answer within the time limit,
    and make sure the child is gone afterwards."""
    import asyncio

    header = {"filename": filename, "declared_type": declared_type,
              "options": limits.parser_options()}
    max_output = max(4 * limits.max_file_bytes, _MIB)
    try:
        async with asyncio.timeout(limits.timeout_seconds):
            stdout, stderr, _ = await asyncio.gather(
                _read_bounded(process, max_output),
                _read_tail(process.stderr, _STDERR_TAIL),
                _feed(process.stdin, json.dumps(header).encode() + b"\n", data),
            )
            returncode = await process.wait()
    except TimeoutError:
        logger.warning("parser process timed out", extra={"timeout": limits.timeout_seconds})
        raise ParseError(
            f"parsing took longer than the limit of {limits.timeout_seconds:g} seconds",
            code="timeout",
        ) from None
    finally:
        _kill_group(process.pid, process.returncode)
        # Reap it so no zombie is left; SIGKILL cannot be ignored, so this returns promptly.
        await process.wait()

    if stdout is None:
        raise ParseError(
            f"the parser produced more than {max_output // _MIB} MB of output",
            code="parser_crashed",
        )
    if returncode < 0:
        _log_child_failure(returncode, stderr)
        raise _signal_error(-returncode, limits)
    return _decode_result(stdout, returncode, stderr, limits)


def _kill_group(pid: int, returncode: int | None) -> None:
    # While the child is unreaped its pid (and so its process group id) cannot be reused.
    if returncode is None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def _feed(stream: StreamWriter | None, header: bytes, data: bytes) -> None:
    assert stream is not None  # noqa: S101 - created with stdin=PIPE
    try:
        stream.write(header)
        stream.write(data)
        await stream.drain()
        stream.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child died or stopped reading; its exit status says why


async def _read_bounded(process: Process, limit: int) -> bytearray | None:
    """Read the child's stdout, or kill the child and return ``None`` once it exceeds ``limit``."""
    stream = process.stdout
    assert stream is not None  # noqa: S101 - created with stdout=PIPE
    output = bytearray()
    while chunk := await stream.read(_READ_CHUNK):
        if len(output) + len(chunk) > limit:
            # Killing also closes stderr and stdin, so the other readers finish at once.
            _kill_group(process.pid, process.returncode)
            return None
        output += chunk
    return output


async def _read_tail(stream: StreamReader | None, keep: int) -> bytes:
    """Drain the stream (so the child never blocks on it) and keep its last ``keep`` bytes."""
    assert stream is not None  # noqa: S101 - created with stderr=PIPE
    tail = b""
    while chunk := await stream.read(_READ_CHUNK):
        tail = (tail + chunk)[-keep:]
    return tail


def _signal_error(signum: int, limits: ParseLimits) -> ParseError:
    if signum == signal.SIGXCPU:
        return ParseError(
            f"parsing used more than the CPU time limit of {limits.cpu_seconds} seconds",
            code="resource_limit",
        )
    if signum == signal.SIGKILL:
        # Not sent by us (we only kill after a timeout): the hard CPU limit or the kernel's
        # out-of-memory killer.
        return ParseError(
            f"the parser was killed after reaching the memory limit of {limits.memory_mb} MB "
            f"or the CPU time limit of {limits.cpu_seconds} seconds",
            code="resource_limit",
        )
    name = signal.Signals(signum).name if signum in signal.valid_signals() else str(signum)
    return ParseError(
        f"the parser crashed ({name}); the file may be malformed or need more than the "
        f"memory limit of {limits.memory_mb} MB",
        code="parser_crashed",
    )


def _log_child_failure(returncode: int, stderr: bytes) -> None:
    # stderr can quote document content, so it is logged only at debug level.
    logger.warning("parser process failed", extra={"returncode": returncode})
    logger.debug("parser process stderr", extra={"stderr": stderr.decode("utf-8", "replace")})


def _decode_result(
    stdout: bytearray, returncode: int, stderr: bytes, limits: ParseLimits
) -> ParsedDocument:
    try:
        result = json.loads(stdout.decode("utf-8"))
        if not isinstance(result, dict):
            raise ValueError("not an object")
        if result.get("ok") is True and returncode == 0:
            return _document_from_json(result["document"])
        if result.get("ok") is False:
            error = result["error"]
            code = error["code"] if isinstance(error.get("code"), str) else ""
            message = error["message"] if isinstance(error.get("message"), str) else ""
            if not _CODE_PATTERN.fullmatch(code):
                code = "parse_failed"
            if code == "resource_limit":
                message = f"parsing needed more than the memory limit of {limits.memory_mb} MB"
            raise ParseError(message[:_MAX_MESSAGE] or "the file cannot be parsed", code=code)
        raise ValueError("unexpected result")
    except ParseError:
        raise
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        _log_child_failure(returncode, stderr)
        raise ParseError(
            "the parser failed without a usable result", code="parser_crashed"
        ) from exc


def _document_to_json(document: ParsedDocument) -> dict[str, Any]:
    return {
        "format": document.format,
        "title": document.title,
        "pages": document.pages,
        "warnings": list(document.warnings),
        "sections": [
            {
                "text": section.text,
                "heading_path": list(section.heading_path),
                "page": section.page,
                "kind": section.kind,
            }
            for section in document.sections
        ],
    }


def _document_from_json(raw: Any) -> ParsedDocument:
    """Rebuild a ParsedDocument from the child's JSON, checking every field's type."""
    if not isinstance(raw, dict):
        raise TypeError("document is not an object")
    format_ = raw["format"]
    if format_ not in FORMATS:
        raise ValueError(f"unknown format {format_!r}")
    sections = tuple(_section_from_json(item) for item in _list(raw["sections"]))
    return ParsedDocument(
        format=format_,
        sections=sections,
        title=_optional_str(raw.get("title")),
        pages=_optional_int(raw.get("pages")),
        warnings=tuple(_str(item) for item in _list(raw.get("warnings", []))),
    )


def _section_from_json(raw: Any) -> Section:
    if not isinstance(raw, dict):
        raise TypeError("section is not an object")
    kind = raw.get("kind", "paragraph")
    if kind not in _SECTION_KINDS:
        raise ValueError(f"unknown section kind {kind!r}")
    return Section(
        text=_str(raw["text"]),
        heading_path=tuple(_str(item) for item in _list(raw.get("heading_path", []))),
        page=_optional_int(raw.get("page")),
        kind=kind,
    )


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError("expected a string or null")
    return value


def _optional_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer or null")
    return int(value)


# --- the child -------------------------------------------------------------------------------

#: Audit events the child refuses: network, process creation, signals to other processes and
#: filesystem changes. Defence in depth behind the rlimits, not a security boundary on its own
#: (native code can bypass audit hooks).
_DENIED_EVENTS = frozenset(
    {
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.kill",
        "os.killpg",
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.mkdir",
        "os.symlink",
        "os.link",
        "os.truncate",
        "os.chmod",
        "os.chown",
        "shutil.rmtree",
    }
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in _DENIED_EVENTS:
        raise PermissionError(f"{event} is not allowed while parsing")
    if event == "open" and not isinstance(args[0], int):
        mode, flags = args[1], args[2]
        writes = (
            any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
        )
        if writes:
            raise PermissionError("writing files is not allowed while parsing")


def _apply_rlimits(memory_mb: int, cpu_seconds: int) -> None:
    import resource

    memory = memory_mb * _MIB
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + _CPU_GRACE_SECONDS))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Counts every process of the user, so 0 forbids fork and threads (ignored for root).
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))


def _resolve(target: str) -> Callable[..., Any]:
    import importlib

    module_name, _, function_name = target.partition(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module_name), function_name)
    return function


def _child_main(argv: Sequence[str]) -> int:
    """Entry point of the child: limits first, then read, parse and answer on stdout."""
    config = json.loads(argv[0])
    _apply_rlimits(int(config["memory_mb"]), int(config["cpu_seconds"]))
    sys.path[:0] = [str(path) for path in config["sys_path"]]
    sys.setrecursionlimit(_RECURSION_LIMIT)

    import faulthandler

    faulthandler.enable()  # a native crash leaves a traceback on stderr for the debug log
    # Stray print()s of a parser library must not corrupt the result on stdout.
    result_stream = sys.stdout
    sys.stdout = sys.stderr

    result: dict[str, Any]
    try:
        parse = _resolve(str(config["target"]))
        if config.get("preload"):
            # A pre-started child imports every parser while it waits, not after the input.
            from ragd.ingestion.parsers import _parsers

            _parsers(1)
        sys.addaudithook(_audit)  # after imports, so module loading is unaffected
        payload = sys.stdin.buffer.read()
        header_line, _, data = payload.partition(b"\n")
        header = json.loads(header_line)
        document = parse(
            data,
            filename=header["filename"],
            declared_type=header["declared_type"],
            **header["options"],
        )
        if not isinstance(document, ParsedDocument):
            raise TypeError(f"the parser returned {type(document).__name__}")
        result = {"ok": True, "document": _document_to_json(document)}
    except ParseError as exc:
        result = {"ok": False, "error": {"code": exc.code, "message": exc.message}}
    except MemoryError:
        result = {"ok": False, "error": {"code": "resource_limit", "message": "memory"}}
    except RecursionError:
        result = {
            "ok": False,
            "error": {"code": "parse_failed", "message": "the document is nested too deeply"},
        }
    except Exception as exc:  # noqa: BLE001 - any parser failure becomes a job error
        detail = f"{type(exc).__name__}: {exc}"[:300]
        result = {
            "ok": False,
            "error": {"code": "parse_failed", "message": f"the file cannot be parsed ({detail})"},
        }
    # Lone surrogates from a sloppy decoder become "?", one character for one.
    encoded = json.dumps(result, ensure_ascii=False).encode("utf-8", "replace")
    result_stream.buffer.write(encoded)
    result_stream.buffer.flush()
    return 0


if __name__ == "__main__":
    status = _child_main(sys.argv[1:])
    sys.stderr.flush()
    # The answer is written and flushed: skip the interpreter's teardown (tens of ms with
    # the parser libraries loaded), which the parent would otherwise wait for.
    os._exit(status)
