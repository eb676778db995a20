"""The parsing sandbox against hostile parsers and hostile archives.

The parsers below run in the sandbox's child process (``target="tests.ingestion.test_sandbox:…"``),
so each one plays a parser that a malicious file has taken over.
"""

from __future__ import annotations

import asyncio
import ctypes
import io
import os
import signal
import socket
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from ragd.ingestion.limits import ParseLimits, check_zip
from ragd.ingestion.parsers.base import ParsedDocument, ParseError, Section
from ragd.ingestion.sandbox import SandboxPool, parse_in_sandbox
from tests.ingestion.generated import deflated_docx
from tests.loop_clock import LoopClock
from tests.shared_data import EVAL, require
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
HERE = "tests.ingestion.test_sandbox"
FAQ = EVAL / "debian-faq" / "source" / "faq"
MIB = 1024 * 1024
FAST = ParseLimits(timeout_seconds=20)

# --- parsers run inside the sandbox ----------------------------------------------------------


def _doc(text: str = "ok") -> ParsedDocument:
    return ParsedDocument(format="text", sections=(Section(text),))


def parse_ok(data: bytes, *, filename: str | None, declared_type: str | None, **_: Any) -> Any:
    print("a chatty library")  # noqa: T201 - must not corrupt the result channel
    return ParsedDocument(
        format="text",
        sections=(
            Section("Grüße, 日本語 and \U0001f600", ("Kapitel 1", "Überblick"), 1, "heading"),
            Section(data.decode(), (), 2, "paragraph"),
            Section(f"{filename}|{declared_type}", kind="code"),
        ),
        title="Tïtle",
        pages=2,
        warnings=("page 3 was empty",),
    )


def parse_allocates(data: bytes, **_: Any) -> Any:
    return bytearray(4 * 1024 * MIB)


def parse_loops(data: bytes, **_: Any) -> Any:
    while True:
        pass


def parse_raises(data: bytes, **_: Any) -> Any:
    raise ParseError("the PDF is encrypted", code="encrypted")


def parse_segfaults(data: bytes, **_: Any) -> Any:
    return ctypes.string_at(0)


def parse_writes_garbage(data: bytes, **_: Any) -> Any:
    os.write(1, b"\x00not json {")
    return _doc()


def parse_floods(data: bytes, **_: Any) -> Any:
    chunk = b"x" * MIB
    for _chunk_number in range(64):
        os.write(1, chunk)
    return _doc()


def parse_writes_file(data: bytes, **_: Any) -> Any:
    with open(data.decode(), "w") as file:
        file.write("pwned")
    return _doc()


def parse_writes_file_natively(data: bytes, **_: Any) -> Any:
    # Below the audit hook: only RLIMIT_FSIZE stops the bytes.
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.open(data, os.O_WRONLY | os.O_CREAT, 0o600)
    written = libc.write(fd, b"pwned", 5)
    return _doc(f"fd={fd} written={written}")


def parse_connects(data: bytes, **_: Any) -> Any:
    with socket.socket() as client:  # an address, so no name lookup (also refused)
        client.settimeout(2)
        client.connect(("127.0.0.1", int(data)))
    return _doc("connected")


def parse_exits(data: bytes, **_: Any) -> Any:
    os._exit(0)


def parse_returns_junk(data: bytes, **_: Any) -> Any:
    return {"format": "text"}


# --- helpers ---------------------------------------------------------------------------------


async def sandboxed(
    target: str, data: bytes = b"hello", limits: ParseLimits = FAST, **kwargs: Any
) -> ParsedDocument:
    return await parse_in_sandbox(
        data,
        filename=kwargs.get("filename", "f.txt"),
        declared_type=kwargs.get("declared_type"),
        limits=limits,
        target=f"{HERE}:{target}",
        sys_path=[str(ROOT)],
    )


def sandbox_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "ragd.ingestion.forkserver" in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture(autouse=True)
def _no_child_left() -> Iterator[None]:
    yield
    assert sandbox_children() == []


@pytest.fixture(scope="module")
def baseline_rss() -> int:
    return int(psutil.Process().memory_info().rss)


@pytest.fixture(autouse=True)
def _record_baseline(baseline_rss: int) -> None:
    """Takes the RSS baseline before the module's first test."""


def zip_of_empty_entries(count: int, declared: int | None = None) -> bytes:
    """A ZIP64 archive of ``count`` empty entries built directly (zipfile would hold ``count``
    ZipInfo objects in this process); ``declared`` lies about the count in the end record."""
    local = bytearray()
    directory = bytearray()
    for index in range(count):
        name = f"{index}.txt".encode()
        offset = len(local)
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0)
        local += name
        directory += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        directory += name
    entries = count if declared is None else declared
    end64 = len(local) + len(directory)
    tail = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, len(directory), len(local)
    )
    tail += struct.pack("<4sLQL", b"PK\x06\x07", 0, end64, 1)
    tail += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(local + directory + tail)


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(zipfile.ZipInfo(name), content, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def deflated_gigabyte() -> bytes:
    """One 1 GiB entry of zeros, streamed through DEFLATE (about 1 MB compressed)."""
    return deflated_docx(1024)


# --- the sandbox -----------------------------------------------------------------------------


async def test_a_normal_parse_returns_the_document_intact() -> None:
    body = "line one\n" + "ünïcødé " * 200_000  # about 2 MB through both pipes
    document = await sandboxed("parse_ok", body.encode(), declared_type="text/plain")

    assert document == ParsedDocument(
        format="text",
        sections=(
            Section("Grüße, 日本語 and \U0001f600", ("Kapitel 1", "Überblick"), 1, "heading"),
            Section(body, (), 2, "paragraph"),
            Section("f.txt|text/plain", kind="code"),
        ),
        title="Tïtle",
        pages=2,
        warnings=("page 3 was empty",),
    )


async def test_a_parser_error_keeps_its_code_and_message() -> None:
    with pytest.raises(ParseError) as caught:
        await sandboxed("parse_raises")
    assert (caught.value.code, caught.value.message) == ("encrypted", "the PDF is encrypted")


async def test_allocating_4_gb_hits_the_memory_limit_not_the_timeout() -> None:
    with pytest.raises(ParseError) as caught:
        await sandboxed("parse_allocates")
    # The memory limit stopped it (a timeout would say "timeout" and name its seconds).
    assert caught.value.code == "resource_limit"
    assert "memory limit of 1024 MB" in caught.value.message


async def test_an_endless_loop_times_out_and_the_child_is_gone() -> None:
    task = asyncio.create_task(sandboxed("parse_loops", limits=ParseLimits(timeout_seconds=2)))
    seen: list[psutil.Process] = []

    def child_seen_or_done() -> bool:
        seen.extend(sandbox_children())
        return bool(seen) or task.done()

    await eventually(child_seen_or_done, what="the parser child running")
    with pytest.raises(ParseError) as caught:
        await task
    assert caught.value.code == "timeout"
    assert "2 seconds" in caught.value.message
    assert seen, "the child process was never observed"
    for child in seen:
        with pytest.raises(ProcessLookupError):
            os.kill(child.pid, 0)


async def test_cpu_time_is_limited() -> None:
    with pytest.raises(ParseError) as caught:
        await sandboxed("parse_loops", limits=ParseLimits(timeout_seconds=20, cpu_seconds=1))
    assert caught.value.code == "resource_limit"
    assert "CPU time limit of 1 seconds" in caught.value.message


async def test_a_segfault_becomes_a_parse_error() -> None:
    with pytest.raises(ParseError) as caught:
        await sandboxed("parse_segfaults")
    assert caught.value.code == "parser_crashed"
    assert "SIGSEGV" in caught.value.message


async def test_garbage_on_stdout_is_rejected() -> None:
    with pytest.raises(ParseError) as caught:
        await sandboxed("parse_writes_garbage")
    assert caught.value.code == "parser_crashed"


async def test_a_result_that_is_not_a_document_is_rejected() -> None:
    with pytest.raises(ParseError) as caught:
        await sandboxed("parse_returns_junk")
    assert caught.value.code == "parse_failed"
    assert "dict" in caught.value.message


async def test_a_child_that_exits_without_answering_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as caught:
        await sandboxed("parse_exits")
    assert caught.value.code == "parser_crashed"


async def test_an_unknown_target_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as caught:
        await sandboxed("no_such_parser")
    assert caught.value.code == "parse_failed"
    assert "AttributeError" in caught.value.message


async def test_huge_output_is_cut_off() -> None:
    limits = ParseLimits(timeout_seconds=20, max_file_bytes=MIB)  # output bound: 4 MiB
    with pytest.raises(ParseError) as caught:
        await sandboxed("parse_floods", limits=limits)
    assert caught.value.code == "parser_crashed"
    assert "more than 4 MB of output" in caught.value.message


async def test_writing_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    with pytest.raises(ParseError) as caught:
        await sandboxed("parse_writes_file", str(target).encode())
    assert "writing files is not allowed" in caught.value.message
    assert not target.exists()


async def test_native_file_writes_are_stopped_by_the_file_size_limit(tmp_path: Path) -> None:
    target = tmp_path / "native.txt"
    document = await sandboxed("parse_writes_file_natively", str(target).encode())
    assert "written=-1" in document.text
    assert not target.exists() or target.stat().st_size == 0


async def test_network_connections_are_blocked() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]

        with pytest.raises(ParseError) as caught:
            await sandboxed("parse_connects", str(port).encode())
        assert "socket.connect is not allowed" in caught.value.message
        with pytest.raises(BlockingIOError):
            server.accept()


async def test_an_oversized_file_is_refused_before_spawning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_spawn(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a process was started")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", no_spawn)
    with pytest.raises(ParseError) as caught:
        await sandboxed("parse_ok", b"x" * 2049, ParseLimits(max_file_bytes=2048))
    assert caught.value.code == "file_too_large"


async def test_cancelling_the_caller_kills_the_child() -> None:
    task = asyncio.create_task(sandboxed("parse_loops"))
    children = await eventually(sandbox_children, what="the parser child running")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for child in children:
        with pytest.raises(ProcessLookupError):
            os.kill(child.pid, 0)


# --- ZIP archives ----------------------------------------------------------------------------


def test_a_small_office_archive_passes() -> None:
    data = zip_of(
        {
            "[Content_Types].xml": b"<Types/>",
            "word/document.xml": b"<w:document>" + b"<w:p>text</w:p>" * 5000 + b"</w:document>",
            "word/embeddings/Microsoft_Excel_Worksheet.xlsx": zip_of({"x.xml": b"<x/>"}),
        }
    )
    check_zip(data, ParseLimits())


def test_the_entry_builder_makes_archives_zipfile_reads() -> None:
    archive = zipfile.ZipFile(io.BytesIO(zip_of_empty_entries(1000)))  # read as ZIP64
    assert [info.filename for info in archive.infolist()][-1] == "999.txt"


async def test_100k_entries_is_too_large() -> None:
    with pytest.raises(ParseError) as caught:
        await sandboxed("parse_ok", zip_of_empty_entries(100_000), filename="f.docx")
    assert caught.value.code == "archive_too_large"
    assert "100000 entries" in caught.value.message


def test_a_directory_that_lies_about_its_count_is_a_bomb() -> None:
    with pytest.raises(ParseError) as caught:
        check_zip(zip_of_empty_entries(30_000, declared=10), ParseLimits())
    assert caught.value.code == "archive_bomb"


async def test_a_gigabyte_of_deflated_zeros_is_a_bomb(deflated_gigabyte: bytes) -> None:
    assert len(deflated_gigabyte) < 2 * MIB
    with pytest.raises(ParseError) as caught:
        await sandboxed("parse_ok", deflated_gigabyte, filename="bomb.docx")
    assert caught.value.code == "archive_too_large"  # 1 GiB > 500 MiB, before the ratio


def test_a_high_ratio_under_the_size_limit_is_a_bomb(deflated_gigabyte: bytes) -> None:
    limits = ParseLimits(zip_max_total_uncompressed=2048 * MIB)
    with pytest.raises(ParseError) as caught:
        check_zip(deflated_gigabyte, limits)
    assert caught.value.code == "archive_bomb"
    assert "word/document.xml" in caught.value.message


@pytest.mark.parametrize(
    "name", ["../../etc/cron.d/job", "word/../../x.xml", "C:/Windows/x.xml", "word\\..\\..\\x"]
)
def test_entry_names_that_climb_out_are_refused(name: str) -> None:
    data = zip_of({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>", name: b"x"})
    with pytest.raises(ParseError) as caught:
        check_zip(data, ParseLimits())
    assert caught.value.code == "archive_bomb"
    assert "unsafe entry name" in caught.value.message


def test_nested_zip_archives_are_refused() -> None:
    data = zip_of({"word/document.xml": b"<w/>", "word/media/inner.zip": zip_of({"a": b"a"})})
    with pytest.raises(ParseError) as caught:
        check_zip(data, ParseLimits())
    assert caught.value.code == "archive_bomb"


def test_a_truncated_archive_is_a_parse_error() -> None:
    with pytest.raises(ParseError) as caught:
        check_zip(zip_of({"a.xml": b"<a/>"})[:-10], ParseLimits())
    assert caught.value.code == "parse_failed"


# --- the real parser -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected_format"),
    [
        ("txt/debian-faq.en.txt", "text"),
        ("html/basic-defs.en.html", "html"),
        ("pdf/debian-faq.en.pdf", "pdf"),
    ],
)
async def test_the_real_parser_runs_in_the_sandbox(path: str, expected_format: str) -> None:
    source = require(FAQ / path)
    document = await parse_in_sandbox(
        source.read_bytes(), filename=source.name, declared_type=None, limits=ParseLimits()
    )
    assert document.format == expected_format
    assert "Debian" in document.text
    assert len(document.sections) > 1


# --- the caller ------------------------------------------------------------------------------


def test_zz_the_callers_memory_stays_bounded(baseline_rss: int) -> None:
    """Runs last in this module: what the children allocate on purpose (4 GiB, a 1 GiB
    decompression) never shows up in this process. The bound is a quarter of the smallest of
    those, far above the allocator's noise (tens of MB, depending on what the suite ran
    before: 60 MB was seen), far below any of them held here."""
    grown = psutil.Process().memory_info().rss - baseline_rss
    assert grown < 256 * MIB, f"RSS grew by {grown / MIB:.0f} MB"


# --- the pool: one fork server, a fresh child per document -------------------------------------


_REMEMBERED: list[int] = []


def parse_reports_process(data: bytes, **_: Any) -> Any:
    """Reports its pid, its parent's and how many documents this process has seen."""
    _REMEMBERED.append(1)
    return _doc(f"{os.getpid()} {os.getppid()} {len(_REMEMBERED)}")


async def test_pool_serves_each_document_from_a_fresh_child_of_one_fork_server() -> None:
    pool = SandboxPool(FAST, target=f"{HERE}:parse_reports_process", sys_path=[str(ROOT)])
    try:
        answers = [
            (await pool.parse(b"x", filename="f.txt", declared_type=None)).text.split()
            for _ in range(4)
        ]
        server = pool.server_pid
        assert server is not None
        pids = {int(pid) for pid, _, _ in answers}
        assert len(pids) == 4 and server not in pids, "one new process per document"
        assert {int(parent) for _, parent, _ in answers} == {server}, "all forked by the server"
        # Each child is a copy of a server that never parsed anything: nothing carries over.
        assert {seen for _, _, seen in answers} == {"1"}
    finally:
        await pool.close()
    assert pool.server_pid is None
    assert sandbox_children() == []


async def test_pool_parses_the_real_files_like_a_one_off_sandbox() -> None:
    pool = SandboxPool(FAST)
    try:
        html = sorted(require(FAQ / "html").glob("*.html"))[:3]
        for path in html:
            expected = await parse_in_sandbox(
                path.read_bytes(), filename=path.name, declared_type=None, limits=FAST
            )
            found = await pool.parse(path.read_bytes(), filename=path.name, declared_type=None)
            assert found == expected
    finally:
        await pool.close()


async def test_pool_children_keep_every_limit() -> None:
    pool = SandboxPool(FAST, target=f"{HERE}:parse_allocates", sys_path=[str(ROOT)])
    try:
        for _ in range(2):  # the second one is forked from the same server
            with pytest.raises(ParseError) as caught:
                await pool.parse(b"x", filename="f.txt", declared_type=None)
            assert caught.value.code == "resource_limit"
        with pytest.raises(ParseError) as too_big:
            await pool.parse(b"x" * (FAST.max_file_bytes + 1), filename="f.txt",
                             declared_type=None)
        assert too_big.value.code == "file_too_large"
    finally:
        await pool.close()
    assert sandbox_children() == []


async def test_concurrent_documents_run_in_separate_children() -> None:
    pool = SandboxPool(FAST, target=f"{HERE}:parse_reports_process", sys_path=[str(ROOT)])
    try:
        documents = await asyncio.gather(*(
            pool.parse(b"x", filename="f.txt", declared_type=None) for _ in range(6)
        ))
        assert len({document.text.split()[0] for document in documents}) == 6
    finally:
        await pool.close()


async def test_a_dead_fork_server_fails_its_documents_and_is_restarted() -> None:
    pool = SandboxPool(FAST, target=f"{HERE}:parse_loops", sys_path=[str(ROOT)])
    try:
        task = asyncio.create_task(pool.parse(b"x", filename="f.txt", declared_type=None))
        await eventually(lambda: len(sandbox_children()) == 2 or task.done(),
                         what="the fork server and its child running")
        server = pool.server_pid
        assert server is not None
        children = sandbox_children()
        os.kill(server, signal.SIGKILL)
        with pytest.raises(ParseError) as caught:
            await task
        assert caught.value.code == "parser_crashed"
        for child in children:  # the orphaned child was killed too
            await eventually(lambda child=child: not child.is_running()
                             or child.status() == psutil.STATUS_ZOMBIE,
                             what=f"process {child.pid} gone")
    finally:
        await pool.close()
    restarted = SandboxPool(FAST, target=f"{HERE}:parse_reports_process", sys_path=[str(ROOT)])
    try:
        document = await restarted.parse(b"x", filename="f.txt", declared_type=None)
        assert document.text.split()[2] == "1"
    finally:
        await restarted.close()


async def test_the_pool_restarts_its_fork_server_after_it_died() -> None:
    pool = SandboxPool(FAST, target=f"{HERE}:parse_reports_process", sys_path=[str(ROOT)])
    try:
        await pool.parse(b"x", filename="f.txt", declared_type=None)
        first = pool.server_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await eventually(lambda: pool.server_pid != first, what="the death noticed")
        document = await pool.parse(b"x", filename="f.txt", declared_type=None)
        assert int(document.text.split()[1]) not in (first, None)
    finally:
        await pool.close()


async def test_an_idle_fork_server_stops(loop_clock: LoopClock) -> None:
    pool = SandboxPool(FAST, idle_seconds=60)
    try:
        await pool.parse(b"hello", filename="f.txt", declared_type=None)
        assert sandbox_children(), "the fork server is running"
        loop_clock.advance(30)
        await asyncio.sleep(0)
        assert pool.server_pid is not None, "not idle for long enough yet"
        loop_clock.advance(31)  # idle for longer than idle_seconds
        await eventually(lambda: pool.server_pid is None and sandbox_children() == [],
                         what="the idle fork server gone")
        # The next document starts a new one.
        document = await pool.parse(b"hello", filename="f.txt", declared_type="text/plain")
        assert "hello" in document.text
    finally:
        await pool.close()


def prepare_dies(config: dict[str, Any]) -> None:
    os._exit(1)


async def test_a_fork_server_that_dies_while_starting_fails_the_parse() -> None:
    from ragd.ingestion.forkserver import ForkServer, ForkServerGone

    server = ForkServer("ragd.ingestion.sandbox:serve_one", {}, prepare=f"{HERE}:prepare_dies",
                        sys_path=(str(ROOT),))
    try:
        with pytest.raises(ForkServerGone):
            await server.fork()
    finally:
        await server.close()
