"""The HTTP boundary shared by the LLM providers that speak to a remote API.

:class:`HttpProvider` holds what every HTTP provider has: its settings and name, one
:class:`httpx.AsyncClient` (credentials in headers, never in messages), a non-streaming POST
bounded by the attempt timeout, and the request of a stream. The functions below translate
failures into :class:`~ragd.generation.base.ProviderError` kinds (:func:`translate_errors`,
:func:`error_for_status`), parse server-sent events (:class:`SSEParser`, :func:`next_event`)
and strip secrets from whatever an upstream says (:class:`Redactor`). Providers never retry:
the router does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from ragd.generation.base import ChatRequest, ErrorKind, ProviderError
from ragd.settings import ProviderSettings

__all__ = [
    "MAX_MESSAGE_CHARS",
    "HttpProvider",
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
        target = _origin(exc)
        what = (
            f"cannot connect to {target}" if isinstance(exc, httpx.ConnectError)
            else f"the connection to {target} failed"
        )
        raise ProviderError(
            "connection", f"{label}: {what} ({type(exc).__name__}: {detail})"
        ) from exc


def _origin(exc: httpx.HTTPError) -> str:
    """``scheme://host:port`` of the request that failed (never its path, query or
    credentials), or ``the provider`` when the error carries no request."""
    try:
        url = exc.request.url
    except RuntimeError:  # httpx: ".request" is not set
        return "the provider"
    port = url.port or {"https": 443, "http": 80}.get(url.scheme)
    return f"{url.scheme}://{url.host}" + (f":{port}" if port else "")


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


class HttpProvider:
    """Plumbing shared by the HTTP providers; subclasses add the protocol (payload, parsing).

    Headers: ``Accept: application/json``, then the protocol's ``fixed`` headers, then the
    configured ``extra_headers``, then the ``credentials`` (so no extra header can replace
    them). ``transport`` replaces the network (tests).
    """

    def __init__(
        self,
        settings: ProviderSettings,
        url: str,
        *,
        fixed: Mapping[str, str] | None = None,
        credentials: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._url = url
        self._label = f"provider {settings.name}"
        self._redact = Redactor.for_settings(settings)
        headers = {
            "Accept": "application/json",
            **(fixed or {}),
            **settings.extra_headers,
            **(credentials or {}),
        }
        self._client = client_for(settings, headers, transport)

    @property
    def name(self) -> str:
        """The configured provider name."""
        return self._settings.name

    @property
    def model(self) -> str:
        """The configured model id sent with every request."""
        return self._settings.model

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def _check_open(self) -> None:
        if self._client.is_closed:
            raise ProviderError("connection", f"{self._label} is closed")

    def _limits(self, request: ChatRequest) -> tuple[int, float]:
        """``(max_tokens, temperature)``: the request's, else the configured ones."""
        settings = self._settings
        return (
            request.max_tokens if request.max_tokens is not None else settings.max_tokens,
            request.temperature if request.temperature is not None else settings.temperature,
        )

    async def _post(self, payload: dict[str, Any], attempt_timeout: float) -> httpx.Response:
        """One non-streaming POST of ``payload``, bounded by ``attempt_timeout`` seconds
        (transport failures become :class:`ProviderError`; the status is the caller's)."""
        self._check_open()
        with translate_errors(self._label, attempt_timeout, self._redact):
            async with asyncio.timeout(attempt_timeout):
                return await self._client.post(
                    self._url,
                    json=payload,
                    timeout=request_timeout(self._settings, attempt_timeout),
                )

    def _stream_request(self, payload: dict[str, Any], attempt_timeout: float) -> httpx.Request:
        """The POST that opens a stream (sent with :func:`open_stream`)."""
        self._check_open()
        return self._client.build_request(
            "POST",
            self._url,
            json=payload,
            timeout=request_timeout(self._settings, attempt_timeout),
        )
