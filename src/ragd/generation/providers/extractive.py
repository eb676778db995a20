"""The extractive provider: an answer made only of copied context sentences, no model.

It is the chain's last resort, so it needs no download and no network: it splits every
context block into sentences (:func:`ragd.generation.citations.split_sentences`), embeds them
with the embedder the service already runs, and copies the few most similar to the question,
each followed by its ``[n]`` citation, in document order. It never follows anything the
text says — it only copies sentences — and it says plainly that no language model wrote the
answer.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ragd.generation.base import ChatRequest, Completion, ContextBlock, ProviderError, StreamChunk
from ragd.generation.citations import content_words, find_markers, split_sentences

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
#: A sentence less similar than this to the question is never copied.
MIN_SIMILARITY = 0.25
#: A sentence less similar than this share of the best sentence's similarity is copied only
#: when it shares a content word with the question: next to one clearly relevant sentence,
#: loosely related ones only dilute the answer.
RELATIVE_SIMILARITY = 0.6
#: Sentences this similar to an already chosen one are near-duplicates.
DUPLICATE_SIMILARITY = 0.92
#: Score bonus for the first block, falling linearly to 0 for the last (retrieval order).
BLOCK_BONUS = 0.03
#: Sentences shorter than this (in word characters) carry no answer ("Yes.", "Table 3").
MIN_SENTENCE_CHARS = 12


@dataclass(frozen=True, slots=True)
class _Sentence:
    block: int  # index into the request's blocks
    n: int
    start: int
    text: str  # as copied into the answer: one line, no markers


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
        max_sentences: int = 4,
        min_similarity: float = MIN_SIMILARITY,
    ) -> None:
        if max_sentences < 1:
            raise ValueError("max_sentences must be at least 1")
        self._embed = embed
        self._embed_query = embed_query
        self._name = name
        self._max_sentences = max_sentences
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
        sentences = _sentences(blocks)
        if not sentences or not request.question.strip():
            return NO_ANSWER
        try:
            async with asyncio.timeout(seconds):
                question = await self._question_vector(request.question)
                vectors = np.asarray(await self._embed([s.text for s in sentences]),
                                     dtype=np.float32)
        except ProviderError:
            raise
        except TimeoutError as exc:
            raise ProviderError("timeout", f"extractive: embedding took over {seconds:g}s") \
                from exc
        except Exception as exc:  # noqa: BLE001 - the embedder's failure becomes the contract's
            raise ProviderError("malformed", f"extractive: embedding failed ({exc!r:.200})") \
                from exc
        if vectors.shape[0] != len(sentences):
            raise ProviderError("malformed", "extractive: embedder returned the wrong row count")
        chosen = self._choose(sentences, vectors, question, request.question, len(blocks))
        if not chosen:
            return NO_ANSWER
        chosen.sort(key=lambda i: (sentences[i].block, sentences[i].start))
        lines = [f"- {_cited(sentences[i].text, sentences[i].n)}" for i in chosen]
        return EXTRACTIVE_PREFIX + "\n\n" + "\n".join(lines)

    async def _question_vector(self, question: str) -> npt.NDArray[np.float32]:
        if self._embed_query is not None:
            vector = await self._embed_query(question)
        else:
            vector = await self._embed([question])
        return np.asarray(vector, dtype=np.float32).reshape(-1)

    def _choose(
        self,
        sentences: Sequence[_Sentence],
        vectors: npt.NDArray[np.float32],
        question: npt.NDArray[np.float32],
        question_text: str,
        block_count: int,
    ) -> list[int]:
        similarity = vectors @ question
        bonus = np.array(
            [BLOCK_BONUS * (block_count - s.block) / block_count for s in sentences],
            dtype=np.float32,
        )
        scores = similarity + bonus
        # Best score first; equal scores keep document order, so the output is deterministic.
        order = sorted(range(len(sentences)), key=lambda i: (-float(scores[i]), i))
        strong = RELATIVE_SIMILARITY * float(similarity.max())
        asked = set(content_words(question_text))
        chosen: list[int] = []
        seen: set[str] = set()
        for i in order:
            if len(chosen) == self._max_sentences:
                break
            sim = float(similarity[i])
            if sim < self._min_similarity or (
                sim < strong and not asked.intersection(content_words(sentences[i].text))
            ):
                continue
            key = " ".join(sentences[i].text.lower().split())
            if key in seen or any(
                float(vectors[i] @ vectors[j]) >= DUPLICATE_SIMILARITY for j in chosen
            ):
                continue
            seen.add(key)
            chosen.append(i)
        return chosen


def _sentences(blocks: Sequence[ContextBlock]) -> list[_Sentence]:
    """Every answer-worthy sentence of ``blocks`` (one line, citation markers defused)."""
    found: list[_Sentence] = []
    for index, block in enumerate(blocks):
        for start, end in split_sentences(block.text):
            text = _copyable(block.text[start:end])
            if sum(c.isalnum() for c in text) >= MIN_SENTENCE_CHARS:
                found.append(_Sentence(index, block.n, start, text))
    return found


_TERMINAL = re.compile(r"[.!?]+[\"'\u2019\u201d)]*$")


def _cited(sentence: str, n: int) -> str:
    """``sentence`` with ``[n]`` before its terminal punctuation (after it when none)."""
    end = _TERMINAL.search(sentence)
    if end is None or end.start() == 0:
        return f"{sentence} [{n}]"
    return f"{sentence[:end.start()]} [{n}]{sentence[end.start():]}"


def _copyable(sentence: str) -> str:
    """``sentence`` on one line, with any ``[n]``-like marker in the document itself (a
    bibliography reference) written as ``(n)`` so it cannot pass for a citation."""
    sentence = " ".join(sentence.split())  # first: a marker may span a line break
    markers = find_markers(sentence)
    for marker in reversed(markers):
        inner = sentence[marker.start + 1:marker.end - 1]
        sentence = sentence[:marker.start] + "(" + inner + ")" + sentence[marker.end:]
    return sentence
