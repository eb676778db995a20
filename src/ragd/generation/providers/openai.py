"""Any OpenAI-compatible chat-completions endpoint (``POST {base_url}/chat/completions``).

Spoken with :class:`httpx.AsyncClient` directly (no SDK): OpenAI itself, vLLM, llama.cpp's
server, Ollama, LM Studio, OpenRouter and the like. The API key (optional: local servers need
none) travels as a ``Bearer`` token; it never appears in an error message or a log line.

Streaming asks for ``stream_options: {"include_usage": true}`` and reads the server-sent
events ``data: {chunk}`` up to ``data: [DONE]``; the text is in ``choices[0].delta.content``,
the usage (when the server sends it) in a last chunk whose ``choices`` is empty. A stream that
ends before ``[DONE]`` was cut off: :class:`ProviderError` ``connection``.

Failures are translated at the boundary (:func:`translate_errors`, :func:`error_for_status`)
into :class:`ProviderError` kinds; the provider never retries (the router does). The boundary
is :mod:`ragd.generation.providers.http`, shared with the Anthropic provider.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any, cast

import httpx

from ragd.generation.base import ChatRequest, Completion, ProviderError, StreamChunk, Usage
from ragd.generation.providers.http import (
    HttpProvider,
    Redactor,
    SSEParser,
    error_for_status,
    json_object,
    next_event,
    open_stream,
    translate_errors,
    upstream_message,
)
from ragd.settings import ProviderSettings

__all__ = ["OpenAIProvider"]


def _error_object(body: Mapping[str, Any], redact: Redactor) -> ProviderError | None:
    """An ``{"error": {...}}`` some compatible servers send with 200 or inside a stream."""
    error = body.get("error")
    if error is None:
        return None
    if isinstance(error, dict):
        label = error.get("type") or error.get("code") or "error"
        text = redact(f"{label}: {error.get('message', '')}")
        code = error.get("code")
        if isinstance(code, int) and 400 <= code < 600:
            return error_for_status(code, text)
    else:
        text = redact(str(error))
    return ProviderError("overloaded", f"upstream error: {text}")


def _openai_usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt_tokens=prompt, completion_tokens=completion)
    return None


# -- the provider -------------------------------------------------------------------------------


class OpenAIProvider(HttpProvider):
    """:class:`ragd.generation.base.Provider` over an OpenAI-compatible chat-completions API.

    ``transport`` replaces the network (tests); by default httpx's connection pool is used.
    """

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not settings.base_url:
            raise ValueError(f"provider {settings.name}: base_url is required for type openai")
        credentials = {}
        if settings.api_key is not None:
            credentials["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        super().__init__(
            settings, settings.base_url.rstrip("/") + "/chat/completions",
            credentials=credentials, transport=transport,
        )

    @property
    def kind(self) -> str:
        """Always ``openai``."""
        return "openai"

    async def complete(self, request: ChatRequest, *, attempt_timeout: float) -> Completion:
        """One non-streaming chat completion, bounded by ``attempt_timeout`` seconds."""
        response = await self._post(self._payload(request, stream=False), attempt_timeout)
        if not response.is_success:
            raise error_for_status(
                response.status_code,
                upstream_message(response, self._redact),
                response.headers,
            )
        body = json_object(response.text, "the completion", self._redact)
        return self._completion(body)

    async def stream(
        self, request: ChatRequest, *, attempt_timeout: float
    ) -> AsyncGenerator[StreamChunk, None]:
        """The answer as deltas; ``attempt_timeout`` bounds the wait for the first delta and
        each gap between deltas. A final chunk carries the usage and finish reason."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + attempt_timeout
        http_request = self._stream_request(self._payload(request, stream=True), attempt_timeout)
        with translate_errors(self._label, attempt_timeout, self._redact):
            response = await open_stream(self._client, http_request, deadline, self._redact)
            try:
                lines = cast(AsyncGenerator[str, None], response.aiter_lines())
                async with contextlib.aclosing(lines):
                    parser = SSEParser()
                    usage: Usage | None = None
                    finish_reason: str | None = None
                    while True:
                        event = await next_event(lines, parser, deadline)
                        if event is None:
                            raise ProviderError(
                                "connection", f"{self._label}: stream ended before [DONE]"
                            )
                        data = event[1]
                        if data.strip() == "[DONE]":
                            break
                        chunk = json_object(data, "a stream chunk", self._redact)
                        text, finish, chunk_usage = self._delta(chunk)
                        finish_reason = finish or finish_reason
                        usage = chunk_usage or usage
                        if text:
                            yield StreamChunk(text=text)
                            deadline = loop.time() + attempt_timeout
                    if usage is not None or finish_reason is not None:
                        yield StreamChunk(usage=usage, finish_reason=finish_reason)
            finally:
                await response.aclose()

    def _payload(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        max_tokens, temperature = self._limits(request)
        payload: dict[str, Any] = {
            "model": self._settings.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": stream,
        }
        if stream:
            payload["stream_options"] = {"include_usage": True}
        return payload

    def _completion(self, body: dict[str, Any]) -> Completion:
        error = _error_object(body, self._redact) if "choices" not in body else None
        if error is not None:
            raise error
        try:
            choice = body["choices"][0]
            message = choice["message"]
            content = message.get("content")
            finish_reason = choice.get("finish_reason")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProviderError(
                "malformed", f"{self._label}: the completion has no choices[0].message"
            ) from exc
        if content is None:
            content = ""  # e.g. a refusal or a tool call: no text
        if not isinstance(content, str) or not isinstance(finish_reason, str | None):
            raise ProviderError("malformed", f"{self._label}: the completion's content is no text")
        model = body.get("model")
        return Completion(
            text=content,
            model=model if isinstance(model, str) and model else self._settings.model,
            usage=_openai_usage(body.get("usage")),
            finish_reason=finish_reason,
        )

    def _delta(self, chunk: dict[str, Any]) -> tuple[str, str | None, Usage | None]:
        """(text, finish_reason, usage) of one stream chunk."""
        choices = chunk.get("choices")
        if choices is None:
            error = _error_object(chunk, self._redact)
            if error is not None:
                raise error
        usage = _openai_usage(chunk.get("usage"))
        if choices is None or choices == []:
            return "", None, usage
        try:
            choice = choices[0]
            delta = choice.get("delta") or {}
            text = delta.get("content")
            finish_reason = choice.get("finish_reason")
        except (IndexError, TypeError, AttributeError, KeyError) as exc:
            raise ProviderError(
                "malformed", f"{self._label}: a stream chunk has no choices[0].delta"
            ) from exc
        if text is None:
            text = ""
        if not isinstance(text, str) or not isinstance(finish_reason, str | None):
            raise ProviderError("malformed", f"{self._label}: a stream delta is no text")
        return text, finish_reason, usage
