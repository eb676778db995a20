"""``/v1/embeddings`` never tokenises or embeds on the event loop.

The real app and route, with the model runtime built on a recording embedder (the fake
stands in for the ONNX model only): every embedder call is recorded with its thread, and
the tokenizer can be held until the event loop itself releases it, which only works if the
loop is free while the tokenizer runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from ragd.api.deps import get_services
from ragd.app import create_app
from ragd.container import Services
from ragd.models.base import EmbedderInfo, TextKind, Vectors
from ragd.models.registry import ModelRegistry
from ragd.models.runtime import ModelRuntime
from tests.conftest import bearer, make_settings, register, running

DIM = 8
MAX_TOKENS = 16
_WORD = re.compile(r"\w+|[^\w\s]")


class RecordingEmbedder:
    """Words are tokens ([CLS] and [SEP] added); vectors come from a hash of the text.

    Each call is recorded as ``(method, thread ident, thread name)``; ``gate``, when set,
    holds :meth:`count_tokens` until the test releases it.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []
        self.gate: threading.Event | None = None
        self.tokenizing = threading.Event()
        self._lock = threading.Lock()

    def _record(self, method: str) -> None:
        thread = threading.current_thread()
        with self._lock:
            self.calls.append((method, threading.get_ident(), thread.name))

    @property
    def info(self) -> EmbedderInfo:
        return EmbedderInfo("recording", DIM, MAX_TOKENS, True, "test")

    def embed(self, texts: Sequence[str], *, kind: TextKind = "passage") -> Vectors:
        self._record("embed")
        rows = []
        for text in texts:
            digest = hashlib.sha256(f"{kind}\x00{text}".encode()).digest()
            row = np.frombuffer(digest[: DIM * 4], dtype=np.uint32).astype(np.float32) - 2**31
            rows.append(row / np.linalg.norm(row))
        return np.stack(rows).astype(np.float32)

    def embed_many(self, texts: Sequence[str], *, kind: TextKind = "passage") -> Vectors:
        return self.embed(texts, kind=kind)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        self._record("count_tokens")
        self.tokenizing.set()
        if self.gate is not None and not self.gate.wait(30):
            raise RuntimeError("the event loop never released the tokenizer")
        return [len(_WORD.findall(text)) + 2 for text in texts]

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        self._record("token_spans")
        return [match.span() for match in _WORD.finditer(text)]

    def close(self) -> None:
        return None


@dataclasses.dataclass
class Env:
    client: httpx.AsyncClient
    headers: dict[str, str]
    embedder: RecordingEmbedder


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    settings = make_settings(tmp_path / "data")
    app: FastAPI = create_app(settings)
    embedder = RecordingEmbedder()
    async with running(app) as client:
        services: Services = app.state.services
        runtime = ModelRuntime(
            settings.models, ModelRegistry(settings.models), embedder_loader=lambda: embedder,
            embedder_name="recording", reranker_loader=None, query_cache_mb=1,
            keyword_cache_mb=1, cache_ttl_seconds=60,
        )
        swapped = dataclasses.replace(services, runtime=runtime)
        app.dependency_overrides[get_services] = lambda: swapped
        try:
            account = await register(client)
            yield Env(client, bearer(account["access_token"]), embedder)
        finally:
            app.dependency_overrides.clear()
            await runtime.close()


async def test_tokenising_and_embedding_run_in_the_model_pool(env: Env) -> None:
    loop_thread = threading.get_ident()
    texts = ["Basalt columns are hexagonal.", "word " * 3_000]  # the second is cut at 16
    response = await env.client.post(
        "/v1/embeddings", json={"input": texts, "encoding_format": "float"},
        headers=env.headers,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [len(item["embedding"]) for item in body["data"]] == [DIM, DIM]
    assert body["model"] == "recording"
    assert body["usage"]["prompt_tokens"] == (5 + 2) + MAX_TOKENS

    methods = {method for method, _, _ in env.embedder.calls}
    assert {"embed", "count_tokens"} <= methods
    for method, ident, name in env.embedder.calls:
        assert ident != loop_thread, f"{method} ran on the event loop"
        assert name.startswith("ragd-infer"), f"{method} ran in {name}, not the model pool"


async def test_the_loop_is_free_while_the_tokenizer_works(env: Env) -> None:
    env.embedder.gate = threading.Event()
    request = asyncio.create_task(env.client.post(
        "/v1/embeddings", json={"input": ["x " * 5_000] * 16}, headers=env.headers,
    ))
    # Wait (off the loop) until the tokenizer is busy, then release it from the loop: were
    # it running on the loop, this coroutine could not run until the tokenizer gave up.
    assert await asyncio.to_thread(env.embedder.tokenizing.wait, 30)
    env.embedder.gate.set()
    response = await request
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == 16 * MAX_TOKENS
