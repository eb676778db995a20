"""POST /api/v1/search over real ingested documents: modes, explain, filters, isolation,
unknown scopes, rerank without a reranker, deletion and re-ingestion. The tests whose answer
depends on the search backend run on both: SQLite (the embedded indexes) and PostgreSQL
(full-text search and pgvector in the database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from ragd.container import build_workers
from tests.conftest import assert_error
from tests.ingestion.conftest import Tenant, app_client, new_tenant, upload_text, wait_job
from tests.postgres import PostgresServer

DOCS = {
    "volcano": ("Basalt flows from the volcano cool into hexagonal columns by the sea. "
                "Lava tubes form when the surface crust hardens.",
                {"lang": "en", "year": 2019, "published": "2019-05-01", "tags": ["geology"]}),
    "glacier": ("Glaciers carve fjords over millennia. Meltwater feeds the rivers below the "
                "ice sheet.", {"lang": "en", "year": 2021, "published": "2021-02-10"}),
    "harbour": ("Cranes unload containers in the harbour at dawn. Pilots guide ships past "
                "the breakwater.", {"lang": "de", "year": 2023, "published": "2023-11-30",
                                    "tags": ["ports", "geology"]}),
}


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, postgres: PostgresServer) -> dict[str, Any]:
    """Settings overrides of the backend under test (SQLite: the data dir's default)."""
    if request.param == "sqlite":
        return {}
    return {"database": {"url": await postgres.fresh_database("search_api")}}


async def _ingest(client: httpx.AsyncClient, tenant: Tenant, docs: dict[str, Any]
                  ) -> dict[str, str]:
    ids = {}
    for title, (text, metadata) in docs.items():
        r = await upload_text(client, tenant, title, text, metadata=metadata)
        assert r.status_code == 202, r.text
        assert (await wait_job(client, tenant, r.json()["job_id"]))["status"] == "succeeded"
        ids[title] = r.json()["document_id"]
    return ids


async def _search(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/search", json=body, headers=tenant.headers)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def _titles(result: dict[str, Any]) -> list[str]:
    return [hit["title"] for hit in result["results"]]


async def test_modes_explain_and_filters(tmp_path: Path, database: dict[str, Any]) -> None:
    async with app_client(tmp_path / "data", **database) as client:
        tenant = await new_tenant(client)
        ids = await _ingest(client, tenant, DOCS)
        for mode in ("hybrid", "dense", "lexical"):
            result = await _search(client, tenant, query="basalt columns from lava",
                                   mode=mode, explain=True)
            assert _titles(result)[0] == "volcano", (mode, result)
            assert result["mode"] == mode
            assert {"total", "fuse", "fetch"} <= set(result["timings_ms"])
            hits = result["results"]
            # Explain agrees with the final order.
            assert [h["explain"]["position"] for h in hits] == list(range(1, len(hits) + 1))
            fused = [h["explain"]["fused"]["score"] for h in hits]
            assert fused == sorted(fused, reverse=True)
            assert [h["score"] for h in hits] == fused
            for hit in hits:
                explain = hit["explain"]
                assert explain["rerank"] == {"skipped": "no reranker is configured"}
                found = explain["found_by"]
                assert (explain["lexical"] is not None) == (found in ("lexical", "both"))
                assert (explain["dense"] is not None) == (found in ("dense", "both"))
            if mode == "lexical":
                assert all(h["explain"]["dense"] is None for h in hits)
                assert "embed" not in result["timings_ms"]
        top = (await _search(client, tenant, query="basalt", explain=True))["results"][0]
        assert top["document_id"] == ids["volcano"] and top["metadata"]["year"] == 2019
        assert top["explain"]["found_by"] == "both" and top["explain"]["lexical"]["rank"] == 1

        async def matching(filters: Any, **extra: Any) -> set[str]:
            result = await _search(client, tenant, query="water rock ships", top_k=100,
                                   filters=filters, **extra)
            return set(_titles(result))

        assert await matching(None) == set(DOCS)
        assert await matching({"lang": "en"}) == {"volcano", "glacier"}
        assert await matching({"lang": {"in": ["de", "fr"]}}) == {"harbour"}
        assert await matching({"year": {"gte": 2020, "lt": 2023}}) == {"glacier"}
        assert await matching({"published": {"gte": "2021-01-01"}}) == {"glacier", "harbour"}
        assert await matching({"tags": "geology"}) == {"volcano", "harbour"}
        assert await matching({"tags": {"exists": False}}) == {"glacier"}
        assert await matching({"lang": {"ne": "en"}, "year": {"gt": 2020}}) == {"harbour"}
        assert await matching(None, document_ids=[ids["glacier"]]) == {"glacier"}
        assert await matching(None, collection_ids=[tenant.collection_id]) == set(DOCS)


async def test_bad_queries_and_hostile_filters_are_refused(tmp_path: Path) -> None:
    async with app_client(tmp_path / "data") as client:
        tenant = await new_tenant(client)
        await _ingest(client, tenant, {"volcano": DOCS["volcano"]})
        url, h = "/api/v1/search", tenant.headers
        assert_error(await client.post(url, json={"query": "   "}, headers=h), 422, "empty_query")
        assert_error(await client.post(url, json={"query": ""}, headers=h), 422)
        for bad in (
            {"query": "x", "top_k": 0}, {"query": "x", "top_k": 101},
            {"query": "x", "mode": "magic"}, {"query": "x", "tenant_id": "other"},
            {"query": "x", "filters": []},
        ):
            assert_error(await client.post(url, json=bad, headers=h), 422)
        for filters in (
            {"year": {"$where": "1"}}, {"year": {"gte": [1]}}, {"lang": {"in": []}},
            {"lang": {"in": [{"a": 1}]}}, {"lang": {"exists": "yes"}}, {"lang": {}},
            {"lang": {"eq": {"nested": True}}}, {"x" * 65: 1},
            {f"k{i}": 1 for i in range(33)},
        ):
            r = await client.post(url, json={"query": "basalt", "filters": filters}, headers=h)
            assert_error(r, 422, "invalid_filter")
        # Long queries are cut to what the embedder reads, and say so.
        long = " ".join(["basalt"] * 600)
        result = await _search(client, tenant, query=long)
        assert result["query_truncated"] is True and result["query_tokens"] > 254
        assert _titles(result) == ["volcano"]
        assert_error(await client.post(url, json={"query": "basalt"}), 401)


async def test_no_filter_reaches_another_tenant(tmp_path: Path, database: dict[str, Any]) -> None:
    async with app_client(tmp_path / "data", **database) as client:
        a, b = await new_tenant(client), await new_tenant(client)
        canary_a, canary_b = "zebracanary alpha", "zebracanary bravo"
        text = "Basalt flows from the volcano cool into hexagonal columns. {}"
        await _ingest(client, a, {"doc": (text.format(canary_a), {"tenant_id": b.tenant_id})})
        await _ingest(client, b, {"doc": (text.format(canary_b), {"tenant_id": a.tenant_id})})
        # Naming B's collection is a 404 (see test_unknown_and_foreign_scopes_are_one_404).
        hostile: list[dict[str, Any]] = [
            {}, {"filters": {"tenant_id": b.tenant_id}}, {"filters": {"tenant_id": a.tenant_id}},
            {"filters": {"tenant_id": {"in": [a.tenant_id, b.tenant_id]}}},
            {"collection_ids": [a.collection_id]},
        ]
        for extra in hostile:
            for mode in ("hybrid", "dense", "lexical"):
                result = await _search(client, a, query="zebracanary bravo basalt", top_k=100,
                                       mode=mode, **extra)
                texts = " ".join(hit["text"] for hit in result["results"])
                assert canary_b not in texts, (extra, mode)
                assert all(hit["collection_id"] == a.collection_id
                           for hit in result["results"])


async def test_unknown_and_foreign_scopes_are_one_404(
    tmp_path: Path, database: dict[str, Any]
) -> None:
    """A collection or document id the caller's tenant does not have is a 404, never an
    empty 200; another tenant's id gets the very same bytes as an id that never existed."""
    async with app_client(tmp_path / "data", **database) as client:
        a, b = await new_tenant(client), await new_tenant(client)
        mine = await _ingest(client, a, {"volcano": DOCS["volcano"], "glacier": DOCS["glacier"]})
        theirs = await _ingest(client, b, {"harbour": DOCS["harbour"]})
        deleted = mine.pop("glacier")
        r = await client.delete(f"/api/v1/documents/{deleted}", headers=a.headers)
        assert r.status_code == 204

        async def refused(**scope: Any) -> bytes:
            for mode in ("hybrid", "lexical"):
                r = await client.post("/api/v1/search", headers=a.headers,
                                      json={"query": "basalt", "mode": mode, **scope})
                assert r.status_code == 404, (scope, r.text)
            return r.content

        unknown = await refused(collection_ids=["0" * 32])
        assert unknown == await refused(collection_ids=[b.collection_id])
        assert unknown == (b'{"error":{"code":"collection_not_found",'
                           b'"message":"collection_ids[0]: collection not found"}}')
        # The first missing one is named by its position, never echoed.
        second = await refused(collection_ids=[a.collection_id, "no-such-collection"])
        assert second == await refused(collection_ids=[a.collection_id, b.collection_id])
        assert b"collection_ids[1]" in second and b"no-such" not in second

        unknown = await refused(document_ids=["0" * 32])
        assert unknown == await refused(document_ids=[theirs["harbour"]])
        assert unknown == await refused(document_ids=[deleted])
        assert unknown == (b'{"error":{"code":"document_not_found",'
                           b'"message":"document_ids[0]: document not found"}}')
        assert await refused(document_ids=[mine["volcano"], theirs["harbour"]]) == (
            await refused(document_ids=[mine["volcano"], "0" * 32]))
        # A foreign collection next to an own document: the collection is named.
        assert b"collection_ids[0]" in await refused(
            collection_ids=[b.collection_id], document_ids=[mine["volcano"]])

        # What the tenant has still searches.
        result = await _search(client, a, query="basalt", collection_ids=[a.collection_id],
                               document_ids=[mine["volcano"]])
        assert _titles(result) == ["volcano"]


async def test_rerank_true_without_a_reranker_is_refused(tmp_path: Path) -> None:
    """Asking for reranking that cannot happen is an error that says how to configure it,
    not results quietly ordered without it; rerank left out or false still works."""
    async with app_client(tmp_path / "data") as client:
        tenant = await new_tenant(client)
        await _ingest(client, tenant, {"volcano": DOCS["volcano"]})
        r = await client.post("/api/v1/search", headers=tenant.headers,
                              json={"query": "basalt", "rerank": True})
        assert_error(r, 422, "reranker_not_configured")
        message = r.json()["error"]["message"]
        assert "RAGD_MODELS__RERANKER=onnx" in message
        assert "RAGD_MODELS__RERANKER_PATH" in message
        for rerank in ({}, {"rerank": None}, {"rerank": False}):
            result = await _search(client, tenant, query="basalt", **rerank)
            assert result["reranked"] is False and _titles(result) == ["volcano"]


async def test_deleted_documents_vanish_and_reingest_swaps_atomically(
    tmp_path: Path, database: dict[str, Any]
) -> None:
    async with app_client(tmp_path / "data", ingestion={"workers": 0}, **database) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        tenant = await new_tenant(client)

        async def run_jobs(*job_ids: str) -> None:
            pool = build_workers(services, 1)
            pool.start()
            try:
                for job_id in job_ids:
                    assert (await wait_job(client, tenant, job_id))["status"] == "succeeded"
            finally:
                await pool.stop()

        first = await upload_text(client, tenant, "volcano", DOCS["volcano"][0])
        second = await upload_text(client, tenant, "glacier", DOCS["glacier"][0])
        # Queued, not ready: not searchable yet.
        assert _titles(await _search(client, tenant, query="basalt volcano")) == []
        await run_jobs(first.json()["job_id"], second.json()["job_id"])
        assert "volcano" in _titles(await _search(client, tenant, query="basalt volcano"))

        # A new version is queued: the old text stays searchable until it is ready.
        doc_id = first.json()["document_id"]
        r = await client.put(f"/api/v1/documents/{doc_id}", headers=tenant.headers,
                             json={"text": "Obsidian is volcanic glass formed by quick cooling."})
        assert r.status_code == 202
        old = await _search(client, tenant, query="basalt hexagonal columns", mode="lexical")
        assert old["results"] and old["results"][0]["document_id"] == doc_id
        await run_jobs(r.json()["job_id"])
        new = await _search(client, tenant, query="obsidian volcanic glass", mode="lexical")
        assert new["results"][0]["document_id"] == doc_id
        stale = await _search(client, tenant, query="basalt hexagonal columns", mode="lexical")
        assert all("Basalt" not in hit["text"] for hit in stale["results"])

        r = await client.delete(f"/api/v1/documents/{doc_id}", headers=tenant.headers)
        assert r.status_code == 204
        for mode in ("hybrid", "dense", "lexical"):
            result = await _search(client, tenant, query="obsidian volcanic glass", top_k=100,
                                   mode=mode)
            assert all(hit["document_id"] != doc_id for hit in result["results"]), mode


async def test_rerank_reorders_the_fused_candidates_and_explains_it(tmp_path: Path) -> None:
    from tests.models.tiny_models import build_cross_encoder, expected_logit

    model = build_cross_encoder(tmp_path / "reranker")
    docs = {
        "one": "the cat sat on the mat",
        "two": "the dog runs in the garden with the cat and the cat",
        "three": "python code in a vector index",
    }
    async with app_client(tmp_path / "data",
                          models={"reranker": "onnx", "reranker_path": str(model)}) as client:
        tenant = await new_tenant(client)
        await _ingest(client, tenant, {t: (text, {}) for t, text in docs.items()})
        query = "cat dog garden"
        result = await _search(client, tenant, query=query, explain=True, top_k=3)
        assert result["reranked"] is True and "rerank" in result["timings_ms"]
        hits = result["results"]
        expected = sorted(docs, key=lambda t: -expected_logit(query, docs[t]))
        assert [h["title"] for h in hits] == expected
        assert [h["explain"]["rerank"]["rank"] for h in hits] == [1, 2, 3]
        assert all(h["explain"]["placed_by"] == "rerank" for h in hits)
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] == h_score(hits[0]) and abs(
            scores[0] - expected_logit(query, docs[expected[0]])) < 1e-3
        # rerank: false skips the stage and says so.
        plain = await _search(client, tenant, query=query, explain=True, rerank=False)
        assert plain["reranked"] is False
        assert plain["results"][0]["explain"]["rerank"] == {"skipped": "not requested"}


def h_score(hit: dict[str, Any]) -> float:
    return float(hit["explain"]["rerank"]["score"])


async def test_query_cache_stays_within_its_byte_bound_under_search_load(tmp_path: Path) -> None:
    """60 distinct queries (8 at a time) through a 4 KiB query cache: the cache never holds
    more than its bound, evicts instead, and a repeated query is served from it."""
    import asyncio

    async with app_client(tmp_path / "data", public_performance=True,
                          memory={"query_cache_mb": 4 / 1024}) as client:
        tenant = await new_tenant(client)
        await _ingest(client, tenant, DOCS)

        async def cache() -> dict[str, Any]:
            memory = (await client.get("/performance/memory")).json()
            found: dict[str, Any] = next(
                c for c in memory["caches"] if c["name"] == "query_embeddings"
            )
            return found

        bound = (await cache())["max_bytes"]
        assert bound == 4096
        queries = [f"question number {n} about lava, ice and harbours" for n in range(60)]
        for start in range(0, len(queries), 8):
            results = await asyncio.gather(*(
                _search(client, tenant, query=q) for q in queries[start:start + 8]
            ))
            assert all(r["results"] for r in results)
            stats = await cache()
            assert 0 < stats["bytes"] <= bound, stats
        # A 384-d float32 vector is ~1.5 KB: two fit, 58 of the 60 were evicted.
        assert stats["entries"] <= 2 and stats["evictions"] >= 58, stats
        hits = stats["hits"]
        await _search(client, tenant, query=queries[-1])
        assert (await cache())["hits"] == hits + 1


async def test_a_chunk_that_continues_its_section_ranks_below_an_opening(
    tmp_path: Path, database: dict[str, Any]
) -> None:
    """A section's later chunks lose ``CONTINUATION_PENALTY`` against openings (hybrid and
    dense; lexical scores are left alone), and explain says so."""
    from ragd.retrieval.search import CONTINUATION_PENALTY

    filler = " ".join(f"Paragraph {n} of the volcano guide describes basalt, ash and lava "
                      "flows in some detail." for n in range(40))
    guide = (f"# Volcanoes\n\nHow do volcanoes erupt? {filler}\n\nCrater lakes fill with "
             "rain after an eruption ends.\n\n# Glaciers\n\nGlaciers carve fjords.")
    async with app_client(tmp_path / "data", **database) as client:
        tenant = await new_tenant(client)
        r = await upload_text(client, tenant, "guide", guide, content_type="text/markdown")
        assert r.status_code == 202, r.text
        assert (await wait_job(client, tenant, r.json()["job_id"]))["status"] == "succeeded"
        chunks = (await client.get(f"/api/v1/documents/{r.json()['document_id']}/chunks",
                                   headers=tenant.headers)).json()["items"]
        paths = [tuple(c["heading_path"]) for c in chunks]
        assert len(paths) >= 3 and paths[0] == paths[1], paths  # the section spans chunks
        continuing = {c["id"] for n, c in enumerate(chunks) if n and paths[n] == paths[n - 1]}
        for mode in ("hybrid", "dense"):
            result = await _search(client, tenant, query="crater lakes after an eruption",
                                   mode=mode, explain=True, top_k=20)
            hits = result["results"]
            assert {"sections"} <= set(result["timings_ms"])
            assert [h["score"] for h in hits] == sorted((h["score"] for h in hits),
                                                        reverse=True)
            for hit in hits:
                section = hit["explain"]["section"]
                assert section["continues"] == (hit["chunk_id"] in continuing)
                assert section["penalty"] == (CONTINUATION_PENALTY if section["continues"]
                                              else 0.0)
                if mode == "dense":
                    assert hit["score"] == pytest.approx(
                        hit["explain"]["dense"]["score"] - section["penalty"])
        lexical = await _search(client, tenant, query="crater lakes", mode="lexical",
                                explain=True)
        assert all("section" not in h["explain"] for h in lexical["results"])
        assert "sections" not in lexical["timings_ms"]
