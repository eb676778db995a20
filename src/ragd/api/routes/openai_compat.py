"""The OpenAI-compatible API: ``/v1/chat/completions``, ``/v1/models``, ``/v1/embeddings``.

Any OpenAI client (the official SDKs, LangChain, LlamaIndex, Open WebUI...) can use ragd as
a "model" with the same bearer tokens or API keys as the rest of the API:

* model ``ragd`` answers from all of the tenant's collections, ``ragd:<collection name>``
  from one;
* the last ``user`` message is the question, the earlier user/assistant messages are the
  conversation (client ``system`` messages are ignored: ragd's own instructions keep the
  context blocks declared as data);
* the answer's content carries the ``[n]`` markers; the extension field ``ragd`` holds the
  verified citations, the provider that answered and the retrieval summary. Streaming
  sends ``chat.completion.chunk`` deltas, a final chunk with ``finish_reason`` and the
  ``ragd`` field, then ``data: [DONE]``.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field, StringConstraints

from ragd.api.deps import AnswersDep, CatalogDep, CurrentPrincipal, RuntimeDep
from ragd.api.errors import ERROR_RESPONSES
from ragd.api.fields import Input, NonBlank, WholeNumber
from ragd.api.routes.chat import SSE_HEADERS, SSE_RESPONSE, answer_out
from ragd.api.routing import ApiRoute
from ragd.errors import InvalidInput, NotFound
from ragd.generation.answer import Answer, ChatEvent, ChatInput
from ragd.generation.base import Message
from ragd.stores.catalog import Catalog

router = APIRouter(tags=["openai-compatible"], responses=ERROR_RESPONSES, route_class=ApiRoute)

MODEL = "ragd"
MAX_MESSAGES = 200
MAX_EMBEDDING_INPUTS = 256
MAX_EMBEDDING_CHARS = 20_000

class ChatMessageIn(Input):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class CompletionIn(Input):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send many optional fields

    model: str = Field(min_length=1, max_length=300)
    messages: list[ChatMessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    max_tokens: Annotated[int, Field(ge=1, le=200_000), WholeNumber] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=200_000), WholeNumber] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)


EmbeddingText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EMBEDDING_CHARS),
                          NonBlank]


class EmbeddingsIn(Input):
    model_config = ConfigDict(extra="allow")

    input: EmbeddingText | Annotated[
        list[EmbeddingText], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)
    ]
    model: str = Field(default=MODEL, max_length=300)
    encoding_format: Literal["float", "base64"] = "float"


def _text(content: str | list[dict[str, Any]] | None) -> str:
    """A message's text (content parts of type ``text`` joined; images are refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidInput("only text content parts are supported", code="unsupported_content")
        parts.append(part["text"])
    return "\n".join(parts)


async def _collections(catalog: Catalog, tenant_id: str, model: str) -> list[str] | None:
    """The collection ids a model name stands for (None: all of the tenant's)."""
    if model == MODEL:
        return None
    prefix = f"{MODEL}:"
    if not model.startswith(prefix) or not model[len(prefix):]:
        raise NotFound(f"unknown model; use {MODEL!r} or '{MODEL}:<collection name>'",
                       code="model_not_found")
    collection = await catalog.find_collection(tenant_id, model[len(prefix):])
    if collection is None:
        raise NotFound("unknown model: no such collection", code="model_not_found")
    return [collection.id]


def _chat_input(body: CompletionIn, collections: list[str] | None) -> ChatInput:
    turns = [(m.role, _text(m.content)) for m in body.messages]
    last = max((i for i, (role, _) in enumerate(turns) if role == "user"), default=None)
    if last is None or not turns[last][1].strip():
        raise InvalidInput("the messages need a non-empty user message", code="empty_question")
    history = [Message("user" if role == "user" else "assistant", text)
               for role, text in turns[:last] if role in ("user", "assistant") and text]
    return ChatInput(
        question=turns[last][1], collection_ids=collections, history=history, store=False,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
    )


def _extension(answer: Answer) -> dict[str, Any]:
    out = answer_out(answer).model_dump(mode="json")
    return {key: out[key] for key in (
        "citations", "citations_dropped", "grounded", "provider", "model", "attempts",
        "skipped", "retrieval", "interrupted",
    )}


def _usage(answer: Answer) -> dict[str, int]:
    usage = answer.usage
    prompt = usage.prompt_tokens if usage else 0
    completion = usage.completion_tokens if usage else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


@router.post("/chat/completions", responses=SSE_RESPONSE)
async def chat_completions(
    body: CompletionIn, principal: CurrentPrincipal, answers: AnswersDep, catalog: CatalogDep,
) -> Any:
    """A grounded answer in the chat-completions format (see the module docstring)."""
    collections = await _collections(catalog, principal.tenant_id, body.model)
    chat_input = _chat_input(body, collections)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        events = await answers.stream(principal.tenant_id, principal.user_id, chat_input)
        return StreamingResponse(
            _chunks(events, completion_id, created, body.model),
            media_type="text/event-stream", headers=SSE_HEADERS,
        )
    answer = await answers.answer(principal.tenant_id, principal.user_id, chat_input)
    return {
        "id": completion_id, "object": "chat.completion", "created": created,
        "model": body.model,
        "choices": [{
            "index": 0, "message": {"role": "assistant", "content": answer.answer},
            "finish_reason": "stop", "logprobs": None,
        }],
        "usage": _usage(answer),
        "ragd": _extension(answer),
    }


async def _chunks(
    events: AsyncGenerator[ChatEvent, None], completion_id: str, created: int, model: str
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
        body = {
            "id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish,
                         "logprobs": None}],
            **extra,
        }
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()

    try:
        yield chunk({"role": "assistant", "content": ""}, None)
        async for event in events:
            if event.event == "token":
                yield chunk({"content": event.data["text"]}, None)
            elif event.event == "done":
                yield chunk({}, "stop", usage=_usage(event.data), ragd=_extension(event.data))
            elif event.event == "error":
                partial = event.data.get("partial")
                extra = _extension(partial) if isinstance(partial, Answer) else {}
                extra["error"] = {"code": event.data.get("code"),
                                  "message": event.data.get("message")}
                yield chunk({}, "error", ragd=extra)
        yield b"data: [DONE]\n\n"
    finally:
        await events.aclose()


@router.get("/models")
async def models(principal: CurrentPrincipal, catalog: CatalogDep) -> dict[str, Any]:
    """``ragd`` plus one ``ragd:<collection>`` model per collection of the tenant."""
    data = [{"id": MODEL, "object": "model", "created": 0, "owned_by": "ragd"}]
    cursor = None
    while True:
        page = await catalog.list_collections(
            principal.tenant_id, limit=500, cursor=cursor
        )
        data += [{"id": f"{MODEL}:{c.name}", "object": "model",
                  "created": int(c.created_at.timestamp()), "owned_by": "ragd"}
                 for c in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    return {"object": "list", "data": data}


@router.post("/embeddings")
async def embeddings(
    body: EmbeddingsIn, principal: CurrentPrincipal, runtime: RuntimeDep
) -> dict[str, Any]:
    """Vectors of the configured embedder (as passages), float or base64 (little-endian
    float32, what the OpenAI SDK asks for by default)."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or len(texts) > MAX_EMBEDDING_INPUTS:
        raise InvalidInput(f"input must hold 1 to {MAX_EMBEDDING_INPUTS} texts",
                           code="invalid_input")
    if any(not text.strip() for text in texts):
        raise InvalidInput("input texts must not be empty", code="invalid_input")
    if any(len(text) > MAX_EMBEDDING_CHARS for text in texts):
        raise InvalidInput(f"each input is limited to {MAX_EMBEDDING_CHARS} characters",
                           code="input_too_long")
    # Embedding and tokenising (up to 256 x 20,000 characters) run in the model pool.
    vectors = await runtime.embed(texts, kind="passage")
    tokens = sum(await runtime.count_tokens(texts))
    info = await runtime.embedder_details()
    data = []
    for index, vector in enumerate(vectors):
        array = np.asarray(vector, dtype="<f4")
        embedding: Any = (
            base64.b64encode(array.tobytes()).decode("ascii")
            if body.encoding_format == "base64" else array.tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {"object": "list", "data": data, "model": info.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
