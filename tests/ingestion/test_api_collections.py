"""``/api/v1/collections`` over real HTTP: CRUD, pagination, validation and deletion."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx

from ragd.container import build_workers
from tests.conftest import assert_error
from tests.ingestion.conftest import (
    Tenant,
    app_client,
    new_tenant,
    upload_file,
    upload_text,
    wait_job,
)

COLLECTION_FIELDS = {
    "id", "name", "description", "metadata", "document_count", "embedder",
    "embedder_dimension", "created_at", "updated_at",
}


EMPTY_COUNTS = {"queued": 0, "processing": 0, "ready": 0, "failed": 0, "cancelled": 0}


async def _ingest(client: httpx.AsyncClient, tenant: Tenant, title: str, text: str,
                  collection_id: str | None = None) -> dict[str, Any]:
    extra = {} if collection_id is None else {"collection_id": collection_id}
    response = await upload_text(client, tenant, title, text, **extra)
    assert response.status_code == 202, response.text
    job = await wait_job(client, tenant, response.json()["job_id"])
    assert job["status"] == "succeeded", job
    document = await client.get(f"/api/v1/documents/{response.json()['document_id']}",
                                headers=tenant.headers)
    assert document.status_code == 200
    body: dict[str, Any] = document.json()
    assert body["chunk_count"] > 0
    return body


async def test_create_get_patch_collection(ingest_client: httpx.AsyncClient) -> None:
    client = ingest_client
    tenant = await new_tenant(client)
    h = tenant.headers
    created = await client.post(
        "/api/v1/collections",
        json={"name": "  Manuals ", "description": "user guides",
              "metadata": {"team": "docs", "n": 3, "tags": ["a", "b"], "flag": True}},
        headers=h,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == COLLECTION_FIELDS
    assert body["name"] == "Manuals"  # stripped
    assert body["description"] == "user guides"
    assert body["metadata"] == {"team": "docs", "n": 3, "tags": ["a", "b"], "flag": True}
    assert body["document_count"] == 0
    assert body["embedder"] is None and body["embedder_dimension"] is None
    cid = body["id"]

    # Defaults for a bare create.
    bare = await client.post("/api/v1/collections", json={"name": "bare"}, headers=h)
    assert bare.status_code == 201
    assert bare.json()["description"] is None and bare.json()["metadata"] == {}

    # Names are unique per tenant, case-insensitively and ignoring surrounding space.
    for name in ("manuals", "MANUALS", " Manuals"):
        dup = await client.post("/api/v1/collections", json={"name": name}, headers=h)
        assert_error(dup, 409, "collection_exists")

    got = await client.get(f"/api/v1/collections/{cid}", headers=h)
    assert got.status_code == 200
    assert got.json() == {**body, "chunk_count": 0, "documents_by_status": EMPTY_COUNTS}

    patched = await client.patch(f"/api/v1/collections/{cid}",
                                 json={"description": "new text"}, headers=h)
    assert patched.status_code == 200, patched.text
    p = patched.json()
    assert p["description"] == "new text"
    assert p["name"] == "Manuals" and p["metadata"] == body["metadata"]
    assert p["created_at"] == body["created_at"] and p["updated_at"] >= body["updated_at"]

    patched = await client.patch(f"/api/v1/collections/{cid}",
                                 json={"metadata": {"k": "v"}}, headers=h)
    assert patched.status_code == 200 and patched.json()["metadata"] == {"k": "v"}
    patched = await client.patch(f"/api/v1/collections/{cid}", json={"name": "Guides"},
                                 headers=h)
    assert patched.status_code == 200 and patched.json()["name"] == "Guides"
    assert patched.json()["description"] == "new text"
    # The collection's own name in another case is not a conflict.
    patched = await client.patch(f"/api/v1/collections/{cid}", json={"name": "GUIDES"},
                                 headers=h)
    assert patched.status_code == 200 and patched.json()["name"] == "GUIDES"
    # The old name is free again.
    again = await client.post("/api/v1/collections", json={"name": "manuals"}, headers=h)
    assert again.status_code == 201

    assert_error(await client.patch(f"/api/v1/collections/{cid}", json={}, headers=h),
                 422, "empty_patch")
    assert_error(await client.patch(f"/api/v1/collections/{cid}",
                                    json={"name": None, "metadata": None}, headers=h),
                 422, "empty_patch")
    for taken in ("docs", "DOCS", "bare"):
        assert_error(await client.patch(f"/api/v1/collections/{cid}", json={"name": taken},
                                        headers=h), 409, "collection_exists")
    final = await client.get(f"/api/v1/collections/{cid}", headers=h)
    assert final.json()["name"] == "GUIDES"

    assert_error(await client.get("/api/v1/collections/nope", headers=h),
                 404, "collection_not_found")
    assert_error(await client.patch("/api/v1/collections/nope", json={"name": "x"},
                                    headers=h), 404, "collection_not_found")
    assert_error(await client.delete("/api/v1/collections/nope", headers=h),
                 404, "collection_not_found")
    assert_error(await client.get("/api/v1/collections/" + "x" * 65, headers=h), 422)


async def test_list_collections_cursor_pagination(ingest_client: httpx.AsyncClient) -> None:
    client = ingest_client
    tenant = await new_tenant(client)  # has "docs"
    ids = {tenant.collection_id}
    for i in range(4):
        r = await client.post("/api/v1/collections", json={"name": f"c{i}"},
                              headers=tenant.headers)
        assert r.status_code == 201
        ids.add(r.json()["id"])

    seen: list[str] = []
    created: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/api/v1/collections", params=params, headers=tenant.headers)
        assert r.status_code == 200, r.text
        page = r.json()
        pages += 1
        assert len(page["items"]) <= 2
        seen.extend(item["id"] for item in page["items"])
        created.extend(item["created_at"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["items"]) == 2
    assert pages == 3
    assert len(seen) == len(set(seen)) == 5 and set(seen) == ids
    assert created == sorted(created, reverse=True)  # newest first

    full = await client.get("/api/v1/collections", headers=tenant.headers)
    assert [item["id"] for item in full.json()["items"]] == seen
    assert full.json()["next_cursor"] is None

    naive = base64.urlsafe_b64encode(b"2024-01-01T00:00:00|abc").decode()
    for bad in ("zzz", "not-a-cursor!", naive, "é"):
        r = await client.get("/api/v1/collections", params={"cursor": bad},
                             headers=tenant.headers)
        assert_error(r, 422)
    for limit in (0, 1000, -1, "x"):
        r = await client.get("/api/v1/collections", params={"limit": limit},
                             headers=tenant.headers)
        assert_error(r, 422)


async def test_collection_input_validation(ingest_client: httpx.AsyncClient) -> None:
    client = ingest_client
    tenant = await new_tenant(client)
    h = tenant.headers
    bad_bodies: list[Any] = [
        {},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 201},
        {"name": 5},
        {"name": "ok", "description": "d" * 2001},
        {"name": "ok", "metadata": {"nested": {"a": 1}}},
        {"name": "ok", "metadata": {"list": [{"a": 1}]}},
        {"name": "ok", "metadata": {f"k{i}": i for i in range(65)}},
        {"name": "ok", "metadata": [1, 2]},
        {"name": "ok", "metadata": "text"},
        {"name": "ok", "metadata": None},
        {"name": "ok", "metadata": {"": 1}},
        {"name": "ok", "metadata": {"k" * 65: 1}},
        {"name": "ok", "metadata": {"big": "v" * 4097}},
        {"name": "ok", "unknown": 1},
        ["name"],
    ]
    for body in bad_bodies:
        r = await client.post("/api/v1/collections", json=body, headers=h)
        assert_error(r, 422)
    r = await client.post("/api/v1/collections", content=b"{not json",
                          headers={**h, "Content-Type": "application/json"})
    assert_error(r, 422)
    # 64 keys is the limit, inclusive.
    ok = await client.post("/api/v1/collections",
                           json={"name": "ok", "metadata": {f"k{i}": i for i in range(64)}},
                           headers=h)
    assert ok.status_code == 201, ok.text
    cid = ok.json()["id"]

    for body in ({"name": ""}, {"name": "x" * 201}, {"metadata": {"a": {"b": 1}}},
                 {"metadata": [1]}, {"metadata": {f"k{i}": i for i in range(65)}},
                 {"other": 1}):
        r = await client.patch(f"/api/v1/collections/{cid}", json=body, headers=h)
        assert_error(r, 422)
    listed = await client.get("/api/v1/collections", headers=h)
    assert {item["name"] for item in listed.json()["items"]} == {"docs", "ok"}


async def test_delete_small_collection_removes_documents_and_index(
    ingest_client: httpx.AsyncClient,
) -> None:
    client = ingest_client
    tenant = await new_tenant(client)
    h = tenant.headers
    other = await client.post("/api/v1/collections", json={"name": "other"}, headers=h)
    other_id = other.json()["id"]
    kept = await _ingest(client, tenant, "kept", "Kept text about bicycles and wheels.")
    gone = await _ingest(client, tenant, "gone", "Gone text about ships and sails.",
                         collection_id=other_id)
    counted = await client.get(f"/api/v1/collections/{other_id}", headers=h)
    assert counted.json()["document_count"] == 1
    assert counted.json()["embedder"] and counted.json()["embedder_dimension"]

    indexes = client.app.state.services.indexes  # type: ignore[attr-defined]
    before = await indexes.verify(tenant.tenant_id)
    assert before.ok and before.chunks == kept["chunk_count"] + gone["chunk_count"]

    r = await client.delete(f"/api/v1/collections/{other_id}", headers=h)
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert_error(await client.get(f"/api/v1/collections/{other_id}", headers=h),
                 404, "collection_not_found")
    assert_error(await client.get(f"/api/v1/documents/{gone['id']}", headers=h),
                 404, "document_not_found")
    assert_error(await client.get(f"/api/v1/documents/{gone['id']}/chunks", headers=h), 404)
    assert_error(await client.get(f"/api/v1/documents/{gone['id']}/content", headers=h), 404)
    listed = await client.get("/api/v1/documents", headers=h)
    assert [d["id"] for d in listed.json()["items"]] == [kept["id"]]
    after = await indexes.verify(tenant.tenant_id)
    assert after.ok and after.chunks == kept["chunk_count"]
    assert_error(await client.delete(f"/api/v1/collections/{other_id}", headers=h),
                 404, "collection_not_found")

    # Deleting the last collection leaves the tenant's index empty.
    r = await client.delete(f"/api/v1/collections/{tenant.collection_id}", headers=h)
    assert r.status_code == 204
    assert_error(await client.get(f"/api/v1/documents/{kept['id']}", headers=h), 404)
    final = await indexes.verify(tenant.tenant_id)
    assert final.ok and final.chunks == 0
    listed = await client.get("/api/v1/collections", headers=h)
    assert listed.json() == {"items": [], "next_cursor": None}
    # The name can be reused.
    again = await client.post("/api/v1/collections", json={"name": "other"}, headers=h)
    assert again.status_code == 201


async def test_delete_large_collection_runs_a_job(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data", ingestion={"delete_inline_chunks": 0}) as client:
        tenant = await new_tenant(client)
        h = tenant.headers
        docs = [
            await _ingest(client, tenant, "one", "First text about apples and pears."),
            await _ingest(client, tenant, "two", "Second text about rivers and lakes."),
        ]
        # An empty collection is still deleted inline.
        empty = await client.post("/api/v1/collections", json={"name": "empty"}, headers=h)
        r = await client.delete(f"/api/v1/collections/{empty.json()['id']}", headers=h)
        assert r.status_code == 204

        r = await client.delete(f"/api/v1/collections/{tenant.collection_id}", headers=h)
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["status"] == "deleting"
        job = body["job"]
        assert job["kind"] == "delete_collection"
        assert job["collection_id"] == tenant.collection_id
        assert job["status"] in ("queued", "running", "succeeded")
        # Hidden at once.
        assert_error(await client.get(f"/api/v1/collections/{tenant.collection_id}",
                                      headers=h), 404, "collection_not_found")
        assert_error(await client.get(f"/api/v1/documents/{docs[0]['id']}", headers=h), 404)
        assert_error(await client.delete(f"/api/v1/collections/{tenant.collection_id}",
                                         headers=h), 404, "collection_not_found")
        listed = await client.get("/api/v1/collections", headers=h)
        assert tenant.collection_id not in {c["id"] for c in listed.json()["items"]}

        finished = await wait_job(client, tenant, job["id"])
        assert finished["status"] == "succeeded", finished
        assert_error(await client.get(f"/api/v1/collections/{tenant.collection_id}",
                                      headers=h), 404, "collection_not_found")
        for doc in docs:
            assert_error(await client.get(f"/api/v1/documents/{doc['id']}", headers=h), 404)
        check = await client.app.state.services.indexes.verify(  # type: ignore[attr-defined]
            tenant.tenant_id
        )
        assert check.ok and check.chunks == 0
        jobs = await client.get("/api/v1/jobs", params={"status": "succeeded"}, headers=h)
        assert job["id"] in {j["id"] for j in jobs.json()["items"]}


async def test_name_of_a_collection_being_deleted_is_free(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data",
                          ingestion={"delete_inline_chunks": 0, "workers": 0}) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        tenant = await new_tenant(client)
        r = await upload_text(client, tenant, "one", "Text about harbours and cranes.")
        pool = build_workers(services, 1)
        pool.start()
        try:
            assert (await wait_job(client, tenant, r.json()["job_id"]))["status"] == (
                "succeeded"
            )
        finally:
            await pool.stop()
        r = await client.delete(f"/api/v1/collections/{tenant.collection_id}",
                                headers=tenant.headers)
        assert r.status_code == 202
        assert_error(await client.get(f"/api/v1/collections/{tenant.collection_id}",
                                      headers=tenant.headers), 404)
        again = await client.post("/api/v1/collections", json={"name": "docs"},
                                  headers=tenant.headers)
        assert again.status_code == 201, again.text


async def test_collection_deletion_cannot_be_cancelled_and_completes(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data",
                          ingestion={"delete_inline_chunks": 0, "workers": 0}) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        tenant = await new_tenant(client)
        h = tenant.headers
        r = await upload_text(client, tenant, "one", "Text about glaciers and fjords.")
        pool = build_workers(services, 1)
        pool.start()
        try:
            assert (await wait_job(client, tenant, r.json()["job_id"]))["status"] == (
                "succeeded"
            )
        finally:
            await pool.stop()
        r = await client.delete(f"/api/v1/collections/{tenant.collection_id}", headers=h)
        assert r.status_code == 202
        job_id = r.json()["job"]["id"]
        # A deletion cannot be stopped half-way: cancelling it is refused.
        assert_error(await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=h), 409,
                     "job_not_cancellable")
        pool = build_workers(services, 1)
        pool.start()
        try:
            assert (await wait_job(client, tenant, job_id))["status"] == "succeeded"
        finally:
            await pool.stop()
        assert_error(
            await client.get(f"/api/v1/collections/{tenant.collection_id}", headers=h), 404
        )
        # It is really gone: chunks purged from the index, name free.
        check = await services.indexes.verify(tenant.tenant_id)
        assert check.ok and check.chunks == 0, check
        again = await client.post("/api/v1/collections", json={"name": "docs"}, headers=h)
        assert again.status_code == 201, again.text


async def test_a_collection_shows_its_documents_by_status_and_its_chunks(
    tmp_path: Path,
) -> None:
    """Ready documents with their searchable chunks, and one failed (a PDF that does not
    parse); another tenant gets the same 404 as an unknown id."""
    async with app_client(tmp_path / "data") as client:
        tenant = await new_tenant(client)
        ready = [await _ingest(client, tenant, title, text) for title, text in (
            ("volcano", "Basalt columns form when lava cools slowly and contracts."),
            ("glacier", "Glaciers carve fjords; meltwater feeds the rivers below."),
        )]
        failed = await upload_file(client, tenant, "a.pdf", b"%PDF-1.7\n garbage",
                                   "application/pdf")
        assert failed.status_code == 202, failed.text
        job = await wait_job(client, tenant, failed.json()["job_id"])
        assert job["status"] == "failed", job
        got = await client.get(f"/api/v1/collections/{tenant.collection_id}",
                               headers=tenant.headers)
        assert got.status_code == 200, got.text
        body = got.json()
        assert set(body) == COLLECTION_FIELDS | {"chunk_count", "documents_by_status"}
        assert body["documents_by_status"] == {**EMPTY_COUNTS, "ready": 2, "failed": 1}
        assert body["chunk_count"] == sum(d["chunk_count"] for d in ready)
        assert body["document_count"] == 3
        other = await new_tenant(client)
        for collection_id in (tenant.collection_id, "no-such-collection"):
            assert_error(await client.get(f"/api/v1/collections/{collection_id}",
                                          headers=other.headers), 404, "collection_not_found")
