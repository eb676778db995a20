"""Contracts of the model families. Implementations import their vendor libraries lazily.

All methods here are *blocking* (they run ONNX Runtime, tokenizers or HTTP calls); callers
reach them through :class:`ragd.models.registry.ModelRegistry`, which runs them in its thread
pool, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
TextKind = Literal["query", "passage"]


@dataclass(frozen=True, slots=True)
class EmbedderInfo:
    """What an index must record to stay compatible with the embedder that filled it."""

    name: str  # e.g. "minilm-l6-v2-int8"
    dimension: int
    max_tokens: int
    normalized: bool
    variant: str  # e.g. "quantized-per-channel" or "fp32-fallback"; for operators


@runtime_checkable
class Embedder(Protocol):
    """Text -> dense vectors. Loaded (sessions open) when constructed by its loader."""

    @property
    def info(self) -> EmbedderInfo: ...

    def embed(self, texts: Sequence[str], *, kind: TextKind = "passage") -> Vectors:
        """Return a ``(len(texts), dimension)`` float32 array; rows L2-normalised when
        ``info.normalized``. ``kind`` selects the query/passage prefix (E5-style models)."""
        ...

    def embed_many(self, texts: Sequence[str], *, kind: TextKind = "passage") -> Vectors:
        """Like :meth:`embed`, but free to batch texts even where batching perturbs each
        vector slightly (graphs that quantise activations per batch). For texts that are only
        ranked against each other, e.g. keyword candidates."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text would use (before truncation to ``max_tokens``)."""
        ...

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """``(start, end)`` character spans of the tokens of ``text`` (no special tokens, no
        prefix, no truncation): what the chunker measures sizes with."""
        ...

    def close(self) -> None:
        """Release sessions and buffers (the registry calls this when unloading)."""
        ...


@dataclass(frozen=True, slots=True)
class TokenVectors:
    """One text's forward pass: its pooled vector and the contextual vectors of its tokens."""

    vector: Vectors  # (dimension,), exactly what ``embed`` returns for the text
    tokens: Vectors  # (n, dimension): the graph's output for the text's own tokens
    spans: tuple[tuple[int, int], ...]  # each token's character span in the text


@runtime_checkable
class TokenEmbedder(Embedder, Protocol):
    """An embedder whose graph outputs token vectors before pooling (mean-pooled ONNX
    sentence encoders): keyword candidates can then be scored from the chunk's own forward
    pass instead of being embedded one by one."""

    @property
    def token_vectors(self) -> bool:
        """Whether :meth:`embed_tokens` works for this model (the graph outputs tokens)."""
        ...

    def embed_tokens(
        self, texts: Sequence[str], *, kind: TextKind = "passage"
    ) -> list[TokenVectors]:
        """One :class:`TokenVectors` per text (truncated to ``max_tokens`` like ``embed``;
        special tokens and the kind's prefix left out of ``tokens`` and ``spans``)."""
        ...


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, passage) pairs with a cross-encoder; higher is more relevant."""

    @property
    def name(self) -> str: ...

    def score(self, query: str, passages: Sequence[str]) -> npt.NDArray[np.float32]:
        """One score per passage, in input order."""
        ...

    def close(self) -> None: ...
