"""Grounded answers: retrieve, prompt, route through the provider chain, verify citations.

One :class:`AnswerService` serves ``POST /api/v1/chat`` (JSON and SSE) and the
OpenAI-compatible ``POST /v1/chat/completions``, so citation checking, the relevance gate and
conversation handling are identical in every mode:

1. the question is checked (empty → 422, too long → 422) and, with a conversation, the
   follow-up is rewritten into a stand-alone search query (by the first LLM of the chain;
   by :func:`~ragd.generation.prompt.rewrite_followup` when only the extractive provider
   is left);
2. :class:`~ragd.retrieval.search.SearchService` retrieves the chunks (the caller's tenant,
   collections and filters);
3. when no chunk is relevant enough (best dense cosine below the relevance gate, or no hit),
   the answer says that the documents do not contain it and names the closest documents,
   and no model is asked. The gate is ``llm.min_relevance``, by default the value calibrated
   for the embedder (:data:`CALIBRATED_GATES`); the hits given to the model are those above
   :data:`CONTEXT_FLOOR`;
4. otherwise the chunks become numbered context blocks in the prompt
   (:func:`~ragd.generation.prompt.build_messages`), the router tries the providers in
   order, and the model's ``[n]`` markers are verified against the blocks actually given
   (:mod:`ragd.generation.citations`): invalid ones are removed and counted;
5. the question and the answer (with its verified citations, provider and attempts) are
   appended to the conversation.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ragd.errors import InvalidInput, NotFound, Unavailable
from ragd.generation.base import ChatRequest, ContextBlock, Message, ProviderError, Usage
from ragd.generation.citations import Citation, CitationEvent, CitationStream, verify
from ragd.generation.prompt import build_messages, rewrite_followup, rewrite_messages
from ragd.generation.providers.extractive import NO_ANSWER
from ragd.generation.router import (
    AllProvidersFailed,
    Attempt,
    Router,
    Skip,
    StreamInterrupted,
)
from ragd.retrieval.search import SearchHit, SearchRequest, SearchResult, SearchService
from ragd.settings import LLMSettings
from ragd.stores.catalog import StoredChunk
from ragd.stores.conversations import Conversations, NewMessage

__all__ = [
    "NOT_FOUND_ANSWER",
    "Answer",
    "AnswerService",
    "ChatInput",
    "ChatEvent",
    "context_dict",
    "relevance_gate",
]

logger = logging.getLogger(__name__)

NOT_FOUND_ANSWER = (
    "The documents do not contain an answer to this question, so I will not guess."
)
#: The stand-alone query an LLM rewrote is used only if it is this short (a model that
#: answers instead of rewriting produces a paragraph).
MAX_REWRITE_CHARS = 500
MAX_TOP_K = 50
#: The relevance gate per embedder (``models.embedder``): the best dense cosine a question
#: needs for an answer. Chosen by cross-validation on the two dev sets' source files against
#: the off-topic questions of ``bench/data/off_topic.tsv`` (``bench/answers.py``, README).
CALIBRATED_GATES = {"minilm": 0.44}
#: The gate of an embedder that has not been calibrated (a low bar: it refuses only noise).
UNCALIBRATED_GATE = 0.25
#: Hits less relevant than this are not given to the model even when the question passed
#: the gate (the noise floor of the MiniLM cosines).
CONTEXT_FLOOR = 0.25
#: How many of the closest documents a refusal names.
CLOSEST_DOCUMENTS = 3
#: The best hits whose documents are read on past the hit, and how many chunks further.
CONTINUED_HITS = 2
CONTINUATION_CHUNKS = 2
#: Told ``(streamed, seconds)`` of every answer given (the chat latency histogram).
AnswerObserver = Callable[[bool, float], None]


@dataclass(frozen=True, slots=True)
class ChatInput:
    """One question. ``history`` is an inline conversation (OpenAI-compatible mode); a
    ``conversation_id`` loads the stored one instead. ``store`` keeps the exchange in a
    conversation (a new one when ``conversation_id`` is None)."""

    question: str
    collection_ids: Sequence[str] | None = None
    filters: Any = None
    conversation_id: str | None = None
    top_k: int | None = None
    providers: Sequence[str] | None = None
    history: Sequence[Message] = ()
    store: bool = True
    max_tokens: int | None = None
    temperature: float | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    answer: str
    citations: list[Citation]
    citations_dropped: int
    conversation_id: str | None
    provider: str | None  # None: no provider was asked (nothing relevant was found)
    model: str | None
    attempts: list[Attempt]
    skipped: list[Skip]
    retrieval: SearchResult
    search_query: str
    grounded: bool  # False: the documents did not contain an answer
    usage: Usage | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    interrupted: str | None = None  # streaming: why the stream ended early
    #: The numbered blocks the providers were given: the relevant hits, then the chunks that
    #: continue the best of them (citations name these).
    context: list[ContextBlock] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """One streaming event: ``retrieval``, ``token``, ``citation``, ``error`` or ``done``."""

    event: Literal["retrieval", "token", "citation", "error", "done"]
    data: Any


@dataclass(slots=True)
class _Prepared:
    question: str
    search_query: str
    conversation_id: str | None
    result: SearchResult
    blocks: list[ContextBlock]
    request: ChatRequest | None  # None: nothing relevant was found, no model is asked
    timings: dict[str, float]


class AnswerService:
    """``answer`` (whole) and ``stream`` (events) for one tenant's user; ``on_answer`` is
    told each answer's seconds (a stream's: until its last event)."""

    def __init__(
        self,
        search: SearchService,
        router: Router,
        conversations: Conversations,
        settings: LLMSettings,
        *,
        gate: float | None = None,
        on_answer: AnswerObserver | None = None,
    ) -> None:
        self._search = search
        self._router = router
        self._conversations = conversations
        self._settings = settings
        self._gate = relevance_gate(settings, None) if gate is None else gate
        self._on_answer = on_answer

    @property
    def router(self) -> Router:
        return self._router

    async def answer(self, tenant_id: str, user_id: str, chat: ChatInput) -> Answer:
        """The whole answer with verified citations (see the module docstring)."""
        started = time.perf_counter()
        prepared = await self._prepare(tenant_id, user_id, chat)
        if prepared.request is None:
            answer = self._not_found(prepared)
        else:
            mark = time.perf_counter()
            try:
                routed = await self._router.complete(prepared.request, order=chat.providers)
            except AllProvidersFailed as exc:
                raise _unavailable() from exc
            prepared.timings["generate"] = _ms(mark)
            verified = verify(routed.completion.text, prepared.blocks)
            answer = Answer(
                answer=verified.text, citations=list(verified.citations),
                citations_dropped=verified.dropped, conversation_id=prepared.conversation_id,
                provider=routed.provider, model=routed.model, attempts=list(routed.attempts),
                skipped=list(routed.skipped), retrieval=prepared.result,
                search_query=prepared.search_query,
                grounded=routed.completion.text != NO_ANSWER,
                usage=routed.completion.usage, timings_ms=prepared.timings,
                context=prepared.blocks,
            )
        prepared.timings["total"] = _ms(started)
        await self._remember(tenant_id, user_id, chat, prepared, answer)
        self._answered(stream=False, started=started)
        return answer

    async def stream(
        self, tenant_id: str, user_id: str, chat: ChatInput
    ) -> AsyncGenerator[ChatEvent, None]:
        """Events: ``retrieval`` (the hits), ``token`` (verified text deltas), ``citation``
        (each cited block, once, when first cited), then ``done`` (the final answer) — or
        ``error`` when the provider failed after the first token (the partial answer is
        kept). Validation errors are raised before the first event. Closing the iterator
        (client disconnect) closes the upstream request."""
        started = time.perf_counter()
        prepared = await self._prepare(tenant_id, user_id, chat)
        return self._events(tenant_id, user_id, chat, prepared, started)

    async def _events(
        self, tenant_id: str, user_id: str, chat: ChatInput, prepared: _Prepared,
        started: float,
    ) -> AsyncGenerator[ChatEvent, None]:
        yield ChatEvent("retrieval", {
            "search_query": prepared.search_query,
            "conversation_id": prepared.conversation_id,
            "hits": [_hit_summary(n, hit) for n, hit in enumerate(prepared.result.hits, 1)],
            "context": [context_dict(block) for block in prepared.blocks],
            "timings_ms": prepared.result.timings_ms,
        })
        if prepared.request is None:
            answer = self._not_found(prepared)
            yield ChatEvent("token", {"text": answer.answer})
            prepared.timings["total"] = _ms(started)
            await self._remember(tenant_id, user_id, chat, prepared, answer)
            self._answered(stream=True, started=started)
            yield ChatEvent("done", answer)
            return

        citations = CitationStream(prepared.blocks)
        mark = time.perf_counter()
        routed = self._router.stream(prepared.request, order=chat.providers)
        interrupted: str | None = None
        usage: Usage | None = None
        first_token: float | None = None
        try:
            async for chunk in routed:
                if chunk.usage is not None:
                    usage = chunk.usage
                if not chunk.text:
                    continue
                if first_token is None:
                    first_token = _ms(mark)
                for event in citations.feed(chunk.text):
                    yield _stream_event(event)
        except StreamInterrupted as exc:
            interrupted = (
                f"provider {exc.provider} failed after the answer had started "
                f"({exc.error.kind}: {exc.error.message}); the answer is incomplete"
            )
        except AllProvidersFailed as exc:
            raise _unavailable() from exc
        finally:
            with contextlib.suppress(Exception):
                await routed.aclose()
        tail, verified = citations.finish()
        for event in tail:
            yield _stream_event(event)
        prepared.timings["generate"] = _ms(mark)
        if first_token is not None:
            prepared.timings["first_token"] = first_token
        prepared.timings["total"] = _ms(started)
        answer = Answer(
            answer=verified.text, citations=list(verified.citations),
            citations_dropped=verified.dropped, conversation_id=prepared.conversation_id,
            provider=routed.provider, model=routed.model, attempts=list(routed.attempts),
            skipped=list(routed.skipped), retrieval=prepared.result,
            search_query=prepared.search_query, grounded=verified.text != NO_ANSWER,
            usage=usage,
            timings_ms=prepared.timings, interrupted=interrupted, context=prepared.blocks,
        )
        await self._remember(tenant_id, user_id, chat, prepared, answer)
        self._answered(stream=True, started=started)
        if interrupted is not None:
            yield ChatEvent("error", {
                "code": "provider_interrupted", "message": interrupted,
                "provider": routed.provider, "partial": answer,
            })
            return
        yield ChatEvent("done", answer)

    def _answered(self, *, stream: bool, started: float) -> None:
        if self._on_answer is not None:
            self._on_answer(stream, time.perf_counter() - started)

    # -- the shared first half ------------------------------------------------------------

    async def _prepare(self, tenant_id: str, user_id: str, chat: ChatInput) -> _Prepared:
        timings: dict[str, float] = {}
        question = chat.question.strip()
        if not question:
            raise InvalidInput("the question is empty", code="empty_question")
        # The limit is on what was sent (as the API schema states it), padding included.
        if len(chat.question) > self._settings.max_question_chars:
            raise InvalidInput(
                f"the question is longer than {self._settings.max_question_chars} characters",
                code="question_too_long",
            )
        top_k = self._settings.top_k if chat.top_k is None else chat.top_k
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"top_k must be between 1 and {MAX_TOP_K}", code="invalid_top_k")
        if chat.providers is not None:
            try:
                self._router.check_order(chat.providers)
            except ValueError as exc:
                raise InvalidInput(str(exc), code="unknown_provider") from exc

        history = list(chat.history)
        conversation_id = chat.conversation_id
        if conversation_id is not None:
            stored = await self._conversations.recent(
                tenant_id, user_id, conversation_id, 2 * self._settings.history_turns
            )
            if stored is None:
                raise NotFound("conversation not found")
            history = [Message(m.role, m.content) for m in stored]
        history = history[-2 * self._settings.history_turns:] if history else []

        mark = time.perf_counter()
        search_query = await self._standalone(question, history, chat.providers)
        timings["rewrite"] = _ms(mark)
        result = await self._search.search(
            tenant_id,
            SearchRequest(
                query=search_query, top_k=top_k, mode="hybrid",
                collection_ids=chat.collection_ids, filters=chat.filters, explain=True,
            ),
        )
        timings["retrieval"] = result.timings_ms.get("total", 0.0)
        best = max((_relevance(hit) for hit in result.hits), default=-1.0)
        floor = min(self._gate, CONTEXT_FLOOR)
        relevant = [hit for hit in result.hits if _relevance(hit) >= floor]
        if best < self._gate:
            relevant = []
        blocks = _blocks(relevant, self._settings.max_context_chars,
                         await self._continuations(tenant_id, relevant))
        request = None
        if blocks:
            request = ChatRequest(
                # ``question`` is what non-LLM providers read: the stand-alone question (a
                # follow-up's own words, "How do I search with it?", name no subject).
                messages=build_messages(question, blocks, history),
                question=search_query, context=tuple(blocks),
                max_tokens=chat.max_tokens, temperature=chat.temperature,
            )
        if chat.store and conversation_id is None:
            created = await self._conversations.create(tenant_id, user_id, question)
            conversation_id = created.id
        return _Prepared(
            question=question, search_query=search_query, conversation_id=conversation_id,
            result=result, blocks=blocks, request=request, timings=timings,
        )

    async def _continuations(
        self, tenant_id: str, hits: Sequence[SearchHit]
    ) -> list[tuple[StoredChunk, SearchHit]]:
        """The chunks that follow the best hits in their documents (each with the hit it
        continues), not already hits themselves: an answer often runs on past the end of the
        chunk that matched."""
        have = {hit.chunk.id for hit in hits}
        found: list[tuple[StoredChunk, SearchHit]] = []
        for hit in hits[:CONTINUED_HITS]:
            for chunk in await self._search.following(tenant_id, hit.chunk, CONTINUATION_CHUNKS):
                if chunk.id not in have:
                    have.add(chunk.id)
                    found.append((chunk, hit))
        return found

    async def _standalone(
        self, question: str, history: list[Message], order: Sequence[str] | None
    ) -> str:
        """The question as a stand-alone search query (unchanged without history)."""
        if not any(m.role == "user" for m in history):
            return question
        if self._router.has_language_model(order):
            request = ChatRequest(messages=rewrite_messages(question, history),
                                  question=question, max_tokens=96, temperature=0.0)
            try:
                routed = await self._router.complete(request, order=order)
            except (AllProvidersFailed, ProviderError, TimeoutError):
                routed = None
            if routed is not None and routed.provider in self._router.language_models:
                rewritten = " ".join(routed.completion.text.split()).strip("\"' ")
                if rewritten and len(rewritten) <= MAX_REWRITE_CHARS:
                    return rewritten
        return rewrite_followup(question, history)

    def _not_found(self, prepared: _Prepared) -> Answer:
        titles = list(dict.fromkeys(hit.document.title for hit in prepared.result.hits))
        text = NOT_FOUND_ANSWER
        if titles:
            named = ", ".join(f"\u201c{title}\u201d" for title in titles[:CLOSEST_DOCUMENTS])
            text += f" The closest documents: {named}."
        return Answer(
            answer=text, citations=[], citations_dropped=0,
            conversation_id=prepared.conversation_id, provider=None, model=None,
            attempts=[], skipped=[], retrieval=prepared.result,
            search_query=prepared.search_query, grounded=False, usage=None,
            timings_ms=prepared.timings,
        )

    async def _remember(
        self, tenant_id: str, user_id: str, chat: ChatInput, prepared: _Prepared,
        answer: Answer,
    ) -> None:
        if not chat.store or prepared.conversation_id is None:
            return
        details = {
            "citations": [citation_dict(c) for c in answer.citations],
            "citations_dropped": answer.citations_dropped,
            "provider": answer.provider, "model": answer.model,
            "attempts": [attempt_dict(a) for a in answer.attempts],
            "search_query": answer.search_query, "grounded": answer.grounded,
            "interrupted": answer.interrupted,
        }
        await self._conversations.append(
            tenant_id, user_id, prepared.conversation_id,
            [NewMessage("user", prepared.question),
             NewMessage("assistant", answer.answer, details)],
        )


def relevance_gate(settings: LLMSettings, embedder: str | None) -> float:
    """The relevance gate: ``llm.min_relevance`` when set, else the value calibrated for
    ``embedder`` (a ``models.embedder`` name), else :data:`UNCALIBRATED_GATE`."""
    if settings.min_relevance is not None:
        return settings.min_relevance
    return CALIBRATED_GATES.get(embedder or "", UNCALIBRATED_GATE)


def _relevance(hit: SearchHit) -> float:
    """The hit's dense cosine (the explain's), or its score when the dense stage missed it."""
    explain = hit.explain or {}
    dense = explain.get("dense")
    if isinstance(dense, dict) and isinstance(dense.get("score"), float | int):
        return float(dense["score"])
    return -1.0 if explain.get("found_by") == "lexical" else float(hit.score)


def _blocks(
    hits: Sequence[SearchHit], budget: int,
    continuations: Sequence[tuple[StoredChunk, SearchHit]] = (),
) -> list[ContextBlock]:
    """Numbered blocks: the hits in retrieval order, then the chunks that continue the best
    of them, as many as fit in ``budget`` characters (the first always fits, cut if it
    must)."""
    chunks = [(hit.chunk, hit) for hit in hits] + list(continuations)
    blocks: list[ContextBlock] = []
    used = 0
    for chunk, hit in chunks:
        text = chunk.text
        if blocks and used + len(text) > budget:
            break
        cut = len(text) > budget
        text = text[:budget]
        used += len(text)
        blocks.append(ContextBlock(
            n=len(blocks) + 1, chunk_id=chunk.id, document_id=chunk.document_id,
            title=hit.document.title, page=chunk.page, text=text,
            heading_path=chunk.heading_path, start=chunk.start,
            end=chunk.start + len(text) if cut else chunk.end, ordinal=chunk.ordinal,
        ))
    return blocks


def _hit_summary(n: int, hit: SearchHit) -> dict[str, Any]:
    return {
        "rank": n, "chunk_id": hit.chunk.id, "document_id": hit.chunk.document_id,
        "collection_id": hit.chunk.collection_id, "title": hit.document.title,
        "page": hit.chunk.page, "score": hit.score, "relevance": _relevance(hit),
    }


def _stream_event(event: Any) -> ChatEvent:
    if isinstance(event, CitationEvent):
        return ChatEvent("citation", citation_dict(event.citation))
    return ChatEvent("token", {"text": event.text})


def context_dict(block: ContextBlock) -> dict[str, Any]:
    """A context block as JSON data (what a citation's ``n`` refers to)."""
    return {"n": block.n, "chunk_id": block.chunk_id, "document_id": block.document_id,
            "title": block.title, "page": block.page, "text": block.text}


def citation_dict(citation: Citation) -> dict[str, Any]:
    """A citation as JSON data (API bodies, SSE events, stored conversations)."""
    return asdict(citation)


def attempt_dict(attempt: Attempt) -> dict[str, Any]:
    """An attempt as JSON data, durations rounded to 0.1 ms."""
    data = asdict(attempt)
    data["seconds"] = round(attempt.seconds, 4)
    data["waited_seconds"] = round(attempt.waited_seconds, 4)
    return data


def _unavailable() -> Unavailable:
    return Unavailable("no provider could answer (the extractive fallback failed too)")


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)
