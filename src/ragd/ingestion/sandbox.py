"""Run a parser on untrusted bytes in a separate, resource-limited process.

The parent (:class:`SandboxPool`) checks the size and, for ZIP-based formats, the archive's
directory, then has its fork server (:mod:`ragd.ingestion.forkserver`: ``python -I -B``, a new
session, a minimal environment, every parser imported) fork a fresh child for the document.
The child caps its own address space, CPU time, file size and process count *before* it reads
the document, installs an audit hook that refuses network access, file writes and process
creation, then runs the parser.

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

from ragd.ingestion.forkserver import Child, ForkServer, ForkServerGone
from ragd.ingestion.limits import ParseLimits, check_zip
from ragd.ingestion.parsers import opens_archive
from ragd.ingestion.parsers.base import (
    FORMATS,
    ParsedDocument,
    ParseError,
    Section,
    SectionKind,
)

if TYPE_CHECKING:
    from asyncio import StreamReader, StreamWriter

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
    """Parse ``data`` with ``target`` in a resource-limited child process (of a fork server
    started for this one call; :class:`SandboxPool` keeps one running).

    ``target`` names the parser as ``"module:function"`` with the signature of
    ``ragd.ingestion.parsers.parse``; ``sys_path`` lists directories the child puts first on
    its import path (tests use it to run parsers defined in the test tree).

    Raises :class:`ParseError`: ``file_too_large`` before any process starts, the codes of
    :func:`~ragd.ingestion.limits.check_zip` for ZIP archives, ``timeout`` when the wall-clock
    limit passes, ``resource_limit`` when the memory or CPU limit is hit, ``parser_crashed``
    when the child dies of another signal or returns malformed output, and the parser's own
    codes otherwise.
    """
    _check_input(data, limits, filename, declared_type)
    pool = SandboxPool(limits, target=target, sys_path=sys_path)
    try:
        return await pool.parse(data, filename=filename, declared_type=declared_type)
    finally:
        await pool.close()


class SandboxPool:
    """Parsing in fresh children of one pre-started fork server (see
    :mod:`ragd.ingestion.forkserver`).

    The fork server has imported every parser; each document is parsed in a new child forked
    from it, which applies its limits before it reads the document and serves exactly that
    one document (never reused, so nothing leaks from one untrusted file to the next). A fork
    costs a millisecond or two where starting an interpreter and importing the parsers cost
    ~50 ms of CPU per document. The wall-clock limit starts when the child is forked. The
    fork server starts with the first document, and stops after ``idle_seconds`` without one
    (it holds ~40 MB) or at :meth:`close`; if it dies, the documents being parsed fail as
    ``parser_crashed`` (retried by the job queue) and the next document starts a new one.
    """

    def __init__(
        self,
        limits: ParseLimits,
        *,
        target: str = DEFAULT_TARGET,
        sys_path: Sequence[str] = (),
        idle_seconds: float = 60.0,
    ) -> None:
        self._limits = limits
        self._idle_seconds = idle_seconds
        config = {
            "target": target,
            "memory_mb": limits.memory_mb,
            "cpu_seconds": limits.cpu_seconds,
            "preload": target == DEFAULT_TARGET,
        }
        self._server = ForkServer(
            f"{__name__}:serve_one", config, prepare=f"{__name__}:prepare",
            sys_path=tuple(str(path) for path in sys_path),
        )
        self._in_flight = 0
        self._last_used = 0.0
        self._expiry: Any = None

    @property
    def server_pid(self) -> int | None:
        """The fork server's pid while it runs."""
        return self._server.pid

    async def parse(
        self, data: bytes, *, filename: str | None, declared_type: str | None
    ) -> ParsedDocument:
        """Like :func:`parse_in_sandbox`, in a child of this pool's fork server."""
        _check_input(data, self._limits, filename, declared_type)
        self._in_flight += 1
        try:
            try:
                child = await self._server.fork()
            except ForkServerGone as exc:
                raise ParseError(
                    f"the parser process could not start ({exc})", code="parser_crashed"
                ) from None
            return await _communicate(
                self._server, child, data, filename, declared_type, self._limits
            )
        finally:
            self._in_flight -= 1
            self._schedule_expiry()

    def _schedule_expiry(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        self._last_used = loop.time()
        if self._expiry is None:
            self._expiry = loop.call_later(self._idle_seconds, self._expire)

    def _expire(self) -> None:
        import asyncio

        self._expiry = None
        loop = asyncio.get_running_loop()
        idle_for = loop.time() - self._last_used
        if self._in_flight or idle_for < self._idle_seconds:
            self._expiry = loop.call_later(self._idle_seconds - idle_for, self._expire)
            return
        # Ingestion has gone quiet: let the fork server's memory go.
        task = asyncio.create_task(self._server.close())
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def close(self) -> None:
        """Stop the fork server; children still parsing are killed."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        await self._server.close()


#: Fork-server shutdowns running in the background (referenced so they are not collected).
_background: set[Any] = set()


def _check_input(
    data: bytes, limits: ParseLimits, filename: str | None, declared_type: str | None
) -> None:
    if len(data) > limits.max_file_bytes:
        raise ParseError(
            f"the file is {len(data) / _MIB:.1f} MB, more than the limit of "
            f"{limits.max_file_bytes / _MIB:.0f} MB",
            code="file_too_large",
        )
    if opens_archive(data, filename, declared_type):
        check_zip(data, limits)


async def _communicate(
    server: ForkServer, child: Child, data: bytes, filename: str | None,
    declared_type: str | None, limits: ParseLimits,
) -> ParsedDocument:
    """Send the document to a forked child, wait for its answer within the time limit, and
    make sure the child is gone afterwards."""
    import asyncio

    header = {"filename": filename, "declared_type": declared_type,
              "options": limits.parser_options()}
    max_output = max(4 * limits.max_file_bytes, _MIB)
    writers: list[StreamWriter] = []
    try:
        async with asyncio.timeout(limits.timeout_seconds):
            reader, writer = await asyncio.open_unix_connection(sock=child.io)
            writers.append(writer)
            errors, error_writer = await asyncio.open_unix_connection(sock=child.err)
            writers.append(error_writer)
            stdout, stderr, _ = await asyncio.gather(
                _read_bounded(reader, max_output, lambda: server.kill(child)),
                _read_tail(errors, _STDERR_TAIL),
                _feed(writer, json.dumps(header).encode() + b"\n", data),
            )
            await child.wait()
    except TimeoutError:
        logger.warning("parser process timed out", extra={"timeout": limits.timeout_seconds})
        raise ParseError(
            f"parsing took longer than the limit of {limits.timeout_seconds:g} seconds",
            code="timeout",
        ) from None
    finally:
        server.kill(child)
        # Reaped by the fork server; SIGKILL cannot be ignored, so this returns promptly.
        returncode = await child.wait()
        for writer in writers:
            writer.close()
        child.close()

    if returncode is None:
        raise ParseError(
            "the parser process was lost with its fork server", code="parser_crashed"
        )
    if stdout is None:
        raise ParseError(
            f"the parser produced more than {max_output // _MIB} MB of output",
            code="parser_crashed",
        )
    if returncode < 0:
        _log_child_failure(returncode, stderr)
        raise _signal_error(-returncode, limits)
    return _decode_result(stdout, returncode, stderr, limits)


async def _feed(stream: StreamWriter, header: bytes, data: bytes) -> None:
    try:
        stream.write(header)
        stream.write(data)
        await stream.drain()
        stream.write_eof()  # the child reads its input to the end
    except (BrokenPipeError, ConnectionResetError, OSError):
        pass  # the child died or stopped reading; its exit status says why


async def _read_bounded(
    stream: StreamReader, limit: int, kill: Callable[[], None]
) -> bytearray | None:
    """Read the child's stdout, or kill the child and return ``None`` once it exceeds ``limit``."""
    output = bytearray()
    while chunk := await _read(stream):
        if len(output) + len(chunk) > limit:
            # Killing also closes its sockets, so the other readers finish at once.
            kill()
            return None
        output += chunk
    return output


async def _read(stream: StreamReader) -> bytes:
    """The next chunk, or ``b""`` at the end: a child that died with input unread resets its
    socket instead of closing it (its exit status says what happened)."""
    try:
        return await stream.read(_READ_CHUNK)
    except ConnectionResetError:
        return b""


async def _read_tail(stream: StreamReader, keep: int) -> bytes:
    """Drain the stream (so the child never blocks on it) and keep its last ``keep`` bytes."""
    tail = b""
    while chunk := await _read(stream):
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


def prepare(config: dict[str, Any]) -> None:
    """In the fork server, before any fork: import the parsers, so no child pays for it."""
    _resolve(str(config["target"]))
    if config.get("preload"):
        from ragd.ingestion.parsers import _parsers

        _parsers(1)


def _resolve(target: str) -> Callable[..., Any]:
    import importlib

    module_name, _, function_name = target.partition(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module_name), function_name)
    return function


def serve_one(config: dict[str, Any]) -> int:
    """In a freshly forked child (fds 0/1 are its input/output socket, fd 2 its stderr): limits
    first, then read the document, parse it and answer on stdout."""
    _apply_rlimits(int(config["memory_mb"]), int(config["cpu_seconds"]))
    sys.setrecursionlimit(_RECURSION_LIMIT)

    import faulthandler

    faulthandler.enable()  # a native crash leaves a traceback on stderr for the debug log
    # Stray print()s of a parser library must not corrupt the result on stdout.
    result_stream = sys.stdout
    sys.stdout = sys.stderr

    # The whole input first: a socket closed with unread input resets, losing the answer.
    payload = sys.stdin.buffer.read()
    result: dict[str, Any]
    try:
        parse = _resolve(str(config["target"]))  # imported by the fork server when it could
        sys.addaudithook(_audit)  # after imports, so module loading is unaffected
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
    # The fork server's child exits with os._exit: no interpreter teardown to wait for.
    return 0

