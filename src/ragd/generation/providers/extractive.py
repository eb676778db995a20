"""The extractive provider: an answer made only of copied context paragraphs, no model.

It is the chain's last resort, so it needs no download and no network: it splits every
context block into paragraphs (:func:`ragd.generation.compose.paragraphs`: headings, code,
lists, prose), embeds the prose sentences and the headings with the embedder the service
already runs, scores each paragraph by its best sentence or the heading of its section,
whichever is more similar to the question (plus a small bonus for the block's retrieval
rank), and lets :func:`ragd.generation.compose.compose` write the section around the best
one, cited. It never follows anything the text says — it only copies — and it says plainly
that no language model wrote the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ragd.generation.base import ChatRequest, Completion, ProviderError, StreamChunk
from ragd.generation.citations import split_sentences
from ragd.generation.compose import Paragraph, compose, paragraphs

__all__ = [
    "EXTRACTIVE_PREFIX",
    "NO_ANSWER",
    "EmbedPassages",
    "EmbedQuery",
    "ExtractiveProvider",
]

#: Embeds passages: one L2-normalised float32 row per text, in order.
EmbedPassages = Callable[[list[str]], Awaitable[npt.NDArray[np.float32]]]
#: Embeds one query: an L2-normalised float32 vector (shape ``(d,)`` or ``(1, d)``).
EmbedQuery = Callable[[str], Awaitable[npt.NDArray[np.float32]]]

EXTRACTIVE_PREFIX = (
    "Extractive answer (no language model was used; these are the most relevant passages):"
)
NO_ANSWER = (
    "Extractive answer (no language model was used): the documents do not contain an answer "
    "to this question."
)
#: No paragraph is copied unless its best sentence (or its heading) is this similar.
MIN_SIMILARITY = 0.25
#: Score bonus for the first block, falling linearly to 0 for the last (retrieval order).
BLOCK_BONUS = 0.03
#: Sentences shorter than this (in word characters) carry no answer ("Yes.", "Table 3").
MIN_SENTENCE_CHARS = 12


@dataclass(frozen=True, slots=True)
class _Piece:
    """A text to embed: a prose sentence of paragraph ``paragraph``, or a heading."""

    paragraph: int
    text: str


class ExtractiveProvider:
    """The Provider that composes answers from the context blocks (see the module docstring).

    ``embed(texts)`` embeds passages (the sentences); ``embed_query(text)``, when given,
    embeds the question as a query (for models with query/passage prefixes), otherwise the
    question is embedded with ``embed`` too. Both return L2-normalised float32 vectors.
    """

    def __init__(
        self,
        embed: EmbedPassages,
        *,
        embed_query: EmbedQuery | None = None,
        name: str = "extractive",
        min_similarity: float = MIN_SIMILARITY,
    ) -> None:
        self._embed = embed
        self._embed_query = embed_query
        self._name = name
        self._min_similarity = min_similarity

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> str:
        return "extractive"

    @property
    def model(self) -> str:
        return "extractive"

    async def complete(self, request: ChatRequest, *, attempt_timeout: float) -> Completion:
        """The extractive answer to ``request.question`` from ``request.context``."""
        text = await self._answer(request, attempt_timeout)
        return Completion(text=text, model=self.model, usage=None, finish_reason="stop")

    async def stream(
        self, request: ChatRequest, *, attempt_timeout: float
    ) -> AsyncIterator[StreamChunk]:
        """The text of :meth:`complete`, one line per delta."""
        text = await self._answer(request, attempt_timeout)
        lines = text.splitlines(keepends=True)
        for index, line in enumerate(lines):
            last = index == len(lines) - 1
            yield StreamChunk(text=line, finish_reason="stop" if last else None)

    async def aclose(self) -> None:
        """Nothing to release."""

    # -- composition ----------------------------------------------------------------------

    async def _answer(self, request: ChatRequest, seconds: float) -> str:
        blocks = request.context
        found = paragraphs(blocks)
        pieces = _pieces(found)
        if not pieces or not request.question.strip():
            return NO_ANSWER
        try:
            async with asyncio.timeout(seconds):
                question = await self._question_vector(request.question)
                vectors = np.asarray(await self._embed([p.text for p in pieces]),
                                     dtype=np.float32)
        except ProviderError:
            raise
        except TimeoutError as exc:
            raise ProviderError("timeout", f"extractive: embedding took over {seconds:g}s") \
                from exc
        except Exception as exc:  # noqa: BLE001 - the embedder's failure becomes the contract's
            raise ProviderError("malformed", f"extractive: embedding failed ({exc!r:.200})") \
                from exc
        if vectors.shape[0] != len(pieces):
            raise ProviderError("malformed", "extractive: embedder returned the wrong row count")
        passages = 1 + max(p.block for p in found) if found else 1
        scores = self._scores(found, pieces, vectors @ question, passages)
        body = compose(request.question, found, scores)
        return EXTRACTIVE_PREFIX + "\n\n" + body if body else NO_ANSWER

    async def _question_vector(self, question: str) -> npt.NDArray[np.float32]:
        if self._embed_query is not None:
            vector = await self._embed_query(question)
        else:
            vector = await self._embed([question])
        return np.asarray(vector, dtype=np.float32).reshape(-1)

    def _scores(
        self, found: Sequence[Paragraph], pieces: Sequence[_Piece],
        similarity: npt.NDArray[np.float32], block_count: int,
    ) -> list[float]:
        """Each paragraph's score: its best sentence's similarity or its section heading's,
        whichever is higher, plus the block bonus; -inf for paragraphs that are not
        candidates (headings, code, nothing similar enough)."""
        best = [float("-inf")] * len(found)
        for piece, value in zip(pieces, similarity.tolist(), strict=True):
            best[piece.paragraph] = max(best[piece.paragraph], float(value))
        scores = [float("-inf")] * len(found)
        heading = float("-inf")
        for i, paragraph in enumerate(found):
            if i == 0 or found[i - 1].block != paragraph.block:
                heading = float("-inf")
            if paragraph.kind == "heading":
                heading = best[i]
                continue
            value = max(best[i], heading)
            if paragraph.kind == "code" or value < self._min_similarity:
                continue
            scores[i] = value + BLOCK_BONUS * (block_count - paragraph.block) / block_count
        return scores


def _pieces(found: Sequence[Paragraph]) -> list[_Piece]:
    """The texts to embed: every heading, and every prose sentence long enough to carry an
    answer."""
    pieces: list[_Piece] = []
    for i, paragraph in enumerate(found):
        if paragraph.kind == "heading":
            pieces.append(_Piece(i, paragraph.text))
        elif paragraph.kind in ("prose", "list"):
            for start, end in split_sentences(paragraph.text):
                sentence = paragraph.text[start:end]
                if sum(c.isalnum() for c in sentence) >= MIN_SENTENCE_CHARS:
                    pieces.append(_Piece(i, sentence))
    return pieces
