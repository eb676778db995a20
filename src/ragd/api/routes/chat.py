"""``POST /api/v1/chat`` (JSON or SSE) and the conversations of the current user."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, StringConstraints

from ragd.api.deps import AnswersDep, ConversationsDep, CurrentPrincipal
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.fields import Filters, Identifier, Input, NonBlank, SingleLine, WholeNumber
from ragd.api.routing import ApiRoute
from ragd.errors import NotFound
from ragd.generation.answer import (
    Answer,
    ChatEvent,
    ChatInput,
    attempt_dict,
    citation_dict,
    context_dict,
)
from ragd.stores.conversations import Conversation

router = APIRouter(tags=["chat"], responses=ERROR_RESPONSES, route_class=ApiRoute)

ProviderName = Annotated[str, StringConstraints(min_length=1, max_length=64), *SingleLine]
#: Server-sent events must reach the client as they are produced.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ChatIn(Input):
    question: Annotated[str, NonBlank] = Field(min_length=1, max_length=100_000)
    collection_ids: list[Identifier] | None = Field(default=None, max_length=100)
    filters: Filters | None = None
    conversation_id: Identifier | None = None
    top_k: Annotated[int, Field(ge=1, le=50), WholeNumber] | None = None
    stream: bool = False
    providers: list[ProviderName] | None = Field(default=None, min_length=1, max_length=20)


class CitationOut(BaseModel):
    n: int
    chunk_id: str
    document_id: str
    title: str
    page: int | None
    quote: str


class AttemptOut(BaseModel):
    provider: str
    attempt: int
    ok: bool
    error_kind: str | None
    status: int | None
    message: str | None
    seconds: float
    waited_seconds: float


class SkipOut(BaseModel):
    provider: str
    reason: str


class HitOut(BaseModel):
    rank: int
    chunk_id: str
    document_id: str
    collection_id: str
    title: str
    page: int | None
    score: float
    text: str


class ContextOut(BaseModel):
    n: int
    chunk_id: str
    document_id: str
    title: str
    page: int | None
    text: str


class RetrievalOut(BaseModel):
    search_query: str
    results: list[HitOut]
    context: list[ContextOut] = Field(
        description="The numbered blocks the providers were given (a citation's n): the "
        "relevant results, then the chunks that continue the best of them."
    )
    timings_ms: dict[str, float]


class ChatOut(BaseModel):
    answer: str
    citations: list[CitationOut]
    citations_dropped: int
    grounded: bool
    conversation_id: str | None
    provider: str | None
    model: str | None
    attempts: list[AttemptOut]
    skipped: list[SkipOut]
    retrieval: RetrievalOut
    usage: dict[str, int] | None
    timings_ms: dict[str, float]
    interrupted: str | None = None


class MessageOut(BaseModel):
    id: str
    seq: int
    role: str
    content: str
    details: dict[str, Any]
    created_at: str


class ConversationOut(BaseModel):
    id: str
    title: str
    message_count: int
    created_at: str
    updated_at: str
    messages: list[MessageOut] | None = None


class ConversationPage(BaseModel):
    items: list[ConversationOut]
    next_cursor: str | None


def answer_out(answer: Answer) -> ChatOut:
    """The JSON body of an answer (also the ``done`` event's data)."""
    usage = None
    if answer.usage is not None:
        usage = {"prompt_tokens": answer.usage.prompt_tokens,
                 "completion_tokens": answer.usage.completion_tokens,
                 "total_tokens": answer.usage.total_tokens}
    return ChatOut(
        answer=answer.answer,
        citations=[CitationOut(**citation_dict(c)) for c in answer.citations],
        citations_dropped=answer.citations_dropped, grounded=answer.grounded,
        conversation_id=answer.conversation_id, provider=answer.provider, model=answer.model,
        attempts=[AttemptOut(**attempt_dict(a)) for a in answer.attempts],
        skipped=[SkipOut(provider=s.provider, reason=s.reason) for s in answer.skipped],
        retrieval=RetrievalOut(
            search_query=answer.search_query,
            results=[
                HitOut(rank=n, chunk_id=hit.chunk.id, document_id=hit.chunk.document_id,
                       collection_id=hit.chunk.collection_id, title=hit.document.title,
                       page=hit.chunk.page, score=hit.score, text=hit.chunk.text)
                for n, hit in enumerate(answer.retrieval.hits, start=1)
            ],
            context=[ContextOut(**context_dict(block)) for block in answer.context],
            timings_ms=answer.retrieval.timings_ms,
        ),
        usage=usage, timings_ms=answer.timings_ms, interrupted=answer.interrupted,
    )


def sse(event: str, data: Any) -> bytes:
    """One server-sent event; ``data`` is JSON on a single line."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _event_data(event: ChatEvent) -> Any:
    if event.event == "done":
        return answer_out(event.data).model_dump(mode="json")
    if event.event == "error" and isinstance(event.data, dict):
        data = dict(event.data)
        partial = data.get("partial")
        if isinstance(partial, Answer):
            data["partial"] = answer_out(partial).model_dump(mode="json")
        return data
    return event.data


async def _sse_stream(events: AsyncGenerator[ChatEvent, None]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield sse(event.event, _event_data(event))
    finally:
        # A client that went away cancels this generator: close the answer stream so the
        # upstream provider request is closed too.
        await events.aclose()


#: The 200 of a streamed answer (``stream: true``).
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {
    "schema": {
        "type": "object", "description": "One server-sent event; data is JSON (or [DONE]).",
        "required": ["data"],
        "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
    }}}}}


@router.post("/chat", response_model=ChatOut, responses=SSE_RESPONSE)
async def chat(
    body: ChatIn, principal: CurrentPrincipal, answers: AnswersDep
) -> ChatOut | StreamingResponse:
    """Answer a question from the tenant's documents with verified citations.

    ``stream: true`` answers with ``text/event-stream`` events ``retrieval``, ``token``,
    ``citation``, then ``done`` (the same object as the JSON answer) or ``error``."""
    chat_input = ChatInput(
        question=body.question, collection_ids=body.collection_ids, filters=body.filters,
        conversation_id=body.conversation_id, top_k=body.top_k, providers=body.providers,
    )
    if body.stream:
        events = await answers.stream(principal.tenant_id, principal.user_id, chat_input)
        return StreamingResponse(
            _sse_stream(events), media_type="text/event-stream", headers=SSE_HEADERS
        )
    answer = await answers.answer(principal.tenant_id, principal.user_id, chat_input)
    return answer_out(answer)


def _conversation_out(conversation: Conversation, *, messages: bool) -> ConversationOut:
    return ConversationOut(
        id=conversation.id, title=conversation.title,
        message_count=conversation.message_count,
        created_at=conversation.created_at.isoformat(),
        updated_at=conversation.updated_at.isoformat(),
        messages=[
            MessageOut(id=m.id, seq=m.seq, role=m.role, content=m.content,
                       details=dict(m.details), created_at=m.created_at.isoformat())
            for m in conversation.messages
        ] if messages else None,
    )


@router.get("/conversations", response_model=ConversationPage)
async def list_conversations(
    principal: CurrentPrincipal,
    conversations: ConversationsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> ConversationPage:
    """The current user's conversations, newest first."""
    page = await conversations.page(
        principal.tenant_id, principal.user_id, limit=limit, cursor=cursor
    )
    return ConversationPage(
        items=[_conversation_out(c, messages=False) for c in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/conversations/{conversation_id}", response_model=ConversationOut)
async def get_conversation(
    conversation_id: Identifier, principal: CurrentPrincipal, conversations: ConversationsDep
) -> ConversationOut:
    """One conversation with its messages (answers keep their verified citations)."""
    found = await conversations.get(principal.tenant_id, principal.user_id, conversation_id)
    if found is None:
        raise NotFound("conversation not found")
    return _conversation_out(found, messages=True)


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: Identifier, principal: CurrentPrincipal, conversations: ConversationsDep
) -> Response:
    if not await conversations.delete(principal.tenant_id, principal.user_id, conversation_id):
        raise NotFound("conversation not found")
    return Response(status_code=204)
