"""Hostile uploads through the HTTP API and the worker (parsing in the sandbox child).

Every hostile file must end in a clear 4xx at upload time or in a failed job with a
meaningful error (or, for the XML entity tricks, a job whose chunks show the attack did
nothing), and the server must keep working and keep its memory: the app runs in this process
over ASGI, so this process's RSS is the server's (parsing happens in child processes).

The generators are the ideas of test_parsers.py and test_sandbox.py, sent through the API.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from ragd.app import UPLOAD_OVERHEAD_BYTES
from ragd.settings import Settings
from tests.conftest import assert_error
from tests.ingestion.conftest import (
    Tenant,
    all_chunks,
    client_for,
    ingest_settings,
    new_tenant,
    upload_file,
    upload_text,
    wait_job,
)
from tests.ingestion.generated import deflated_docx, pdf_of

MIB = 1024 * 1024
MAX_PAGES = 500
RSS_BUDGET = 200 * MIB
_PASSWD = Path("/etc/passwd")
PASSWD_FIRST_LINE = (
    _PASSWD.read_text(encoding="utf-8", errors="replace").splitlines()[0]
    if _PASSWD.is_file() and _PASSWD.stat().st_size
    else "root:x:0:0"
)


# --- generators ------------------------------------------------------------------------------


def docx_zip_bomb() -> bytes:
    """A DOCX whose word/document.xml is 300 MB of zeros, deflated to ~300 KB."""
    return deflated_docx(300)


def zip_of_many_entries(count: int) -> bytes:
    """A ZIP64 archive of word/document.xml plus ``count`` empty entries, built directly
    (zipfile would hold ``count`` ZipInfo objects in this process)."""
    names = [b"word/document.xml"] + [f"{index}.txt".encode() for index in range(count)]
    local = bytearray()
    directory = bytearray()
    for name in names:
        offset = len(local)
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0)
        local += name
        directory += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        directory += name
    entries = len(names)
    end64 = len(local) + len(directory)
    tail = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, len(directory), len(local)
    )
    tail += struct.pack("<4sLQL", b"PK\x06\x07", 0, end64, 1)
    tail += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(local + directory + tail)


def nested_flate_pdf_bomb() -> bytes:
    inner = zlib.compressobj(9)
    chunk = b"0 0 m " * (MIB // 6)
    compressed = b"".join(inner.compress(chunk) for _ in range(40)) + inner.flush()
    stream = zlib.compress(compressed, 9)
    return pdf_of([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter [/FlateDecode /FlateDecode] >>\nstream\n%s\nendstream"
        % (len(stream), stream),
    ])  # fmt: skip


def many_pages_pdf(pages: int) -> bytes:
    """``pages`` pages sharing one font; page N says "marker page N"."""
    font, first_page = 3, 4
    kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, pages),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for index in range(pages):
        content = b"BT /F1 12 Tf 72 700 Td (marker page %d) Tj ET" % (index + 1)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
            % (font, first_page + 2 * index + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    return pdf_of(objects)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE html [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<html><body><p>laughs &lol9; here</p><p>after the laughs</p></body></html>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE html [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<html><body><p>start &xxe; end</p><p>xxe trailer paragraph</p></body></html>"""


def deeply_nested_html(depth: int = 100_000) -> bytes:
    return ("<html><body>" + "<div>" * depth + "deep text" + "</div>" * depth
            + "</body></html>").encode()  # fmt: skip


# --- helpers ---------------------------------------------------------------------------------


def hostile_settings(data_dir: Path) -> Settings:
    """One attempt per job (the transient parse codes would otherwise be retried three times),
    a short parse timeout, a small page cap, no keyword extraction (speed)."""
    return ingest_settings(
        data_dir,
        ingestion={
            "max_attempts": 1,
            "parse_timeout_seconds": 20,
            "max_pages": MAX_PAGES,
            "keywords_enabled": False,
        },
    )


async def running_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(settings) as client:
        yield client


@pytest.fixture
async def hostile_client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in running_client(hostile_settings(tmp_path / "data")):
        yield client


async def finished_job(
    client: httpx.AsyncClient, tenant: Tenant, response: httpx.Response
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The upload was accepted; wait for its job and return (job, document)."""
    assert response.status_code == 202, response.text
    accepted = response.json()
    job = await wait_job(client, tenant, accepted["job_id"], timeout=90)
    document = (await client.get(f"/api/v1/documents/{accepted['document_id']}",
                                 headers=tenant.headers)).json()  # fmt: skip
    return job, document


def assert_failed_with(job: dict[str, Any], document: dict[str, Any], code: str,
                       *phrases: str) -> None:  # fmt: skip
    """The job failed with ``code: message``, the document says the same and is not
    searchable."""
    assert job["status"] == "failed", job
    assert job["attempts"] == 1, job
    error = job["error"]
    assert isinstance(error, str) and error.startswith(f"{code}: "), job
    for phrase in phrases:
        assert phrase in error.lower(), (phrase, error)
    assert document["status"] == "failed" and document["error"] == error, document
    assert document["searchable"] is False and document["chunk_count"] == 0, document


async def multipart_stream(
    boundary: str, collection_id: str, size: int, consumed: list[int]
) -> AsyncIterator[bytes]:
    """A multipart body with a ``size``-byte file, generated lazily; ``consumed`` counts the
    bytes the server pulled."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="collection_id"\r\n\r\n'
        f'{collection_id}\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="huge.txt"\r\nContent-Type: text/plain\r\n\r\n'
    ).encode()
    consumed[0] += len(head)
    yield head
    chunk = b"a" * MIB
    sent = 0
    while sent < size:
        piece = chunk[: min(MIB, size - sent)]
        sent += len(piece)
        consumed[0] += len(piece)
        yield piece
    tail = f"\r\n--{boundary}--\r\n".encode()
    consumed[0] += len(tail)
    yield tail


def multipart_length(boundary: str, collection_id: str, size: int) -> int:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="collection_id"\r\n\r\n'
        f'{collection_id}\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="huge.txt"\r\nContent-Type: text/plain\r\n\r\n'
    ).encode()
    return len(head) + size + len(f"\r\n--{boundary}--\r\n".encode())


async def send_huge(
    client: httpx.AsyncClient, tenant: Tenant, size: int, *, declare_length: bool
) -> tuple[httpx.Response, int]:
    boundary = "hostile-boundary-0123456789"
    consumed = [0]
    headers = dict(tenant.headers)
    headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    if declare_length:
        headers["Content-Length"] = str(multipart_length(boundary, tenant.collection_id, size))
    response = await client.post(
        "/api/v1/documents",
        headers=headers,
        content=multipart_stream(boundary, tenant.collection_id, size, consumed),
    )
    return response, consumed[0]


async def assert_server_still_works(client: httpx.AsyncClient, tenant: Tenant, label: str) -> None:
    response = await upload_text(
        client, tenant, label, f"# {label}\n\nThe server still ingests normal documents fine."
    )
    assert response.status_code == 202, response.text
    job = await wait_job(client, tenant, response.json()["job_id"], timeout=90)
    assert job["status"] == "succeeded", job
    chunks = await all_chunks(client, tenant, response.json()["document_id"])
    assert "normal documents" in " ".join(chunk["text"] for chunk in chunks)


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


# --- the batch -------------------------------------------------------------------------------


async def test_hostile_batch_fails_cleanly_and_the_server_survives(
    hostile_client: httpx.AsyncClient,
) -> None:
    client = hostile_client
    tenant = await new_tenant(client)
    # Warm up (first embedding, first sandbox start) so the RSS baseline is not the cold app.
    await assert_server_still_works(client, tenant, "warm-up")
    before = rss()
    upload_limit = 50 * MIB + UPLOAD_OVERHEAD_BYTES

    failures: dict[str, str] = {}

    async def case(name: str, run: Callable[[], Any]) -> None:
        # Every case runs even if one fails, so one run reports them all.
        try:
            await run()
        except AssertionError as exc:
            failures[name] = str(exc)[:800]

    async def docx_bomb() -> None:
        data = docx_zip_bomb()
        assert len(data) < 2 * MIB
        # Refused at upload: the ZIP directory is checked before anything opens the archive.
        response = await upload_file(client, tenant, "bomb.docx", data)
        assert_error(response, 422, "archive_bomb")
        message = response.json()["error"]["message"].lower()
        assert "word/document.xml" in message and "zip bomb" in message

    async def many_entries() -> None:
        data = zip_of_many_entries(20_000)
        response = await upload_file(client, tenant, "many.docx", data)
        assert_error(response, 422, "archive_too_large")
        message = response.json()["error"]["message"]
        assert "20001 entries" in message and "10000" in message

    async def pdf_bomb() -> None:
        data = nested_flate_pdf_bomb()
        assert len(data) < 100_000
        job, document = await finished_job(client, tenant, await upload_file(
            client, tenant, "bomb.pdf", data))  # fmt: skip
        assert_failed_with(job, document, "limit_exceeded", "safety limit")

    async def billion_laughs() -> None:
        # lxml's HTML parser does not expand internal entities: the job succeeds, inert.
        job, document = await finished_job(client, tenant, await upload_file(
            client, tenant, "laughs.html", BILLION_LAUGHS))  # fmt: skip
        assert job["status"] == "succeeded", job
        text = " ".join(c["text"] for c in await all_chunks(client, tenant, document["id"]))
        assert "after the laughs" in text
        assert len(text) < 10_000 and "lollol" not in text, text[:200]

    async def xxe() -> None:
        job, document = await finished_job(client, tenant, await upload_file(
            client, tenant, "xxe.html", XXE))  # fmt: skip
        assert job["status"] == "succeeded", job
        text = " ".join(c["text"] for c in await all_chunks(client, tenant, document["id"]))
        assert "xxe trailer paragraph" in text
        assert "root:x:0:0" not in text and PASSWD_FIRST_LINE not in text, text
        assert "/bin/" not in text and "nologin" not in text, text

    async def empty_file() -> None:
        response = await upload_file(client, tenant, "empty.txt", b"")
        assert_error(response, 422, "empty_file")

    async def random_pdf() -> None:
        data = bytes((i * 7919 + 13) % 251 for i in range(8192))  # deterministic noise
        response = await upload_file(client, tenant, "report.pdf", data, "application/pdf")
        assert_error(response, 415, "unsupported_type")
        message = response.json()["error"]["message"]
        assert "binary" in message and "application/pdf" in message, message

    async def huge_declared() -> None:
        size = 200 * MIB
        response, consumed = await send_huge(client, tenant, size, declare_length=True)
        assert_error(response, 413, "payload_too_large")
        assert str(upload_limit) in response.json()["error"]["message"]
        # Refused on the Content-Length header: at most the first chunk was pulled.
        assert consumed <= MIB + 4096, consumed

    async def deep_html() -> None:
        job, document = await finished_job(client, tenant, await upload_file(
            client, tenant, "deep.html", deeply_nested_html()))  # fmt: skip
        assert_failed_with(job, document, "limit_exceeded", "nested too deeply")

    async def many_pages() -> None:
        pages = 3000
        data = many_pages_pdf(pages)
        job, document = await finished_job(client, tenant, await upload_file(
            client, tenant, "pages.pdf", data))  # fmt: skip
        # By design the parser reads the first max_pages pages (with a warning) rather than
        # refusing the file: the job succeeds, only those pages are indexed.
        assert job["status"] == "succeeded", job
        assert document["status"] == "ready" and document["pages"] == pages, document
        chunks = await all_chunks(client, tenant, document["id"])
        assert max(c["page_end"] or c["page"] for c in chunks) == MAX_PAGES
        text = " ".join(c["text"] for c in chunks)
        assert f"marker page {MAX_PAGES}" in text and f"marker page {MAX_PAGES + 1}" not in text

    for name, run in [
        ("docx_zip_bomb", docx_bomb), ("zip_20k_entries", many_entries),
        ("pdf_flate_bomb", pdf_bomb), ("billion_laughs", billion_laughs), ("xxe", xxe),
        ("empty_file", empty_file), ("random_pdf", random_pdf),
        ("200mb_content_length", huge_declared), ("deep_html", deep_html),
        ("pdf_3000_pages", many_pages),
    ]:  # fmt: skip
        await case(name, run)

    await assert_server_still_works(client, tenant, "after the batch")
    after = rss()
    assert not failures, failures
    print(  # noqa: T201 - the RSS numbers are part of this test's output
        f"\n[hostile] RSS before {before / MIB:.1f} MB, after {after / MIB:.1f} MB, "
        f"growth {(after - before) / MIB:+.1f} MB"
    )
    assert after - before < RSS_BUDGET, (before, after)


# --- fixed bugs (regressions) ---------------------------------------------------------


async def test_a_chunked_upload_over_the_limit_is_413(tmp_path: Path) -> None:
    settings = ingest_settings(tmp_path / "data", ingestion={"max_upload_mb": 1})
    async for client in running_client(settings):
        tenant = await new_tenant(client)
        response, consumed = await send_huge(client, tenant, 20 * MIB, declare_length=False)
        # Cut off while streaming: the server pulled about the limit, not the 20 MB.
        assert consumed <= 1 * MIB + UPLOAD_OVERHEAD_BYTES + 2 * MIB, consumed
        assert_error(response, 413, "payload_too_large")


def central_directory_only_zip(count: int) -> bytes:
    """A "DOCX" whose central directory lists word/document.xml and ``count`` empty entries
    (no local headers: zipfile only reads the directory), about 53 bytes per entry."""
    names = [b"word/document.xml"] + [f"{index}.txt".encode() for index in range(count)]
    directory = bytearray()
    for name in names:
        directory += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, 0
        )
        directory += name
    entries = len(names)
    start = 4
    tail = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, len(directory), start
    )
    tail += struct.pack("<4sLQL", b"PK\x06\x07", 0, start + len(directory), 1)
    tail += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return b"PK\x03\x04" + bytes(directory) + tail


async def test_a_huge_zip_directory_does_not_balloon_the_server(tmp_path: Path) -> None:
    import threading

    data = central_directory_only_zip(800_000)
    assert len(data) < 50 * MIB
    async for client in running_client(hostile_settings(tmp_path / "data")):
        tenant = await new_tenant(client)
        await assert_server_still_works(client, tenant, "warm-up")
        baseline = rss()
        peak = [baseline]
        stop = threading.Event()

        def sample(stop: threading.Event = stop, peak: list[int] = peak) -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss())
                stop.wait(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            response = await upload_file(client, tenant, "directory.docx", data)
        finally:
            stop.set()
            sampler.join()
        growth = peak[0] - baseline - len(data)  # the upload itself is held once
        summary = f"800k-entry zip: {response.status_code}, peak RSS growth {growth / MIB:.0f} MB"
        print(f"\n[hostile] {summary}")  # noqa: T201
        assert_error(response, 422, "archive_too_large")
        assert growth < 100 * MIB, growth


async def test_a_pdf_cut_at_max_pages_says_so(tmp_path: Path) -> None:
    settings = ingest_settings(
        tmp_path / "data", ingestion={"max_pages": 2, "keywords_enabled": False}
    )
    async for client in running_client(settings):
        tenant = await new_tenant(client)
        job, document = await finished_job(
            client, tenant, await upload_file(client, tenant, "five.pdf", many_pages_pdf(5))
        )
        assert job["status"] == "succeeded" and document["pages"] == 5, (job, document)
        visible = json.dumps([job, document])
        assert "only the first 2 of 5 pages" in visible, visible


async def test_file_names_are_kept_clean_or_refused_clearly(
    hostile_client: httpx.AsyncClient,
) -> None:
    """A 300-character name with control characters is kept, cleaned and cut to 255; a
    5,000-character one (past the multipart parser's header limit) gets a 422 that says so,
    not "Invalid multipart data"."""
    client = hostile_client
    tenant = await new_tenant(client)
    name = "line\x1b[31m\x7fbreak\x9b" + "n" * 300 + ".txt"  # (httpx escapes CR, LF, NUL)
    kept = await upload_file(client, tenant, name, b"a small text file", "text/plain")
    assert kept.status_code == 202, kept.text
    filename = kept.json()["document"]["filename"]
    assert filename.startswith("line[31mbreak") and len(filename) == 255
    refused = await upload_file(client, tenant, "n" * 5000 + ".txt", b"text", "text/plain")
    assert_error(refused, 422, "multipart_header_too_large")
    assert "file name" in refused.json()["error"]["message"]
