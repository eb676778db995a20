"""Any OpenAI-compatible chat-completions endpoint (``POST {base_url}/chat/completions``).

Spoken with :class:`httpx.AsyncClient` directly (no SDK): OpenAI itself, vLLM, llama.cpp's
server, Ollama, LM Studio, OpenRouter and the like. The API key (optional: local servers need
none) travels as a ``Bearer`` token; it never appears in an error message or a log line.

Streaming asks for ``stream_options: {"include_usage": true}`` and reads the server-sent
events ``data: {chunk}`` up to ``data: [DONE]``; the text is in ``choices[0].delta.content``,
the usage (when the server sends it) in a last chunk whose ``choices`` is empty. A stream that
ends before ``[DONE]`` was cut off: :class:`ProviderError` ``connection``.

Failures are translated at the boundary (:func:`translate_errors`, :func:`error_for_status`)
into :class:`ProviderError` kinds; the provider never retries (the router does). The helpers
of that boundary are shared with :mod:`ragd.generation.providers.anthropic`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
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
from ragd.settings import ProviderSettings

__all__ = [
    "MAX_MESSAGE_CHARS",
    "OpenAIProvider",
    "Redactor",
    "SSEParser",
    "client_for",
    "error_for_status",
    "json_object",
    "next_event",
    "open_stream",
    "parse_retry_after",
    "request_timeout",
    "translate_errors",
    "upstream_message",
]

#: Upstream error messages are cut to this many characters in a :class:`ProviderError`.
MAX_MESSAGE_CHARS = 300
_REDACTED = "[redacted]"
#: Extra headers whose values are credentials (``api-key``, ``X-Auth-Token``, ...).
_SENSITIVE_HEADER = re.compile(r"key|auth|token|secret|cookie|password", re.IGNORECASE)
#: Credentials an upstream may quote back, whoever's they are.
_TOKEN_LIKE = re.compile(r"Bearer\s+[A-Za-z0-9._~+/=*-]{8,}|\bsk-[A-Za-z0-9_\-*.]{4,}")
#: Secrets shorter than this are not searched for (they would redact ordinary words).
_MIN_SECRET_CHARS = 4


# -- the boundary shared by the HTTP providers -----------------------------------------------


class Redactor:
    """Makes upstream text safe for an error message: known secrets and anything that looks
    like a bearer token or an API key replaced, one line, at most ``limit`` characters."""

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = {secret for secret in secrets if len(secret) >= _MIN_SECRET_CHARS}
        self._secrets = sorted(unique, key=len, reverse=True)

    @classmethod
    def for_settings(cls, settings: ProviderSettings) -> Redactor:
        """The API key and the values of credential-like ``extra_headers``."""
        headers = settings.extra_headers
        secrets = [value for name, value in headers.items() if _SENSITIVE_HEADER.search(name)]
        if settings.api_key is not None:
            secrets.append(settings.api_key.get_secret_value())
        return cls(secrets)

    def __call__(self, text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
        # Redact before truncating: a cut could split a secret so that it no longer matches.
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        text = " ".join(_TOKEN_LIKE.sub(_REDACTED, text).split())
        return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date);
    None when neither is present and valid."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            value = float(milliseconds) / 1000.0
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return max(0.0, value)
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, value) if math.isfinite(value) else None
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_for_status(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> ProviderError:
    """The :class:`ProviderError` for a non-2xx answer (``message`` already redacted)."""
    retry_after = parse_retry_after(headers) if headers is not None else None
    kind: ErrorKind
    if status == 429:
        kind = "rate_limited"
    elif status in (408, 409) or status >= 500:
        kind = "overloaded"
    elif status in (401, 403):
        kind = "auth"
    else:
        kind = "client"
    text = f"HTTP {status}: {message}" if message else f"HTTP {status}"
    return ProviderError(kind, text, status=status, retry_after=retry_after)


def upstream_message(response: httpx.Response, redact: Redactor) -> str:
    """The upstream's own error message (``error.message``, with its type), else the body."""
    try:
        body = response.json()
    except ValueError:
        return redact(response.text)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        label = error.get("type") or error.get("code")
        parts = [str(part) for part in (label, message) if part not in (None, "")]
        return redact(": ".join(parts))
    if isinstance(error, str):
        return redact(error)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return redact(body["message"])
    return redact(response.text)


@contextlib.contextmanager
def translate_errors(label: str, timeout: float, redact: Redactor) -> Iterator[None]:
    """Turns the failures of httpx (and of an ``asyncio.timeout``) into :class:`ProviderError`."""
    try:
        yield
    except TimeoutError as exc:
        raise ProviderError("timeout", f"{label}: no answer within {timeout:g}s") from exc
    except httpx.TimeoutException as exc:
        raise ProviderError(
            "timeout", f"{label}: {type(exc).__name__} (timeout {timeout:g}s)"
        ) from exc
    except httpx.DecodingError as exc:
        raise ProviderError("malformed", f"{label}: undecodable body: {redact(str(exc))}") from exc
    except httpx.HTTPError as exc:
        detail = redact(str(exc)) or "no detail"
        raise ProviderError("connection", f"{label}: {type(exc).__name__}: {detail}") from exc


async def open_stream(
    client: httpx.AsyncClient, request: httpx.Request, deadline: float, redact: Redactor
) -> httpx.Response:
    """Send ``request`` for a streamed answer; the open 2xx event-stream response (the caller
    closes it). Waits until the loop time ``deadline``; a non-2xx answer is read and raised."""
    async with asyncio.timeout_at(deadline):
        response = await client.send(request, stream=True)
        try:
            if not response.is_success:
                await response.aread()
                raise error_for_status(
                    response.status_code, upstream_message(response, redact), response.headers
                )
            content_type = response.headers.get("content-type", "")
            if content_type.startswith("application/json"):
                await response.aread()
                raise ProviderError(
                    "malformed",
                    f"expected an event stream, got JSON: {redact(response.text)}",
                    status=response.status_code,
                )
        except BaseException:
            await response.aclose()
            raise
    return response


class SSEParser:
    """Server-sent events, fed line by line: :meth:`feed` returns ``(event, data)`` when a
    blank line completes an event (``event`` is ``"message"`` when the event has no name)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        """One line without its line ending; the completed event, if this line ends one."""
        line = line.rstrip("\r\n")
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        return None

    def flush(self) -> tuple[str, str] | None:
        """The pending event (at the end of the stream), if it has data."""
        event, data = self._event or "message", self._data
        self._event, self._data = "", []
        return (event, "\n".join(data)) if data else None


async def next_event(
    lines: AsyncIterator[str], parser: SSEParser, deadline: float
) -> tuple[str, str] | None:
    """The next event of the stream, waiting until the loop time ``deadline`` (TimeoutError
    after it); None when the stream has ended."""
    async with asyncio.timeout_at(deadline):
        while True:
            line = await anext(lines, None)
            if line is None:
                return parser.flush()
            event = parser.feed(line)
            if event is not None:
                return event


def client_for(
    settings: ProviderSettings,
    headers: dict[str, str],
    transport: httpx.AsyncBaseTransport | None,
) -> httpx.AsyncClient:
    """The shared shape of the providers' HTTP clients (per-request timeouts are set by the
    calls: ``attempt_timeout``; the connect timeout comes from the settings)."""
    return httpx.AsyncClient(
        headers=headers,
        timeout=httpx.Timeout(settings.timeout_seconds, connect=settings.connect_timeout_seconds),
        transport=transport,
        follow_redirects=False,
    )


def request_timeout(settings: ProviderSettings, attempt_timeout: float) -> httpx.Timeout:
    """httpx's own timeouts for one attempt (the attempt's deadline bounds it as a whole)."""
    return httpx.Timeout(attempt_timeout, connect=settings.connect_timeout_seconds)


def json_object(text: str, what: str, redact: Redactor) -> dict[str, Any]:
    """``text`` decoded as a JSON object, else :class:`ProviderError` ``malformed``."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ProviderError("malformed", f"{what} is not JSON: {redact(text, 100)!r}") from exc
    if not isinstance(value, dict):
        raise ProviderError("malformed", f"{what} is not a JSON object: {redact(text, 100)!r}")
    return value


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


class OpenAIProvider:
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
        self._settings = settings
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._label = f"provider {settings.name}"
        self._redact = Redactor.for_settings(settings)
        headers = {"Accept": "application/json", **settings.extra_headers}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._client = client_for(settings, headers, transport)

    @property
    def name(self) -> str:
        """The configured provider name."""
        return self._settings.name

    @property
    def kind(self) -> str:
        """Always ``openai``."""
        return "openai"

    @property
    def model(self) -> str:
        """The configured model id sent with every request."""
        return self._settings.model

    async def complete(self, request: ChatRequest, *, attempt_timeout: float) -> Completion:
        """One non-streaming chat completion, bounded by ``attempt_timeout`` seconds."""
        self._check_open()
        payload = self._payload(request, stream=False)
        with translate_errors(self._label, attempt_timeout, self._redact):
            async with asyncio.timeout(attempt_timeout):
                response = await self._client.post(
                    self._url,
                    json=payload,
                    timeout=request_timeout(self._settings, attempt_timeout),
                )
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
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + attempt_timeout
        http_request = self._client.build_request(
            "POST",
            self._url,
            json=self._payload(request, stream=True),
            timeout=request_timeout(self._settings, attempt_timeout),
        )
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

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _check_open(self) -> None:
        if self._client.is_closed:
            raise ProviderError("connection", f"{self._label} is closed")

    def _payload(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        settings = self._settings
        payload: dict[str, Any] = {
            "model": settings.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": (
                request.max_tokens if request.max_tokens is not None else settings.max_tokens
            ),
            "temperature": (
                request.temperature if request.temperature is not None else settings.temperature
            ),
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
