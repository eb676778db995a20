"""POST /api/v1/keywords with the real embedder, end to end over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

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

TEXT = (
    "Python is a programming language that lets you work quickly and integrate systems more "
    "effectively. The Python interpreter and the extensive standard library are freely "
    "available. Garbage collection in CPython uses reference counting plus a cycle detector."
)


async def test_keywords_are_relevant_and_load_the_embedder_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    user = await register(client)
    response = await client.post("/api/v1/keywords", json={"text": TEXT, "top_n": 5},
                                 headers=bearer(user["access_token"]))
    assert response.status_code == 200, response.text
    body = response.json()
    words = [item["keyword"] for item in body["keywords"]]
    assert len(words) == 5 and len(set(words)) == 5
    assert any("python" in word for word in words)
    assert all(word in TEXT.lower() for word in words)
    assert all(-1.0 <= item["score"] <= 1.0 for item in body["keywords"])
    assert body["model"] == "all-MiniLM-L6-v2"
    again = await client.post("/api/v1/keywords", json={"text": TEXT, "top_n": 5},
                              headers=bearer(user["access_token"]))
    assert again.json() == body  # deterministic (and served from the keyword cache)

    await app.state.services.accounts.create_superuser(
        email="ops@example.com", password=STRONG_PASSWORD, tenant_name="ops")
    ops = await login(client, "ops@example.com")
    models = (await client.get("/performance/models", headers=bearer(ops["access_token"]))).json()
    state = {m["name"]: m for m in models["models"]}
    assert state["embedder"]["state"] == "loaded"
    assert state["embedder"]["use_count"] >= 1
    assert state["embedder"]["rss_delta_bytes"] is not None
    assert models["embedder"]["dimension"] == 384
    assert models["embedder"]["variant"]
    cache = {c["name"]: c for c in
             (await client.get("/performance/memory",
                               headers=bearer(ops["access_token"]))).json()["caches"]}
    assert cache["keywords"]["hits"] >= 1


async def test_keywords_input_rules(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, models={"keywords_max_chars": 200})
    async with running(create_app(settings)) as client:
        assert_error(await client.post("/api/v1/keywords", json={"text": TEXT}), 401)
        user = await register(client)
        headers = bearer(user["access_token"])
        for body, code in [
            ({"text": ""}, "validation_error"),
            ({"text": "   \n "}, "empty_text"),
            ({"text": "x" * 201}, "text_too_long"),
            ({"text": "fine text", "top_n": 0}, "validation_error"),
            ({"text": "fine text", "top_n": 51}, "validation_error"),
            ({"text": 42}, "validation_error"),
            ({"text": "fine", "tenant_id": "other"}, "validation_error"),
        ]:
            assert_error(await client.post("/api/v1/keywords", json=body, headers=headers),
                         422, code)
        only_stop_words = await client.post("/api/v1/keywords", json={"text": "the and of it"},
                                            headers=headers)
        assert only_stop_words.status_code == 200
        assert only_stop_words.json()["keywords"] == []
