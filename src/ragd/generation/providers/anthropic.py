"""Anthropic's Messages API (``POST {base_url}/v1/messages``), with httpx directly.

The API key travels in ``x-api-key`` (never in an error message or a log line), with
``anthropic-version: 2023-06-01``. System messages are joined into the top-level ``system``
field; the other messages keep their order. Anthropic accepts temperatures up to 1, so a
larger configured temperature is clamped to 1.

Streaming reads the server-sent events ``message_start`` (input tokens),
``content_block_delta`` (``text_delta`` text), ``message_delta`` (stop reason, output tokens)
and ``message_stop``; an ``error`` event in the middle of the stream (``overloaded_error``, ...)
is a :class:`ProviderError` of the matching kind, and a stream that ends before
``message_stop`` was cut off (``connection``). The HTTP boundary (timeouts, status codes,
redaction) is :mod:`ragd.generation.providers.http`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import httpx

from ragd.generation.base import (
    ChatRequest,
    Completion,
    ErrorKind,
    ProviderError,
    StreamChunk,
    Usage,
)
from ragd.generation.providers.http import (
    HttpProvider,
    SSEParser,
    error_for_status,
    json_object,
    next_event,
    open_stream,
    translate_errors,
    upstream_message,
)
from ragd.settings import ProviderSettings

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_BASE_URL", "AnthropicProvider"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
_MAX_TEMPERATURE = 1.0

#: Anthropic's error types (in error bodies and ``error`` stream events) as ProviderError kinds.
_ERROR_KINDS: dict[str, ErrorKind] = {
    "invalid_request_error": "client",
    "not_found_error": "client",
    "request_too_large": "client",
    "authentication_error": "auth",
    "permission_error": "auth",
    "rate_limit_error": "rate_limited",
    "overloaded_error": "overloaded",
    "api_error": "overloaded",
    "timeout_error": "timeout",
}


def _tokens(usage: Mapping[str, Any], *names: str) -> int | None:
    """The sum of the integer counters ``names`` present in ``usage`` (None if none is)."""
    values = [usage[name] for name in names if isinstance(usage.get(name), int)]
    return sum(values) if values else None


def _input_tokens(usage: Any) -> int | None:
    if not isinstance(usage, dict):
        return None
    # Cached prompt tokens are reported apart from input_tokens; together they are the prompt.
    return _tokens(usage, "input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


@dataclass(slots=True)
class _StreamState:
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    stop_reason: str | None = None
    done: bool = False

    @property
    def usage(self) -> Usage | None:
        if self.prompt_tokens is None or self.output_tokens is None:
            return None
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.output_tokens)


class AnthropicProvider(HttpProvider):
    """:class:`ragd.generation.base.Provider` over Anthropic's Messages API.

    ``base_url`` defaults to ``https://api.anthropic.com`` (a trailing ``/v1`` is accepted);
    ``transport`` replaces the network (tests).
    """

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = (settings.base_url or DEFAULT_BASE_URL).rstrip("/")
        credentials = {}
        if settings.api_key is not None:
            credentials["x-api-key"] = settings.api_key.get_secret_value()
        super().__init__(
            settings, base + ("/messages" if base.endswith("/v1") else "/v1/messages"),
            fixed={"anthropic-version": ANTHROPIC_VERSION}, credentials=credentials,
            transport=transport,
        )

    @property
    def kind(self) -> str:
        """Always ``anthropic``."""
        return "anthropic"

    async def complete(self, request: ChatRequest, *, attempt_timeout: float) -> Completion:
        """One non-streaming message, bounded by ``attempt_timeout`` seconds."""
        response = await self._post(self._payload(request, stream=False), attempt_timeout)
        if not response.is_success:
            raise self._status_error(response)
        body = json_object(response.text, "the message", self._redact)
        return self._completion(body)

    async def stream(
        self, request: ChatRequest, *, attempt_timeout: float
    ) -> AsyncGenerator[StreamChunk, None]:
        """The answer as deltas; ``attempt_timeout`` bounds the wait for the first delta and
        each gap between deltas. A final chunk carries the usage and stop reason."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + attempt_timeout
        http_request = self._stream_request(self._payload(request, stream=True), attempt_timeout)
        with translate_errors(self._label, attempt_timeout, self._redact):
            try:
                response = await open_stream(self._client, http_request, deadline, self._redact)
            except ProviderError as exc:
                raise self._refine(exc) from exc.__cause__
            try:
                lines = cast(AsyncGenerator[str, None], response.aiter_lines())
                async with contextlib.aclosing(lines):
                    parser = SSEParser()
                    state = _StreamState()
                    while not state.done:
                        event = await next_event(lines, parser, deadline)
                        if event is None:
                            raise ProviderError(
                                "connection", f"{self._label}: stream ended before message_stop"
                            )
                        text = self._on_event(state, *event)
                        if text:
                            yield StreamChunk(text=text)
                            deadline = loop.time() + attempt_timeout
                    if state.usage is not None or state.stop_reason is not None:
                        yield StreamChunk(usage=state.usage, finish_reason=state.stop_reason)
            finally:
                await response.aclose()

    def _payload(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        max_tokens, temperature = self._limits(request)
        payload: dict[str, Any] = {
            "model": self._settings.model,
            "max_tokens": max_tokens,
            "temperature": min(temperature, _MAX_TEMPERATURE),
            "messages": [
                {"role": m.role, "content": m.content}
                for m in request.messages
                if m.role != "system"
            ],
            "stream": stream,
        }
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        if system:
            payload["system"] = system
        return payload

    def _status_error(self, response: httpx.Response) -> ProviderError:
        return self._refine(
            error_for_status(
                response.status_code, upstream_message(response, self._redact), response.headers
            )
        )

    @staticmethod
    def _refine(error: ProviderError) -> ProviderError:
        """Anthropic reports overload as 529 ``overloaded_error``: already ``overloaded``; an
        ``overloaded_error`` under another status (rare) is made ``overloaded`` too."""
        if error.kind == "client" and "overloaded_error" in error.message:
            return ProviderError(
                "overloaded", error.message, status=error.status, retry_after=error.retry_after
            )
        return error

    def _on_event(self, state: _StreamState, name: str, data: str) -> str:
        """Fold one stream event into ``state``; the answer text it carries ('' if none)."""
        body = json_object(data, f"a {name} event", self._redact)
        kind = body.get("type") if name == "message" else name
        if kind == "content_block_delta":
            return self._text_delta(body)
        if kind == "message_start":
            message = body.get("message")
            if not isinstance(message, dict):
                raise ProviderError("malformed", f"{self._label}: message_start has no message")
            usage = message.get("usage")
            state.prompt_tokens = _input_tokens(usage)
            if isinstance(usage, dict):
                state.output_tokens = _tokens(usage, "output_tokens")
        elif kind == "message_delta":
            delta = body.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                state.stop_reason = delta["stop_reason"]
            usage = body.get("usage")
            if isinstance(usage, dict):
                state.output_tokens = _tokens(usage, "output_tokens") or state.output_tokens
                state.prompt_tokens = _input_tokens(usage) or state.prompt_tokens
        elif kind == "message_stop":
            state.done = True
        elif kind == "error":
            raise self._event_error(body)
        # ping, content_block_start/stop and events added later carry no answer text
        return ""

    def _event_error(self, body: Mapping[str, Any]) -> ProviderError:
        error = body.get("error")
        if isinstance(error, dict):
            error_type = str(error.get("type") or "error")
            message = self._redact(f"{error_type}: {error.get('message', '')}")
        else:
            error_type, message = "error", self._redact(str(error))
        kind = _ERROR_KINDS.get(error_type, "overloaded")
        return ProviderError(kind, f"{self._label}: error event in the stream: {message}")

    def _text_delta(self, body: Mapping[str, Any]) -> str:
        delta = body.get("delta")
        if not isinstance(delta, dict):
            raise ProviderError("malformed", f"{self._label}: content_block_delta has no delta")
        if delta.get("type") != "text_delta":
            return ""  # thinking, tool input, signatures: not answer text
        text = delta.get("text")
        if not isinstance(text, str):
            raise ProviderError("malformed", f"{self._label}: a text_delta has no text")
        return text

    def _completion(self, body: Mapping[str, Any]) -> Completion:
        if body.get("type") == "error":
            raise self._event_error(body)
        content = body.get("content")
        if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
            raise ProviderError("malformed", f"{self._label}: the message has no content list")
        texts = [block.get("text") for block in content if block.get("type") == "text"]
        if not all(isinstance(text, str) for text in texts):
            raise ProviderError("malformed", f"{self._label}: a text block has no text")
        stop_reason = body.get("stop_reason")
        usage = body.get("usage")
        prompt_tokens = _input_tokens(usage)
        output_tokens = _tokens(usage, "output_tokens") if isinstance(usage, dict) else None
        model = body.get("model")
        return Completion(
            text="".join(cast(list[str], texts)),
            model=model if isinstance(model, str) and model else self._settings.model,
            usage=(
                Usage(prompt_tokens=prompt_tokens, completion_tokens=output_tokens)
                if prompt_tokens is not None and output_tokens is not None
                else None
            ),
            finish_reason=stop_reason if isinstance(stop_reason, str) else None,
        )
