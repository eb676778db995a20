"""/performance/* and /metrics: schemas, access rules, and that startup loads no model."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from ragd.app import create_app
from ragd.db.tables import JobRow, utcnow
from tests.conftest import (
    STRONG_PASSWORD,
    assert_error,
    bearer,
    login,
    make_settings,
    register,
    running,
)
from tests.generation.fakes import FakeLLMServer, Step
from tests.generation.serving import serving
from tests.ingestion.conftest import (
    Tenant,
    app_client,
    ingest_settings,
    new_tenant,
    upload_text,
    wait_job,
)

GETS = [
    "/performance/memory",
    "/performance/models",
    "/performance/llm-providers",
    "/performance/startup-metrics",
    "/performance/optimization-report",
    "/metrics",
]


async def _superuser(app: FastAPI, client: httpx.AsyncClient) -> dict[str, Any]:
    await app.state.services.accounts.create_superuser(
        email="ops@example.com", password=STRONG_PASSWORD, tenant_name="ops"
    )
    tokens: dict[str, Any] = await login(client, "ops@example.com")
    return tokens


async def test_health_is_public_but_its_figures_are_not(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Anyone (a load balancer) sees the status of each check; memory figures, limits,
    version, uptime and the provider chain would help an attacker size the box up."""
    anonymous = await client.get("/performance/health")
    assert anonymous.status_code == 200
    body = anonymous.json()
    assert set(body) == {"status", "checks", "reasons"}
    assert body["status"] in {"ok", "degraded", "critical"}
    assert all(set(check) == {"name", "status"} for check in body["checks"])
    tenant_admin = await register(client)
    as_tenant_admin = await client.get(
        "/performance/health", headers=bearer(tenant_admin["access_token"])
    )
    assert as_tenant_admin.json() == body
    bad_token = await client.get("/performance/health", headers=bearer("not-a-token"))
    assert bad_token.status_code == 200 and bad_token.json() == body

    ops = await _superuser(app, client)
    full = (await client.get("/performance/health", headers=bearer(ops["access_token"]))).json()
    assert {check["name"] for check in full["checks"]} == {"database", "memory", "models",
                                                           "llm", "jobs", "uptime"}
    assert all(check["detail"] for check in full["checks"])
    # No provider configured: the chain is the extractive last resort alone.
    assert full["llm_providers"] == [
        {"name": "extractive", "type": "extractive", "status": "configured"}
    ]
    assert full["uptime_seconds"] >= 0 and full["version"]


@pytest.mark.parametrize("path", GETS)
async def test_gets_need_a_platform_admin(
    app: FastAPI, client: httpx.AsyncClient, path: str
) -> None:
    assert_error(await client.get(path), 401)
    tenant_admin = await register(client)
    assert_error(await client.get(path, headers=bearer(tenant_admin["access_token"])), 403)
    ops = await _superuser(app, client)
    assert (await client.get(path, headers=bearer(ops["access_token"]))).status_code == 200


@pytest.mark.parametrize("path", GETS)
async def test_public_performance_opens_the_gets(tmp_path: Path, path: str) -> None:
    async with running(create_app(make_settings(tmp_path, public_performance=True))) as client:
        assert (await client.get(path)).status_code == 200


async def test_startup_loads_no_model_and_models_are_listed(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    ops = await _superuser(app, client)
    body = (await client.get("/performance/models", headers=bearer(ops["access_token"]))).json()
    names = {model["name"]: model for model in body["models"]}
    assert {"embedder", "keywords"} <= set(names)
    assert all(model["state"] == "not_loaded" for model in names.values())
    assert body["reranker"] == "none"
    assert "reranker" not in names
    assert body["embedder"]["name"]


async def test_startup_metrics_phases(app: FastAPI, client: httpx.AsyncClient) -> None:
    ops = await _superuser(app, client)
    body = (await client.get("/performance/startup-metrics",
                             headers=bearer(ops["access_token"]))).json()
    assert list(body["phases"]) == ["settings", "database", "migrations", "services",
                                    "app_ready"]
    assert body["total_seconds"] == pytest.approx(sum(body["phases"].values()), abs=1e-3)
    assert body["uptime_seconds"] >= 0


async def test_memory_snapshot_and_report_schema(app: FastAPI, client: httpx.AsyncClient) -> None:
    ops = await _superuser(app, client)
    memory = (await client.get("/performance/memory", headers=bearer(ops["access_token"]))).json()
    assert memory["sample"]["rss"] > 0
    assert memory["thresholds"]["soft_bytes"] == 1536 * 2**20
    assert memory["thresholds"]["emergency_bytes"] == 2048 * 2**20
    assert {cache["name"] for cache in memory["caches"]} == {
        "query_embeddings", "keywords", "keyword_phrases"
    }
    report = (await client.get("/performance/optimization-report",
                               headers=bearer(ops["access_token"]))).json()
    assert report["status"] in {"ok", "attention", "critical"}
    assert isinstance(report["recommendations"], list)


@pytest.mark.parametrize(
    ("path", "body"),
    [("/performance/memory/cleanup", {}), ("/performance/memory/cleanup", {"emergency": True}),
     ("/performance/models/cleanup", {}), ("/performance/models/cleanup", {"names": ["embedder"]})],
)
async def test_cleanup_actions_are_platform_admin_only(
    app: FastAPI, client: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    assert_error(await client.post(path, json=body), 401)
    tenant_admin = await register(client)
    assert_error(await client.post(path, json=body,
                                   headers=bearer(tenant_admin["access_token"])), 403)
    ops = await _superuser(app, client)
    response = await client.post(path, json=body, headers=bearer(ops["access_token"]))
    assert response.status_code == 200, response.text
    assert response.json()["freed_bytes"] >= 0


async def test_memory_cleanup_is_recorded(app: FastAPI, client: httpx.AsyncClient) -> None:
    ops = await _superuser(app, client)
    headers = bearer(ops["access_token"])
    event = (await client.post("/performance/memory/cleanup", json={"emergency": True},
                               headers=headers)).json()
    assert event["level"] == "emergency"
    assert event["rss_before"] > 0 and event["rss_after"] > 0
    memory = (await client.get("/performance/memory", headers=headers)).json()
    assert memory["events"][-1]["level"] == "emergency"


@pytest.mark.parametrize(
    "body",
    [{"names": ["nope"]}, {"names": ["embedder", "x" * 65]}, {"names": "embedder"},
     {"emergency": "yes"}, {"unknown": 1}, {"names": ["m"] * 33}],
)
async def test_models_cleanup_rejects_bad_input(
    app: FastAPI, client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    ops = await _superuser(app, client)
    response = await client.post("/performance/models/cleanup", json=body,
                                 headers=bearer(ops["access_token"]))
    assert_error(response, 422)


async def test_prometheus_output_parses(app: FastAPI, client: httpx.AsyncClient) -> None:
    ops = await _superuser(app, client)
    headers = bearer(ops["access_token"])
    await client.get("/api/v1/auth/me", headers=headers)
    await client.get("/api/v1/auth/me", headers=bearer("garbage"))
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in ("ragd_http_requests", "ragd_http_request_duration_seconds", "ragd_auth",
                 "ragd_memory_rss_bytes", "ragd_cache_hits", "ragd_model_loaded"):
        assert name in families, name
    routes = {s.labels.get("route") for s in families["ragd_http_requests"].samples}
    assert "/api/v1/auth/me" in routes
    reasons = {(s.labels["outcome"], s.labels["reason"]) for s in families["ragd_auth"].samples
               if s.name == "ragd_auth_total"}
    assert ("success", "access_token") in reasons
    assert ("failure", "malformed") in reasons
    loaded = {s.labels["model"]: s.value for s in families["ragd_model_loaded"].samples}
    assert loaded["embedder"] == 0.0


async def test_failed_model_load_is_reported_and_retried(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    missing.mkdir()
    settings = make_settings(
        tmp_path / "data",
        public_performance=True,
        models={"embedder": "onnx", "embedder_path": missing, "load_retry_seconds": 30},
    )
    app = create_app(settings)
    async with running(app) as client:
        user = await register(client)
        response = await client.post("/api/v1/keywords", json={"text": "debian package tools"},
                                     headers=bearer(user["access_token"]))
        assert_error(response, 503)
        assert int(response.headers["Retry-After"]) >= 1
        again = await client.post("/api/v1/keywords", json={"text": "debian package tools"},
                                  headers=bearer(user["access_token"]))
        assert_error(again, 503, "model_unavailable")
        models = (await client.get("/performance/models")).json()["models"]
        embedder = next(m for m in models if m["name"] == "embedder")
        assert embedder["state"] == "failed"
        assert embedder["last_error"] and embedder["next_retry_at"]
        health = (await client.get("/performance/health")).json()
        assert health["status"] == "degraded"
        report = (await client.get("/performance/optimization-report")).json()
        assert any(r["id"] == "model-failed-embedder" for r in report["recommendations"])


# -- health: the reasons behind a status that is not ok ----------------------------------------

ROOMY = {"soft_limit_mb": 100_000, "emergency_limit_mb": 200_000}
VOLCANO = ("Basalt columns form when thick lava flows cool slowly and contract. The cracks "
           "meet at angles near 120 degrees, so the columns are mostly hexagonal.")
QUESTION = "Why are basalt columns hexagonal?"


def _provider(name: str, server: FakeLLMServer) -> dict[str, Any]:
    return {"name": name, "type": "openai", "model": "fake-model", "base_url": server.base_url,
            "api_key": "sk-test-secret-key", "timeout_seconds": 5, "max_attempts": 1}


def _reasons(body: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(r["code"], r["status"], r.get("subject")) for r in body["reasons"]]


async def _ready(client: httpx.AsyncClient, tenant: Tenant, title: str, text: str) -> None:
    r = await upload_text(client, tenant, title, text)
    assert r.status_code == 202, r.text
    assert (await wait_job(client, tenant, r.json()["job_id"]))["status"] == "succeeded"


async def test_health_names_an_open_breaker_and_every_provider_down(tmp_path: Path) -> None:
    """Real providers against fake LLM servers on 127.0.0.1: one failing provider among
    healthy ones leaves the status ok; its breaker opening makes it degraded, naming it;
    every provider failing or open adds ``llm_providers_down``; a success takes it back."""
    with FakeLLMServer("openai", default=Step("status", status=500)) as down, \
            FakeLLMServer("openai") as up:
        llm = {"providers": [_provider("down", down), _provider("up", up)],
               "breaker_failures": 2}
        async with app_client(tmp_path / "data", llm=llm, memory=ROOMY) as client:
            app = client.app  # type: ignore[attr-defined]
            admin = bearer((await _superuser(app, client))["access_token"])
            tenant = await new_tenant(client)
            await _ready(client, tenant, "volcano", VOLCANO)

            async def health(headers: dict[str, str] = admin) -> dict[str, Any]:
                r = await client.get("/performance/health", headers=headers)
                assert r.status_code == 200, r.text
                body: dict[str, Any] = r.json()
                return body

            async def chat(provider: str) -> str:
                r = await client.post("/api/v1/chat", headers=tenant.headers,
                                      json={"question": QUESTION, "providers": [provider]})
                assert r.status_code == 200, r.text
                return str(r.json()["provider"])

            assert ((await health())["status"], (await health())["reasons"]) == ("ok", [])
            assert await chat("down") == "extractive"  # failed once; "up" never called
            assert (await health())["status"] == "ok"
            assert await chat("down") == "extractive"  # the second failure opens its breaker
            opened = await health()
            assert opened["status"] == "degraded"
            assert _reasons(opened) == [("llm_breaker_open", "degraded", "down")]
            assert "down" in opened["reasons"][0]["message"]
            assert {c["name"]: c["status"] for c in opened["checks"]}["llm"] == "degraded"

            up.push(Step("status", status=503))
            assert await chat("up") == "extractive"  # now every configured provider is down
            both = await health()
            assert _reasons(both) == [("llm_providers_down", "degraded", None),
                                      ("llm_breaker_open", "degraded", "down")]
            assert "down, up" in both["reasons"][0]["message"]
            anonymous = await health({})
            assert anonymous["status"] == "degraded"
            assert anonymous["reasons"] == [  # codes only: no names, no figures
                {"code": "llm_providers_down", "status": "degraded"},
                {"code": "llm_breaker_open", "status": "degraded"},
            ]

            assert await chat("up") == "up"  # recovered
            assert _reasons(await health()) == [("llm_breaker_open", "degraded", "down")]


async def test_health_and_metrics_see_a_job_running_past_its_lease(tmp_path: Path) -> None:
    """No worker in this process: an upload's job waits (queue depth, read from the
    database); a worker claims it and dies, so its lease runs out: ``jobs_stuck``."""
    async with app_client(tmp_path / "data", ingestion={"workers": 0}, memory=ROOMY,
                          public_performance=True) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        tenant = await new_tenant(client)
        r = await upload_text(client, tenant, "volcano", VOLCANO)
        assert r.status_code == 202, r.text
        waiting = _samples(await _scrape(client), "ragd_jobs")
        assert waiting[("queued", "ingest")] == 1 and waiting[("running", "ingest")] == 0
        assert waiting[("queued", "delete_collection")] == 0
        assert (await client.get("/performance/health")).json()["status"] == "ok"

        claimed = await services.queue.claim("dead-worker", ["ingest"])
        assert claimed is not None and claimed.id == r.json()["job_id"]
        # The worker dies: its lease (60 s) is left to run out, as it would be 90 s later.
        async with services.db.transaction() as s:
            await s.execute(update(JobRow).where(JobRow.id == claimed.id)
                            .values(lease_expires_at=utcnow() - timedelta(seconds=90)))
        body = (await client.get("/performance/health")).json()
        assert body["status"] == "degraded"
        assert _reasons(body) == [("jobs_stuck", "degraded", None)]
        assert "1 job(s) running past their lease" in body["reasons"][0]["message"]
        assert {c["name"]: c["status"] for c in body["checks"]}["jobs"] == "degraded"
        text = await _scrape(client)
        running = _samples(text, "ragd_jobs")
        assert running[("queued", "ingest")] == 0 and running[("running", "ingest")] == 1
        stuck = {f.name: f for f in text_string_to_metric_families(text)}["ragd_jobs_stuck"]
        assert [sample.value for sample in stuck.samples] == [1.0]


async def test_health_is_degraded_with_rss_above_the_soft_limit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, memory={"soft_limit_mb": 1, "emergency_limit_mb": 100_000})
    async with running(create_app(settings)) as client:
        anonymous = (await client.get("/performance/health")).json()
        assert anonymous["status"] == "degraded"
        assert anonymous["reasons"] == [{"code": "memory_above_soft_limit", "status": "degraded"}]
        assert {c["name"]: c["status"] for c in anonymous["checks"]}["memory"] == "degraded"


async def _scrape(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> str:
    r = await client.get("/metrics", headers=headers or {})
    assert r.status_code == 200, r.text
    return r.text


def _samples(
    text: str, family: str, *labels: str, sample: str = ""
) -> dict[tuple[str, ...], float]:
    """The samples named ``family + sample`` (``_total`` of a counter, ``_bucket`` of a
    histogram...), keyed by the values of ``labels`` (default: status and kind)."""
    keys = labels or ("status", "kind")
    found = {f.name: f for f in text_string_to_metric_families(text)}[family]
    return {tuple(s.labels[k] for k in keys): s.value
            for s in found.samples if s.name == family + sample}


# -- /metrics after real work on a real server ---------------------------------------------------


async def test_metrics_after_real_ingestion_search_and_chat(tmp_path: Path) -> None:
    """A real uvicorn server: documents ingested by its workers, searches in every mode,
    chat answered by a fake LLM provider, whole and streamed; then one scrape, parsed."""
    with FakeLLMServer("openai") as up:
        settings = ingest_settings(
            tmp_path / "data", public_performance=True, memory=ROOMY,
            llm={"providers": [_provider("up", up)]},
        )
        with serving(settings) as base:
            async with httpx.AsyncClient(base_url=base, timeout=120) as client:
                tenant = await new_tenant(client)
                texts = {"volcano": VOLCANO, "glacier": "Glaciers carve fjords over "
                         "millennia. Meltwater feeds the rivers below.",
                         "harbour": "Cranes unload containers in the harbour at dawn."}
                for title, text in texts.items():
                    await _ready(client, tenant, title, text)
                listed = (await client.get("/api/v1/documents", headers=tenant.headers)).json()
                chunks = sum(d["chunk_count"] for d in listed["items"])
                for mode in ("hybrid", "dense", "lexical"):
                    r = await client.post("/api/v1/search", headers=tenant.headers,
                                          json={"query": "basalt columns", "mode": mode})
                    assert r.status_code == 200, r.text
                whole = await client.post("/api/v1/chat", headers=tenant.headers,
                                          json={"question": QUESTION})
                assert whole.status_code == 200 and whole.json()["provider"] == "up"
                streamed = await client.post("/api/v1/chat", headers=tenant.headers,
                                             json={"question": QUESTION, "stream": True})
                assert streamed.status_code == 200 and "event: done" in streamed.text
                text = await _scrape(client)

    depth = _samples(text, "ragd_jobs")
    assert depth == {(status, kind): 0.0 for status in ("queued", "running")
                     for kind in ("delete_collection", "ingest")}
    stages = _samples(text, "ragd_job_stage_duration_seconds", "kind", "stage", "le",
                      sample="_bucket")
    for stage in ("parse", "chunk", "embed", "keywords", "index", "total"):
        assert stages[("ingest", stage, "+Inf")] == len(texts), stage
    indexed = {f.name: f for f in text_string_to_metric_families(text)}["ragd_chunks_indexed"]
    assert [s.value for s in indexed.samples if s.name == "ragd_chunks_indexed_total"] == [chunks]
    assert chunks >= len(texts)
    search = _counts(text, "ragd_search_duration_seconds", "mode")
    # Each chat searched too (hybrid): the histogram is of the one search path.
    assert search == {("dense",): 1, ("lexical",): 1, ("hybrid",): 3}
    assert _counts(text, "ragd_chat_duration_seconds", "stream") == {
        ("false",): 1, ("true",): 1
    }
    outcomes = _samples(text, "ragd_llm_provider_outcomes", "provider", "outcome",
                        sample="_total")
    assert outcomes == {("up", "ok"): 2.0}


def _counts(text: str, family: str, *labels: str) -> dict[tuple[str, ...], int]:
    """A histogram's observation counts, by ``labels``."""
    found = {f.name: f for f in text_string_to_metric_families(text)}[family]
    return {tuple(s.labels[k] for k in labels): int(s.value)
            for s in found.samples if s.name == f"{family}_count"}
