"""Tenant isolation of the content routes: another tenant's ids behave like unknown ids."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import assert_error, bearer
from tests.ingestion.conftest import (
    Tenant,
    all_chunks,
    new_tenant,
    upload_file,
    upload_text,
    wait_job,
)

MISSING = "00000000-0000-0000-0000-000000000000"


async def _snapshot(client: httpx.AsyncClient, a: Tenant, document_id: str,
                    job_id: str) -> dict[str, Any]:
    h = a.headers
    return {
        "collection": (await client.get(f"/api/v1/collections/{a.collection_id}",
                                        headers=h)).json(),
        "document": (await client.get(f"/api/v1/documents/{document_id}", headers=h)).json(),
        "content": (await client.get(f"/api/v1/documents/{document_id}/content",
                                     headers=h)).content,
        "chunks": await all_chunks(client, a, document_id),
        "job": (await client.get(f"/api/v1/jobs/{job_id}", headers=h)).json(),
        "documents": (await client.get("/api/v1/documents", headers=h)).json(),
        "jobs": (await client.get("/api/v1/jobs", headers=h)).json(),
    }


async def test_other_tenants_ids_are_not_found(ingest_client: httpx.AsyncClient) -> None:
    client = ingest_client
    a = await new_tenant(client)
    b = await new_tenant(client)  # also has a collection named "docs"
    r = await upload_text(client, a, "secret", "# Plans\n\nA's confidential launch plans.")
    assert r.status_code == 202
    document_id, job_id = r.json()["document_id"], r.json()["job_id"]
    assert (await wait_job(client, a, job_id))["status"] == "succeeded"
    before = await _snapshot(client, a, document_id, job_id)
    assert before["document"]["status"] == "ready" and before["chunks"]

    text = {"collection_id": a.collection_id, "title": "t", "text": "B's text"}
    # (method, path with A's id, same path with an unknown id, request kwargs)
    probes: list[tuple[str, str, str, dict[str, Any]]] = []
    for suffix, method, kwargs in (
        ("", "GET", {}),
        ("", "PATCH", {"json": {"name": "hijacked"}}),
        ("", "DELETE", {}),
    ):
        probes.append((method, f"/api/v1/collections/{a.collection_id}{suffix}",
                       f"/api/v1/collections/{MISSING}{suffix}", kwargs))
    for suffix, method, kwargs in (
        ("", "GET", {}),
        ("/chunks", "GET", {}),
        ("/content", "GET", {}),
        ("", "PUT", {"json": {"text": "overwritten by B"}}),
        ("", "PUT", {"files": {"file": ("b.txt", b"overwritten by B", "text/plain")}}),
        ("", "DELETE", {}),
    ):
        probes.append((method, f"/api/v1/documents/{document_id}{suffix}",
                       f"/api/v1/documents/{MISSING}{suffix}", kwargs))
    for suffix, method in (("", "GET"), ("/cancel", "POST"), ("/retry", "POST")):
        probes.append((method, f"/api/v1/jobs/{job_id}{suffix}",
                       f"/api/v1/jobs/{MISSING}{suffix}", {}))

    for method, path, unknown, kwargs in probes:
        theirs = await client.request(method, path, headers=b.headers, **kwargs)
        nobody = await client.request(method, unknown, headers=b.headers, **kwargs)
        assert_error(theirs, 404)
        assert_error(nobody, 404)
        assert theirs.json() == nobody.json(), (method, path)

    # Uploading into A's collection, as a file or as text.
    theirs = await upload_file(client, b, "b.txt", b"B's upload", "text/plain",
                               collection_id=a.collection_id)
    nobody = await upload_file(client, b, "b.txt", b"B's upload", "text/plain",
                               collection_id=MISSING)
    assert_error(theirs, 404, "collection_not_found")
    assert theirs.json() == nobody.json()
    theirs = await client.post("/api/v1/documents", json=text, headers=b.headers)
    assert_error(theirs, 404, "collection_not_found")
    # A's exact bytes into A's collection from B: still not found, not a "duplicate" leak.
    a_bytes = before["content"]
    theirs = await upload_file(client, b, "x.md", a_bytes, collection_id=a.collection_id)
    assert_error(theirs, 404, "collection_not_found")

    # B's lists never show A's items, even filtered by A's collection.
    lists = {
        "/api/v1/collections": a.collection_id,
        "/api/v1/documents": document_id,
        f"/api/v1/documents?collection_id={a.collection_id}": document_id,
        "/api/v1/documents?status=ready": document_id,
        "/api/v1/jobs": job_id,
        "/api/v1/jobs?status=succeeded": job_id,
    }
    for path, a_id in lists.items():
        r = await client.get(path, headers=b.headers)
        assert r.status_code == 200, r.text
        assert a_id not in {item["id"] for item in r.json()["items"]}, path
    r = await client.get(f"/api/v1/documents?collection_id={a.collection_id}",
                         headers=b.headers)
    assert r.json()["items"] == []
    # B may upload A's bytes into its own collection: a new document, not A's.
    mine = await upload_file(client, b, "x.md", a_bytes)
    assert mine.status_code == 202 and mine.json()["document_id"] != document_id
    assert (await wait_job(client, b, mine.json()["job_id"]))["status"] == "succeeded"
    b_chunks = await all_chunks(client, b, mine.json()["document_id"])
    assert {c["id"] for c in b_chunks}.isdisjoint({c["id"] for c in before["chunks"]})

    # Nothing of A changed.
    after = await _snapshot(client, a, document_id, job_id)
    assert after == before
    indexes = client.app.state.services.indexes  # type: ignore[attr-defined]
    check_a = await indexes.verify(a.tenant_id)
    assert check_a.ok and check_a.chunks == before["document"]["chunk_count"]
    check_b = await indexes.verify(b.tenant_id)
    assert check_b.ok and check_b.chunks == len(b_chunks)


async def test_unauthenticated_requests_are_refused(ingest_client: httpx.AsyncClient) -> None:
    client = ingest_client
    a = await new_tenant(client)
    r = await upload_text(client, a, "t", "Some text about owls.")
    document_id, job_id = r.json()["document_id"], r.json()["job_id"]
    routes = [
        ("GET", "/api/v1/collections", {}),
        ("POST", "/api/v1/collections", {"json": {"name": "x"}}),
        ("GET", f"/api/v1/collections/{a.collection_id}", {}),
        ("PATCH", f"/api/v1/collections/{a.collection_id}", {"json": {"name": "y"}}),
        ("DELETE", f"/api/v1/collections/{a.collection_id}", {}),
        ("GET", "/api/v1/documents", {}),
        ("POST", "/api/v1/documents",
         {"json": {"collection_id": a.collection_id, "title": "t", "text": "x"}}),
        ("POST", "/api/v1/documents",
         {"files": {"file": ("a.txt", b"x")}, "data": {"collection_id": a.collection_id}}),
        ("GET", f"/api/v1/documents/{document_id}", {}),
        ("PUT", f"/api/v1/documents/{document_id}", {"json": {"text": "x"}}),
        ("DELETE", f"/api/v1/documents/{document_id}", {}),
        ("GET", f"/api/v1/documents/{document_id}/chunks", {}),
        ("GET", f"/api/v1/documents/{document_id}/content", {}),
        ("GET", "/api/v1/jobs", {}),
        ("GET", f"/api/v1/jobs/{job_id}", {}),
        ("POST", f"/api/v1/jobs/{job_id}/cancel", {}),
        ("POST", f"/api/v1/jobs/{job_id}/retry", {}),
    ]
    for headers in ({}, bearer("not-a-token"), {"Authorization": "Basic dXNlcjpwdw=="}):
        for method, path, kwargs in routes:
            r = await client.request(method, path, headers=headers, **kwargs)
            assert_error(r, 401)
    assert (await wait_job(client, a, job_id))["status"] == "succeeded"
    document = await client.get(f"/api/v1/documents/{document_id}", headers=a.headers)
    assert document.json()["status"] == "ready" and document.json()["version"] == 1
    collection = await client.get(f"/api/v1/collections/{a.collection_id}", headers=a.headers)
    assert collection.json()["name"] == "docs"
