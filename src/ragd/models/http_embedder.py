"""Embeddings from an OpenAI-compatible HTTP API (``POST {base_url}/embeddings``).

The request is ``{"model": ..., "input": [texts]}``; the response ``{"data": [{"index": i,
"embedding": [...]}, ...]}``, whose items may come in any order. The API key travels as a
``Bearer`` token; it never appears in logs or error messages.

Errors of the provider are translated at one boundary (:meth:`OpenAIEmbedder._post`):
a request the provider refuses as such (400, 413, 422) is :class:`InvalidInput`; anything that
means the provider cannot serve us now (no connection, timeout, 401/403, 404, 429, 5xx, a
malformed answer) is :class:`Unavailable`. Only the transient kinds (connection errors,
timeouts, 408, 429 and 5xx, as OpenAI's own client does) are retried, a bounded number of
times with exponential backoff (or the provider's ``Retry-After``, capped).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from ragd.errors import ConfigurationError, InvalidInput, Unavailable
from ragd.models.base import EmbedderInfo, TextKind, Vectors
from ragd.settings import ModelsSettings

__all__ = ["MAX_INPUTS_PER_REQUEST", "OpenAIEmbedder"]

_WORD = re.compile(r"\w+|[^\w\s]")
logger = logging.getLogger(__name__)

#: OpenAI accepts up to 2048 inputs per request; smaller requests keep each response (and a
#: retry) small.
MAX_INPUTS_PER_REQUEST = 256
PROBE_INPUT = "dimension probe"
_RETRIABLE_STATUS = frozenset({408, 429})
_INVALID_STATUS = frozenset({400, 413, 422})
_MAX_RETRY_AFTER = 10.0
#: Rough size of a token for count_tokens: the provider's tokenizer is not known here.
_CHARS_PER_TOKEN = 4


class OpenAIEmbedder:
    """:class:`ragd.models.base.Embedder` over an OpenAI-compatible embeddings endpoint.

    Construction makes one probe request to learn the dimension, so an unreachable provider
    or a wrong key fails the load rather than the first search. Thread-safe (one
    ``httpx.Client``, whose connection pool is).
    """

    def __init__(
        self,
        settings: ModelsSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        max_retries: int = 2,
        backoff_seconds: float = 0.5,
    ) -> None:
        if not settings.openai_base_url or not settings.openai_model:
            raise ConfigurationError(
                "models.embedder=openai needs openai_base_url and openai_model"
            )
        self._model = settings.openai_model
        self._normalize = settings.normalize
        self._prefixes: dict[TextKind, str] = {
            "query": settings.query_prefix,
            "passage": settings.passage_prefix,
        }
        self._max_retries = max(0, max_retries)
        self._backoff = max(0.0, backoff_seconds)
        headers = {"Accept": "application/json"}
        if settings.openai_api_key is not None:
            headers["Authorization"] = f"Bearer {settings.openai_api_key.get_secret_value()}"
        self._client: httpx.Client | None = httpx.Client(
            base_url=settings.openai_base_url.rstrip("/") + "/",
            headers=headers,
            timeout=settings.openai_timeout_seconds,
            transport=transport,
            follow_redirects=False,
        )
        self._dimension = 0
        try:
            probe = self._request([PROBE_INPUT])
        except Exception:
            self.close()
            raise
        self._dimension = probe.shape[1]
        self._info = EmbedderInfo(
            name=self._model,
            dimension=self._dimension,
            max_tokens=settings.max_tokens,
            normalized=self._normalize,
            variant="remote",
        )
        logger.info(
            "remote embedder ready",
            extra={"model": self._model, "dimension": self._dimension},
        )

    @property
    def info(self) -> EmbedderInfo:
        return self._info

    def embed(self, texts: Sequence[str], *, kind: TextKind = "passage") -> Vectors:
        """Embed ``texts`` in requests of at most :data:`MAX_INPUTS_PER_REQUEST` inputs."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise InvalidInput("texts must be a list of strings")
        if kind not in self._prefixes:
            raise InvalidInput(f"unknown text kind {kind!r}; valid: query, passage")
        if not texts:
            return np.empty((0, self._dimension), dtype=np.float32)
        prefix = self._prefixes[kind]
        inputs = [prefix + text for text in texts]
        parts = [
            self._request(inputs[start : start + MAX_INPUTS_PER_REQUEST])
            for start in range(0, len(inputs), MAX_INPUTS_PER_REQUEST)
        ]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """An estimate (about four characters a token): the provider's tokenizer is unknown."""
        prefix = self._prefixes["passage"]
        return [max(1, math.ceil(len(prefix + text) / _CHARS_PER_TOKEN)) for text in texts]

    def embed_many(self, texts: Sequence[str], *, kind: TextKind = "passage") -> Vectors:
        """Same as :meth:`embed` (the provider batches as it likes)."""
        return self.embed(texts, kind=kind)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Words and punctuation marks: the provider's tokenizer is unknown, and this
        over-counts rather than under-counts its sub-word tokens for ordinary prose."""
        return [match.span() for match in _WORD.finditer(text)]

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _request(self, inputs: list[str]) -> Vectors:
        body = self._post({"model": self._model, "input": inputs})
        vectors = self._parse(body, len(inputs))
        if self._normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _post(self, payload: dict[str, Any]) -> Any:
        """POST to ``embeddings`` with bounded retries; the decoded JSON body."""
        client = self._client
        if client is None:
            raise Unavailable(f"embedder {self._model} is closed")
        attempt = 0
        while True:
            wait: float | None = None
            error: Exception | None = None
            try:
                response = client.post("embeddings", json=payload)
            except httpx.TimeoutException as exc:
                problem = "timed out"
                wait, error = self._backoff * 2**attempt, exc
            except httpx.TransportError as exc:
                problem = f"unreachable ({type(exc).__name__})"
                wait, error = self._backoff * 2**attempt, exc
            else:
                status = response.status_code
                if status == 200:
                    try:
                        return response.json()
                    except ValueError as exc:
                        raise Unavailable(
                            f"embedding provider returned malformed JSON ({_describe(response)})"
                        ) from exc
                problem = f"answered HTTP {status}{_provider_code(response)}"
                if status in _RETRIABLE_STATUS or status >= 500:
                    wait = _retry_after(response, self._backoff * 2**attempt)
                elif status in _INVALID_STATUS:
                    raise InvalidInput(f"embedding provider refused the input: {problem}")
                elif status in (401, 403):
                    raise Unavailable(
                        f"embedding provider rejected the API key: {problem}",
                        code="embedder_unauthorized",
                    )
            if wait is None or attempt >= self._max_retries:
                logger.warning(
                    "embedding request failed",
                    extra={"model": self._model, "problem": problem, "attempts": attempt + 1},
                )
                raise Unavailable(f"embedding provider {problem}") from error
            attempt += 1
            time.sleep(wait)

    def _parse(self, body: Any, expected: int) -> Vectors:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise Unavailable("embedding provider response has no 'data' list")
        if len(data) != expected:
            raise Unavailable(
                f"embedding provider returned {len(data)} embeddings for {expected} inputs"
            )
        try:
            items = sorted(data, key=lambda item: int(item["index"]))
            indexes = [int(item["index"]) for item in items]
            rows = [item["embedding"] for item in items]
        except (KeyError, TypeError, ValueError) as exc:
            raise Unavailable(f"embedding provider response is malformed ({exc!r:.100})") from exc
        if indexes != list(range(expected)):
            raise Unavailable("embedding provider response indexes do not match the inputs")
        if not all(isinstance(row, list) for row in rows):
            raise Unavailable("embedding provider returned embeddings that are not float lists")
        if len({len(row) for row in rows}) != 1 or not rows[0]:
            raise Unavailable("embedding provider returned embeddings of inconsistent dimensions")
        try:
            vectors = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise Unavailable("embedding provider returned non-numeric embeddings") from exc
        if self._dimension and vectors.shape[1] != self._dimension:
            raise Unavailable(
                f"embedding provider returned {vectors.shape[1]}-d vectors; "
                f"this embedder is {self._dimension}-d"
            )
        if not np.isfinite(vectors).all():
            raise Unavailable("embedding provider returned non-finite values")
        return vectors


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        value = float(response.headers.get("retry-after", ""))
    except ValueError:
        return default
    return min(max(value, 0.0), _MAX_RETRY_AFTER)


def _provider_code(response: httpx.Response) -> str:
    """The provider's machine-readable error code, if any: never its free-text message,
    which may quote part of the key."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    code = (error.get("code") or error.get("type")) if isinstance(error, dict) else None
    return f" ({str(code)[:60]})" if isinstance(code, str) and code else ""


def _describe(response: httpx.Response) -> str:
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return f"{kind}, {len(response.content)} bytes"
