"""/performance/* and /metrics: schemas, access rules, and that startup loads no model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from ragd.app import create_app
from tests.conftest import (
    STRONG_PASSWORD,
    assert_error,
    bearer,
    login,
    make_settings,
    register,
    running,
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
    assert set(body) == {"status", "checks"}
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
                                                           "uptime"}
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
