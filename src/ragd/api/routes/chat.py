"""``POST /api/v1/chat`` (JSON or SSE) and the conversations of the current user."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ragd.api.deps import AnswersDep, ConversationsDep, CurrentPrincipal
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.fields import Filters, Identifier, Input, NonBlank, SingleLine, WholeNumber
from ragd.api.payloads import EXAMPLE_COLLECTION_ID
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
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"question": "How long do customers have to return an item?",
         "collection_ids": [EXAMPLE_COLLECTION_ID]},
        {"question": "And how is the refund paid?",
         "conversation_id": "7e3a9d14-6c2b-4f5e-b8a1-2d4c6e8f0a13", "stream": True},
    ]})

    question: Annotated[str, NonBlank] = Field(
        min_length=1, max_length=100_000,
        description="Your question; not blank. The longest accepted is this server's "
        "llm.max_question_chars (the schema's maxLength).",
    )
    collection_ids: list[Identifier] | None = Field(
        default=None, max_length=100,
        description="Answer only from these collections. Null or absent: all of the tenant's.",
    )
    filters: Filters | None = Field(
        default=None,
        description="Conditions on the documents' metadata, as in POST /search, e.g. "
        "{\"team\": \"support\"}.",
    )
    conversation_id: Identifier | None = Field(
        default=None,
        description="Continue a conversation (the conversation_id of an earlier answer): its "
        "recent turns give a follow-up question its context. Null or absent: a new "
        "conversation is started.",
    )
    top_k: Annotated[int, Field(ge=1, le=50), WholeNumber] | None = Field(
        default=None,
        description="Passages to retrieve for the answer. Null or absent: the server's "
        "llm.top_k (6 by default).",
    )
    stream: bool = Field(
        default=False,
        description="true: answer with server-sent events (text/event-stream) as the answer "
        "is written, instead of one JSON object.",
    )
    providers: list[ProviderName] | None = Field(
        default=None, min_length=1, max_length=20,
        description="The answer providers to try, in this order, by name (this server's "
        "names, listed in the schema). Null or absent: the configured chain.",
    )


class CitationOut(BaseModel):
    n: int = Field(description="The [n] marker in the answer text: the n-th context block.")
    chunk_id: str = Field(description="The cited chunk.")
    document_id: str = Field(description="The document it comes from.")
    title: str = Field(description="That document's title.")
    page: int | None = Field(description="The page, for paged formats.")
    quote: str = Field(description="The words of the chunk that support the answer, exactly "
                       "as they stand in it.")


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
    answer: str = Field(description="The answer, with [n] markers where it cites a passage.")
    citations: list[CitationOut] = Field(
        description="The verified citations: each quote was found in the passage cited."
    )
    citations_dropped: int = Field(
        description="Citations the provider gave that did not check out, left out."
    )
    grounded: bool = Field(
        description="False: the documents did not hold an answer, and the answer says so."
    )
    conversation_id: str | None = Field(
        description="The conversation this exchange was stored in; send it back as "
        "conversation_id to ask a follow-up."
    )
    provider: str | None = Field(
        description="The provider that answered; null when none was asked (nothing relevant "
        "was found)."
    )
    model: str | None = Field(description="The model that answered, if the provider says.")
    attempts: list[AttemptOut] = Field(description="Each provider call made, in order.")
    skipped: list[SkipOut] = Field(description="Providers passed over, and why.")
    retrieval: RetrievalOut = Field(description="What the search found and what the "
                                    "providers were given.")
    usage: dict[str, int] | None = Field(description="Tokens used, if the provider reports.")
    timings_ms: dict[str, float] = Field(description="Milliseconds spent per stage.")
    interrupted: str | None = Field(
        default=None, description="Set when a streamed answer stopped before its end: why."
    )


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
    """Answer a question from your documents, with verified citations.

    Send a `question`, and optionally `collection_ids` and metadata `filters` to say where
    to look, `top_k` (passages to retrieve) and a `conversation_id` to ask a follow-up in an
    earlier conversation. The server searches your documents, gives the relevant passages
    to the configured answer providers (an LLM; the extractive provider, which quotes the
    passages, always comes last) and checks every citation against the passage it cites.

    The answer holds `answer` (text with `[n]` markers), `citations` (each with the
    document, page and the exact quote), `grounded` (false: the documents did not hold an
    answer), the `conversation_id` to continue with, and what retrieval found. Next: ask a
    follow-up with that `conversation_id`, or read the conversation at
    `GET /api/v1/conversations/{conversation_id}`.

    `stream: true` answers with `text/event-stream` events `retrieval`, `token`,
    `citation`, then `done` (the same object as the JSON answer) or `error`."""
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
