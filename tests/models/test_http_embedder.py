"""The OpenAI-compatible embedder against a real HTTP server on 127.0.0.1.

The server speaks the embeddings protocol with scripted behaviour chosen by the request's
``model``: correct answers, shuffled ``index`` order, errors, malformed bodies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragd.errors import InvalidInput, Unavailable
from ragd.models.base import Embedder
from ragd.models.factory import embedder_loader, embedder_name
from ragd.models.http_embedder import MAX_INPUTS_PER_REQUEST, PROBE_INPUT, OpenAIEmbedder
from ragd.settings import ModelsSettings
from tests.conftest import make_settings
from tests.waiting import HANG_TIMEOUT

API_KEY = "sk-test-0123456789abcdef"
DIM = 8


def raw_vector(text: str, dim: int = DIM) -> list[float]:
    """Deterministic, deliberately not normalised."""
    digest = hashlib.sha256(text.encode()).digest()
    return [(byte - 128) / 16.0 for byte in digest[:dim]]


@dataclass
class Script:
    requests: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    #: Set when the test is over: the "slow" model stalls until then.
    over: threading.Event = field(default_factory=threading.Event)


class Handler(BaseHTTPRequestHandler):
    script: Script

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def send(self, status: int, body: Any, *, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out first: what the "slow" script is for

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        payload = json.loads(self.rfile.read(length))
        model, inputs = payload["model"], payload["input"]
        script = self.script
        script.requests.append(
            {"path": self.path, "model": model, "inputs": inputs,
             "auth": self.headers.get("Authorization")}
        )
        script.counts[model] = script.counts.get(model, 0) + 1
        if self.path != "/v1/embeddings":
            self.send(404, {"error": {"message": "no such route", "code": "not_found"}})
            return
        if self.headers.get("Authorization") != f"Bearer {API_KEY}":
            self.send(401, {"error": {"message": "Incorrect API key provided: sk-wr***ng",
                                      "type": "invalid_request_error",
                                      "code": "invalid_api_key"}})
            return
        probe = inputs == [PROBE_INPUT]
        dim = DIM
        if model == "error500":
            self.send(500, {"error": {"message": "boom", "type": "server_error"}})
            return
        if model == "flaky" and script.counts[model] == 2:  # the first call after the probe
            self.send(503, {"error": {"message": "overloaded"}})
            return
        if model == "malformed" and not probe:
            self.send(200, None, raw=b'{"data": [{"index": 0, "embedding": [0.1, ')
            return
        if model == "invalid" and not probe:
            self.send(400, {"error": {"message": "This model's maximum context length is 8191",
                                      "code": "context_length_exceeded"}})
            return
        if model == "slow" and not probe:
            # A hung upstream: it answers only after the test, so only the client's own
            # timeout can end the request.
            script.over.wait(HANG_TIMEOUT)
        if model == "wrong-dim" and not probe:
            dim = DIM - 2
        data = [
            {"object": "embedding", "index": index, "embedding": raw_vector(text, dim)}
            for index, text in enumerate(inputs)
        ]
        if model == "shuffled":
            data = data[1::2] + data[0::2]
        if model == "count-mismatch" and not probe:
            data = data[:-1]
        if model == "ragged" and not probe and len(data) > 1:
            data[1]["embedding"] = data[1]["embedding"][:-1]
        self.send(200, {"object": "list", "data": data, "model": model,
                        "usage": {"prompt_tokens": 1, "total_tokens": 1}})


@dataclass
class Server:
    url: str
    script: Script


@pytest.fixture
def server() -> Iterator[Server]:
    script = Script()
    handler = type("ScriptedHandler", (Handler,), {"script": script})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True  # a slow scripted answer must not hold up the teardown
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}/v1", script)
    finally:
        script.over.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def settings_for(server: Server, model: str = "ok", **overrides: Any) -> ModelsSettings:
    values: dict[str, Any] = {
        "embedder": "openai",
        "openai_base_url": server.url,
        "openai_model": model,
        "openai_api_key": API_KEY,
    }
    values.update(overrides)
    return ModelsSettings(**values)


def make(server: Server, model: str = "ok", **overrides: Any) -> OpenAIEmbedder:
    return OpenAIEmbedder(settings_for(server, model, **overrides), backoff_seconds=0.01)


def normalised(rows: list[list[float]]) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_probe_then_batches_of_at_most_256(server: Server) -> None:
    embedder = make(server)
    assert isinstance(embedder, Embedder)
    assert embedder.info.dimension == DIM  # known from the probe at load
    assert (embedder.info.name, embedder.info.variant, embedder.info.normalized) == (
        "ok",
        "remote",
        True,
    )
    texts = [f"text number {i}" for i in range(600)]
    vectors = embedder.embed(texts)
    assert vectors.shape == (600, DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, normalised([raw_vector(t) for t in texts]), atol=1e-6)
    sizes = [len(r["inputs"]) for r in server.script.requests]
    assert sizes == [1, MAX_INPUTS_PER_REQUEST, MAX_INPUTS_PER_REQUEST, 88]
    assert server.script.requests[0]["inputs"] == [PROBE_INPUT]
    assert all(r["auth"] == f"Bearer {API_KEY}" for r in server.script.requests)
    embedder.close()


def test_shuffled_indexes_are_put_back_in_order(server: Server) -> None:
    embedder = make(server, "shuffled")
    texts = ["alpha", "beta", "gamma", "delta", "epsilon"]
    np.testing.assert_allclose(
        embedder.embed(texts), normalised([raw_vector(t) for t in texts]), atol=1e-6
    )


def test_raw_vectors_when_normalisation_is_off(server: Server) -> None:
    embedder = make(server, normalize=False)
    assert embedder.info.normalized is False
    np.testing.assert_allclose(embedder.embed(["raw"])[0], raw_vector("raw"), atol=1e-6)


def test_prefixes_are_sent(server: Server) -> None:
    embedder = make(server, query_prefix="query: ", passage_prefix="passage: ")
    embedder.embed(["find me"], kind="query")
    embedder.embed(["a document"])
    assert [r["inputs"] for r in server.script.requests[1:]] == [
        ["query: find me"],
        ["passage: a document"],
    ]


def test_empty_input_makes_no_request(server: Server) -> None:
    embedder = make(server)
    assert embedder.embed([]).shape == (0, DIM)
    assert len(server.script.requests) == 1  # the probe only


def test_wrong_key_fails_the_load_without_leaking_it(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(Unavailable) as caught:
        OpenAIEmbedder(settings_for(server, openai_api_key="sk-wrong-key-000"))
    assert caught.value.code == "embedder_unauthorized"
    assert "401" in caught.value.message and "invalid_api_key" in caught.value.message
    for text in (caught.value.message, caplog.text):
        assert "sk-wrong-key-000" not in text
        assert "sk-wr***" not in text  # the provider's echo of the key is not repeated
        assert API_KEY not in text
    assert len(server.script.requests) == 1  # never retried


def test_server_error_is_retried_then_reported(server: Server) -> None:
    with pytest.raises(Unavailable, match="HTTP 500"):
        make(server, "error500")
    assert server.script.counts["error500"] == 3  # two retries, then the error


def test_transient_error_is_retried(server: Server) -> None:
    embedder = make(server, "flaky")
    vectors = embedder.embed(["second time lucky"])
    np.testing.assert_allclose(vectors, normalised([raw_vector("second time lucky")]), atol=1e-6)
    assert server.script.counts["flaky"] == 3  # probe, 503, retry


def test_malformed_json_is_unavailable(server: Server) -> None:
    embedder = make(server, "malformed")
    with pytest.raises(Unavailable, match="malformed JSON"):
        embedder.embed(["x"])


def test_wrong_dimension_is_unavailable(server: Server) -> None:
    embedder = make(server, "wrong-dim")
    with pytest.raises(Unavailable, match=f"{DIM - 2}-d vectors; this embedder is {DIM}-d"):
        embedder.embed(["x"])


def test_inconsistent_rows_are_unavailable(server: Server) -> None:
    embedder = make(server, "ragged")
    with pytest.raises(Unavailable, match="inconsistent dimensions"):
        embedder.embed(["a", "b", "c"])


def test_missing_embeddings_are_unavailable(server: Server) -> None:
    embedder = make(server, "count-mismatch")
    with pytest.raises(Unavailable, match="2 embeddings for 3 inputs"):
        embedder.embed(["a", "b", "c"])


def test_refused_input_is_invalid_input(server: Server) -> None:
    embedder = make(server, "invalid")
    with pytest.raises(InvalidInput, match="context_length_exceeded"):
        embedder.embed(["far too long"])
    assert server.script.counts["invalid"] == 2  # probe + one attempt: 400 is not retried


def test_timeout_is_unavailable(server: Server) -> None:
    embedder = make(server, "slow", openai_timeout_seconds=0.2)
    with pytest.raises(Unavailable, match="timed out"):
        embedder.embed(["x"])


def test_wrong_route_is_unavailable(server: Server) -> None:
    settings = settings_for(server, openai_base_url=server.url.removesuffix("/v1"))
    with pytest.raises(Unavailable, match="HTTP 404"):
        OpenAIEmbedder(settings, backoff_seconds=0.01)


def test_unreachable_provider_is_unavailable() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = ModelsSettings(
        embedder="openai", openai_base_url=f"http://127.0.0.1:{port}/v1", openai_model="ok"
    )
    with pytest.raises(Unavailable, match="unreachable"):
        OpenAIEmbedder(settings, max_retries=1, backoff_seconds=0.01)


def test_closed_embedder_is_unavailable(server: Server) -> None:
    embedder = make(server)
    embedder.close()
    with pytest.raises(Unavailable, match="closed"):
        embedder.embed(["x"])


def test_count_tokens_is_an_estimate(server: Server) -> None:
    embedder = make(server)
    assert embedder.count_tokens(["", "abcd", "abcde"]) == [1, 1, 2]


def test_factory_builds_it(server: Server, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        models={
            "embedder": "openai",
            "openai_base_url": server.url,
            "openai_model": "ok",
            "openai_api_key": API_KEY,
        },
    )
    assert embedder_name(settings) == "ok"
    embedder = embedder_loader(settings)()
    try:
        assert isinstance(embedder, OpenAIEmbedder)
        assert embedder.info.name == embedder_name(settings)
        assert embedder.embed(["via the factory"]).shape == (1, DIM)
    finally:
        embedder.close()
