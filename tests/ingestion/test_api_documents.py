"""``/api/v1/documents`` over real HTTP: upload, inspect, re-ingest, delete, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragd.container import build_workers
from ragd.settings import Settings
from tests.conftest import assert_error
from tests.ingestion.conftest import (
    Tenant,
    all_chunks,
    app_client,
    ingest_settings,
    new_tenant,
    upload_file,
    upload_text,
    wait_job,
)
from tests.shared_data import EVAL

SMALL_CHUNKS = {"chunk_target_tokens": 32, "chunk_overlap_tokens": 4}
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
ACCEPTED_FIELDS = {"document_id", "job_id", "status", "duplicate", "document"}


def _markdown(topic: str, sections: int = 6) -> bytes:
    parts = []
    for i in range(sections):
        parts.append(
            f"# {topic} part {i}\n\nThe {topic} section number {i} explains how to install, "
            f"configure and maintain the {topic} subsystem safely, with examples of common "
            f"mistakes and their remedies for operators working on shift {i}.\n"
        )
    return "\n".join(parts).encode()


@pytest.fixture
def ingest_app_settings(tmp_path: Path) -> Settings:
    """Small chunks, so a short document has several (pagination)."""
    return ingest_settings(tmp_path / "data", ingestion=SMALL_CHUNKS)


async def _count_jobs(client: httpx.AsyncClient, tenant: Tenant) -> int:
    r = await client.get("/api/v1/jobs", params={"limit": 200}, headers=tenant.headers)
    assert r.status_code == 200
    return len(r.json()["items"])


async def _document(client: httpx.AsyncClient, tenant: Tenant, document_id: str) -> Any:
    r = await client.get(f"/api/v1/documents/{document_id}", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def test_upload_inspect_content_chunks_and_duplicates(
    ingest_client: httpx.AsyncClient,
) -> None:
    client = ingest_client
    tenant = await new_tenant(client)
    data = _markdown("turbine")
    r = await upload_file(client, tenant, "guide.md", data, "text/markdown",
                          metadata=json.dumps({"lang": "en", "rev": 2}))
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert set(accepted) == ACCEPTED_FIELDS
    assert accepted["status"] == "queued" and accepted["duplicate"] is False
    assert isinstance(accepted["job_id"], str) and accepted["job_id"]
    assert accepted["document"]["id"] == accepted["document_id"]
    assert accepted["document"]["job_id"] == accepted["job_id"]
    assert accepted["document"]["searchable"] is False
    document_id = accepted["document_id"]

    job = await wait_job(client, tenant, accepted["job_id"])
    assert job["status"] == "succeeded", job
    doc = await _document(client, tenant, document_id)
    assert doc["status"] == "ready" and doc["searchable"] is True
    assert doc["error"] is None
    assert doc["collection_id"] == tenant.collection_id
    assert doc["content_sha256"] == hashlib.sha256(data).hexdigest()
    assert doc["size_bytes"] == len(data)
    assert doc["format"] == "markdown" and doc["content_type"] == "text/markdown"
    assert doc["filename"] == "guide.md" and doc["title"] == "turbine part 0"  # 1st heading
    assert doc["metadata"] == {"lang": "en", "rev": 2}
    assert doc["version"] == 1 and doc["active_version"] == 1
    assert doc["chunk_count"] > 2, doc
    assert doc["token_count"] > 0 and doc["ready_at"] is not None
    assert isinstance(doc["keywords"], list) and doc["keywords"]
    assert all(set(k) == {"keyword", "score"} for k in doc["keywords"])

    content = await client.get(f"/api/v1/documents/{document_id}/content",
                               headers=tenant.headers)
    assert content.status_code == 200
    assert content.content == data
    assert content.headers["content-type"].split(";")[0] == "text/markdown"
    assert content.headers["content-disposition"] == "attachment; filename*=UTF-8''guide.md"

    # Chunks in pages of 2 cover ordinals 0..n-1 exactly once.
    ordinals: list[int] = []
    texts: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        page = await client.get(f"/api/v1/documents/{document_id}/chunks", params=params,
                                headers=tenant.headers)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= 2
        for chunk in body["items"]:
            assert chunk["document_id"] == document_id
            assert chunk["collection_id"] == tenant.collection_id
            assert chunk["version"] == 1
            ordinals.append(chunk["ordinal"])
            texts.append(chunk["text"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert ordinals == list(range(doc["chunk_count"]))
    assert "turbine" in " ".join(texts)

    # Same bytes into the same collection: a duplicate, no new job.
    jobs_before = await _count_jobs(client, tenant)
    again = await upload_file(client, tenant, "renamed.md", data, "text/markdown")
    assert again.status_code == 200, again.text
    dup = again.json()
    assert dup["duplicate"] is True and dup["document_id"] == document_id
    assert dup["status"] == "ready" and dup["job_id"] == accepted["job_id"]
    assert await _count_jobs(client, tenant) == jobs_before
    listed = await client.get("/api/v1/documents", headers=tenant.headers)
    assert [d["id"] for d in listed.json()["items"]] == [document_id]

    # Same bytes into another collection: a new document.
    other = await client.post("/api/v1/collections", json={"name": "other"},
                              headers=tenant.headers)
    r = await upload_file(client, tenant, "guide.md", data, "text/markdown",
                          collection_id=other.json()["id"])
    assert r.status_code == 202, r.text
    assert r.json()["duplicate"] is False and r.json()["document_id"] != document_id
    assert await _count_jobs(client, tenant) == jobs_before + 1
    assert (await wait_job(client, tenant, r.json()["job_id"]))["status"] == "succeeded"


async def test_text_upload_and_listing(ingest_client: httpx.AsyncClient) -> None:
    client = ingest_client
    tenant = await new_tenant(client)
    h = tenant.headers
    second = (await client.post("/api/v1/collections", json={"name": "second"},
                                headers=h)).json()["id"]
    r = await upload_text(client, tenant, "  Notes  ", "Plain notes about the harbour crane.",
                          metadata={"source": "api"})
    assert r.status_code == 202, r.text
    first_id = r.json()["document_id"]
    jobs = [r.json()["job_id"]]
    in_first = {first_id}
    for i in range(2):
        r = await upload_text(client, tenant, f"n{i}", f"Note {i} about ferries and docks.")
        assert r.status_code == 202
        in_first.add(r.json()["document_id"])
        jobs.append(r.json()["job_id"])
    in_second = set()
    for i in range(2):
        r = await upload_text(client, tenant, f"s{i}", f"Second {i} about trains and rails.",
                              collection_id=second)
        assert r.status_code == 202
        in_second.add(r.json()["document_id"])
        jobs.append(r.json()["job_id"])
    for job_id in jobs:
        assert (await wait_job(client, tenant, job_id))["status"] == "succeeded"

    doc = await _document(client, tenant, first_id)
    assert doc["title"] == "Notes" and doc["filename"] is None
    assert doc["format"] == "text" and doc["content_type"] == "text/plain"
    assert doc["metadata"] == {"source": "api"}
    content = await client.get(f"/api/v1/documents/{first_id}/content", headers=h)
    assert content.content == b"Plain notes about the harbour crane."
    assert content.headers["content-type"].startswith("text/plain")
    assert content.headers["content-disposition"].startswith("attachment")

    r = await client.get("/api/v1/documents", params={"collection_id": tenant.collection_id},
                         headers=h)
    assert {d["id"] for d in r.json()["items"]} == in_first
    r = await client.get("/api/v1/documents", params={"collection_id": second}, headers=h)
    assert {d["id"] for d in r.json()["items"]} == in_second
    r = await client.get("/api/v1/documents", params={"collection_id": "nope"}, headers=h)
    assert r.status_code == 200 and r.json()["items"] == []
    r = await client.get("/api/v1/documents", params={"status": "ready"}, headers=h)
    assert {d["id"] for d in r.json()["items"]} == in_first | in_second
    for status in ("queued", "failed", "processing", "cancelled"):
        r = await client.get("/api/v1/documents", params={"status": status}, headers=h)
        assert r.status_code == 200 and r.json()["items"] == [], status
    r = await client.get("/api/v1/documents",
                         params={"status": "ready", "collection_id": second, "limit": 1},
                         headers=h)
    assert len(r.json()["items"]) == 1 and r.json()["next_cursor"]

    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/api/v1/documents", params=params, headers=h)
        assert r.status_code == 200, r.text
        seen.extend(d["id"] for d in r.json()["items"])
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 5 and set(seen) == in_first | in_second


async def test_a_json_text_upload_is_read_as_its_declared_type_never_sniffed(
    ingest_client: httpx.AsyncClient,
) -> None:
    client = ingest_client
    tenant = await new_tenant(client)
    makevars = "PKG_CPPFLAGS = -I../inst/include\nPKG_LIBS = -lz -lbz2\n"
    uploads = {
        "makevars": await upload_text(client, tenant, "Makevars", makevars),
        "pdf-like": await upload_text(client, tenant, "Versions",
                                      "%PDF-1.7 is the version our printers accept."),
        "markdown": await upload_text(client, tenant, "Guide", "# Setup\n\nRun the installer.",
                                      content_type="text/markdown"),
        "file": await upload_file(client, tenant, "Makevars", b"PKG_LIBS = -lm\n"),
    }
    for name, r in uploads.items():
        assert r.status_code == 202, (name, r.text)
        job = await wait_job(client, tenant, r.json()["job_id"])
        assert job["status"] == "succeeded", (name, job)
    makevars_chunks = await all_chunks(client, tenant, uploads["makevars"].json()["document_id"])
    assert makevars_chunks[0]["text"].startswith("PKG_CPPFLAGS = -I../inst/include")
    file_doc = await _document(client, tenant, uploads["file"].json()["document_id"])
    assert file_doc["format"] == "text"
    guide = uploads["markdown"].json()["document_id"]
    assert (await _document(client, tenant, guide))["format"] == "markdown"
    assert (await all_chunks(client, tenant, guide))[0]["heading_path"] == ["Setup"]
    r = await upload_text(client, tenant, "Bad", "x", content_type="application/pdf")
    assert_error(r, 422)


async def test_a_document_without_a_title_takes_its_own_then_the_file_name(
    ingest_client: httpx.AsyncClient,
) -> None:
    client = ingest_client
    tenant = await new_tenant(client)
    # (The PDF's and the text file's titles: tests/ingestion/test_parsers.py.)
    files = {
        "general.html": (EVAL / "python-faq/source/faq/general.html").read_bytes(),
        "faq.txt": b"\n   The Debian GNU/Linux FAQ\n\n1. What is this FAQ?\n",
        "notes.md": b"Some words first.\n\n# Release notes\n\nThe body.",
        "people.csv": b"name,age\nann,3\nbob,4\n",
        "plain.txt": b"This is a sentence, not a title.\n",
    }
    ids = {}
    for name, data in files.items():
        r = await upload_file(client, tenant, name, data)
        assert r.status_code == 202, r.text
        assert (await wait_job(client, tenant, r.json()["job_id"]))["status"] == "succeeded"
        ids[name] = r.json()["document_id"]
    titles = {name: (await _document(client, tenant, ids[name]))["title"] for name in files}
    assert titles == {
        "general.html": "General Python FAQ \u2014 Python 3.11.2 documentation",
        "faq.txt": "The Debian GNU/Linux FAQ",
        "notes.md": "Release notes",
        "people.csv": "people.csv",
        "plain.txt": "plain.txt",
    }
    # A title the client gave is kept.
    r = await client.post("/api/v1/documents", headers=tenant.headers, data={
        "collection_id": tenant.collection_id, "title": "My own"},
        files={"file": ("g.html", files["general.html"] + b" ", "text/html")})
    assert (await wait_job(client, tenant, r.json()["job_id"]))["status"] == "succeeded"
    assert (await _document(client, tenant, r.json()["document_id"]))["title"] == "My own"


async def test_replace_keeps_old_version_until_new_one_is_ready(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data", ingestion={"workers": 0, **SMALL_CHUNKS}) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        tenant = await new_tenant(client)
        h = tenant.headers
        old = _markdown("zeppelin", 4).decode()
        new = _markdown("submarine", 3).decode()
        r = await upload_text(client, tenant, "doc", old)
        assert r.status_code == 202
        document_id, first_job = r.json()["document_id"], r.json()["job_id"]
        other = await upload_text(client, tenant, "other", "Other text about castles.")
        pool = build_workers(services, 1)
        pool.start()
        try:
            assert (await wait_job(client, tenant, first_job))["status"] == "succeeded"
            assert (await wait_job(client, tenant, other.json()["job_id"]))["status"] == (
                "succeeded"
            )
        finally:
            await pool.stop()
        v1 = await _document(client, tenant, document_id)
        other_doc = await _document(client, tenant, other.json()["document_id"])
        chunks_v1 = await all_chunks(client, tenant, document_id)
        assert len(chunks_v1) == v1["chunk_count"] > 1

        r = await client.put(f"/api/v1/documents/{document_id}", json={"text": new},
                             headers=h)
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["duplicate"] is False and body["status"] == "queued"
        assert body["document_id"] == document_id and body["job_id"] != first_job
        second_job = body["job_id"]
        pending = await _document(client, tenant, document_id)
        assert pending["version"] == 2 and pending["active_version"] == 1
        assert pending["status"] == "queued" and pending["searchable"] is True
        assert pending["title"] == "doc"  # kept: no title given
        assert pending["content_sha256"] == hashlib.sha256(new.encode()).hexdigest()
        # The old chunks stay searchable until the new job runs.
        assert await all_chunks(client, tenant, document_id) == chunks_v1
        check = await services.indexes.verify(tenant.tenant_id)
        assert check.ok and check.chunks == v1["chunk_count"] + other_doc["chunk_count"]
        content = await client.get(f"/api/v1/documents/{document_id}/content", headers=h)
        assert content.content == new.encode()

        pool = build_workers(services, 1)
        pool.start()
        try:
            assert (await wait_job(client, tenant, second_job))["status"] == "succeeded"
        finally:
            await pool.stop()
        v2 = await _document(client, tenant, document_id)
        assert v2["status"] == "ready" and v2["version"] == 2 and v2["active_version"] == 2
        chunks_v2 = await all_chunks(client, tenant, document_id)
        assert len(chunks_v2) == v2["chunk_count"] > 0
        assert [c["ordinal"] for c in chunks_v2] == list(range(len(chunks_v2)))
        assert all(c["version"] == 2 for c in chunks_v2)
        joined = " ".join(c["text"] for c in chunks_v2)
        assert "submarine" in joined and "zeppelin" not in joined
        check = await services.indexes.verify(tenant.tenant_id)
        assert check.ok and check.chunks == v2["chunk_count"] + other_doc["chunk_count"]

        # Identical content: a duplicate, no job.
        jobs_before = await _count_jobs(client, tenant)
        r = await client.put(f"/api/v1/documents/{document_id}", json={"text": new},
                             headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["duplicate"] is True and r.json()["document_id"] == document_id
        assert await _count_jobs(client, tenant) == jobs_before
        # Content of another document of the collection: a conflict.
        r = await client.put(f"/api/v1/documents/{document_id}",
                             json={"text": "Other text about castles."}, headers=h)
        assert_error(r, 409, "duplicate_content")
        assert (await _document(client, tenant, document_id))["version"] == 2
        # Multipart replacement works too (left queued: no worker runs).
        r = await client.put(f"/api/v1/documents/{document_id}",
                             files={"file": ("new.md", _markdown("kayak", 2), "text/markdown")},
                             data={"title": "Kayaks"}, headers=h)
        assert r.status_code == 202, r.text
        assert r.json()["document"]["title"] == "Kayaks"
        assert r.json()["document"]["filename"] == "new.md"
        assert r.json()["document"]["version"] == 3
        assert_error(await client.put("/api/v1/documents/nope", json={"text": "x"}, headers=h),
                     404, "document_not_found")

        # Delete: gone everywhere, its queued job cancelled, the index emptied of it.
        r = await client.delete(f"/api/v1/documents/{document_id}", headers=h)
        assert r.status_code == 204 and r.content == b""
        for path in ("", "/chunks", "/content"):
            assert_error(await client.get(f"/api/v1/documents/{document_id}{path}", headers=h),
                         404, "document_not_found")
        check = await services.indexes.verify(tenant.tenant_id)
        assert check.ok and check.chunks == other_doc["chunk_count"]
        assert_error(await client.delete(f"/api/v1/documents/{document_id}", headers=h),
                     404, "document_not_found")
        r = await client.delete(f"/api/v1/documents/{other_doc['id']}", headers=h)
        assert r.status_code == 204
        check = await services.indexes.verify(tenant.tenant_id)
        assert check.ok and check.chunks == 0
        listed = await client.get("/api/v1/documents", headers=h)
        assert listed.json()["items"] == []


async def test_upload_input_errors(ingest_client: httpx.AsyncClient) -> None:
    client = ingest_client
    tenant = await new_tenant(client)
    h = tenant.headers
    url = "/api/v1/documents"
    form = {"collection_id": tenant.collection_id}

    assert_error(await client.post(url, data=form, files={"other": ("a.txt", b"x")},
                                   headers=h), 422)
    # A form with only fields, sent as multipart.
    r = await client.post(url, data=form, files=[], headers={
        **h, "Content-Type": "multipart/form-data; boundary=xyz"},
        content=b"--xyz\r\nContent-Disposition: form-data; name=\"collection_id\"\r\n\r\n"
        + tenant.collection_id.encode() + b"\r\n--xyz--\r\n")
    assert_error(r, 422, "missing_file")
    assert_error(await client.post(url, files={"file": ("a.txt", b"hello")}, headers=h),
                 422, "missing_collection")
    assert_error(await client.post(url, json={"title": "t", "text": "hello"}, headers=h), 422)
    assert_error(await upload_file(client, tenant, "a.txt", b"hello", collection_id="nope"),
                 404, "collection_not_found")
    assert_error(await client.post(url, json={"collection_id": "nope", "title": "t",
                                              "text": "hello"}, headers=h),
                 404, "collection_not_found")

    for name, data, declared in (
        ("setup.exe", b"MZ\x90\x00\x03\x00\x00\x00", "application/octet-stream"),
        ("image.png", PNG, "image/png"),
        ("x.pdf", PNG, "application/pdf"),
        ("blob", PNG, "application/octet-stream"),
    ):
        r = await client.post(url, files={"file": (name, data, declared)}, data=form,
                              headers=h)
        assert_error(r, 415, "unsupported_type")
        message = r.json()["error"]["message"]
        assert "Supported types" in message and "application/pdf" in message, message
        assert "text/markdown" in message

    assert_error(await upload_file(client, tenant, "empty.txt", b""), 422, "empty_file")
    assert_error(await upload_text(client, tenant, "t", "   \n "), 422, "empty_file")
    assert_error(await upload_text(client, tenant, "t", ""), 422)
    assert_error(await upload_text(client, tenant, "", "text"), 422)
    assert_error(await upload_text(client, tenant, "t" * 501, "text"), 422)
    r = await client.post(url, content=b"hello", headers={**h, "Content-Type": "text/plain"})
    assert_error(r, 415)
    r = await client.post(url, content=b"hello", headers=h)
    assert_error(r, 415)
    r = await client.post(url, content=b'{"collection_id": ',
                          headers={**h, "Content-Type": "application/json"})
    assert_error(r, 422)
    r = await client.post(url, content=b"[1, 2]",
                          headers={**h, "Content-Type": "application/json"})
    assert_error(r, 422)
    r = await client.post(url, json={"collection_id": tenant.collection_id, "title": "t",
                                     "text": "x", "extra": 1}, headers=h)
    assert_error(r, 422)
    r = await client.post(url, content=b"garbage without boundary",
                          headers={**h, "Content-Type": "multipart/form-data"})
    assert_error(r, 422)

    for metadata in ("not json", "{", "[1, 2]", '"text"', '{"a": {"b": 1}}',
                     json.dumps({f"k{i}": i for i in range(65)})):
        r = await upload_file(client, tenant, "m.txt", b"metadata test", metadata=metadata)
        assert_error(r, 422, "invalid_metadata")
    for metadata in ({"a": {"b": 1}}, [1], "x", {f"k{i}": i for i in range(65)}):
        r = await upload_text(client, tenant, "t", "metadata test", metadata=metadata)
        assert_error(r, 422)
    r = await client.post(url, data={**form, "colour": "blue"},
                          files={"file": ("a.txt", b"x")}, headers=h)
    assert_error(r, 422, "invalid_field")

    # Nothing above created a document or a job.
    assert (await client.get(url, headers=h)).json()["items"] == []
    assert (await client.get("/api/v1/jobs", headers=h)).json()["items"] == []

    for params in ({"cursor": "zzz"}, {"cursor": "é"}, {"limit": 0}, {"limit": 1000},
                   {"status": "bogus"}, {"collection_id": "x" * 65}):
        assert_error(await client.get(url, params=params, headers=h), 422)
    r = await upload_text(client, tenant, "t", "Chunk listing target text.")
    document_id = r.json()["document_id"]
    for params in ({"cursor": "abc"}, {"cursor": "1.5"}, {"limit": 0}, {"limit": 1000}):
        assert_error(await client.get(f"{url}/{document_id}/chunks", params=params,
                                      headers=h), 422)
    for path in ("nope", "nope/chunks", "nope/content"):
        assert_error(await client.get(f"{url}/{path}", headers=h), 404, "document_not_found")
    assert_error(await client.get(f"{url}/{'x' * 65}", headers=h), 422)
    assert_error(await client.delete(f"{url}/nope", headers=h), 404, "document_not_found")
    r = await client.put(f"{url}/{document_id}", content=b"x",
                         headers={**h, "Content-Type": "text/plain"})
    assert_error(r, 415)
    r = await client.put(f"{url}/{document_id}", json={"text": ""}, headers=h)
    assert_error(r, 422)
    r = await client.put(f"{url}/{document_id}", json={"text": "x", "collection_id": "c"},
                         headers=h)
    assert_error(r, 422)
    job_id = (await _document(client, tenant, document_id))["job_id"]
    assert (await wait_job(client, tenant, job_id))["status"] == "succeeded"
