"""Chat scoped to collections the tenant does not have: one 404, whoever owns the id.

``POST /api/v1/chat`` (JSON and SSE) and ``/v1/chat/completions`` with ``ragd:<name>`` answer
an unknown collection and another tenant's with the same bytes, before anything is stored.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.ingestion.conftest import Tenant, app_client, new_tenant, upload_text, wait_job

TEXT = ("Basalt columns form when thick lava flows cool slowly and contract; the cracks meet "
        "at angles near 120 degrees, so the columns are mostly hexagonal.")


async def _chat(client: httpx.AsyncClient, tenant: Tenant, **body: object) -> httpx.Response:
    return await client.post("/api/v1/chat", headers=tenant.headers,
                             json={"question": "Why are basalt columns hexagonal?", **body})


async def test_chat_with_an_unknown_or_foreign_collection_is_one_404(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data") as client:
        a, b = await new_tenant(client), await new_tenant(client)
        r = await upload_text(client, a, "volcano", TEXT)
        assert (await wait_job(client, a, r.json()["job_id"]))["status"] == "succeeded"

        bodies = set()
        for collection_id in ("0" * 32, b.collection_id):
            for stream in (False, True):
                r = await _chat(client, a, collection_ids=[collection_id], stream=stream)
                assert r.status_code == 404, r.text
                assert r.headers["content-type"] == "application/json"
                bodies.add(r.content)
        assert bodies == {b'{"error":{"code":"collection_not_found",'
                          b'"message":"collection_ids[0]: collection not found"}}'}
        r = await _chat(client, a, collection_ids=[a.collection_id, b.collection_id])
        assert r.status_code == 404 and b"collection_ids[1]" in r.content
        # Refused before anything was stored.
        listed = await client.get("/api/v1/conversations", headers=a.headers)
        assert listed.json()["items"] == []

        r = await _chat(client, a, collection_ids=[a.collection_id])
        assert r.status_code == 200, r.text
        assert r.json()["citations"][0]["title"] == "volcano"


async def test_completions_model_of_another_tenants_collection_is_unknown(
    tmp_path: Path,
) -> None:
    async with app_client(tmp_path / "data") as client:
        a, b = await new_tenant(client), await new_tenant(client)
        body = {"model": "ragd:private-b", "messages": [{"role": "user", "content": "basalt?"}]}

        async def refused() -> bytes:
            r = await client.post("/v1/chat/completions", headers=a.headers, json=body)
            assert r.status_code == 404, r.text
            return r.content

        never_existed = await refused()
        r = await client.post("/api/v1/collections", headers=b.headers,
                              json={"name": "private-b"})
        assert r.status_code == 201
        assert await refused() == never_existed
        assert b'"code":"model_not_found"' in never_existed
