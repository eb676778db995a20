"""The LLM provider family: records, errors and the :class:`Provider` Protocol.

A provider turns a :class:`ChatRequest` (chat messages plus the numbered context blocks the
messages were built from) into a :class:`Completion`, or streams it as :class:`StreamChunk`
deltas. Implementations live in :mod:`ragd.generation.providers` (``openai``, ``anthropic``,
``extractive``) and are built by :func:`ragd.generation.providers.factory.build_providers`.

Every failure a provider reports is a :class:`ProviderError` with a ``kind``: the router
(:mod:`ragd.generation.router`) decides from the kind alone whether to retry, whether the
failure counts against the provider's circuit breaker, and what to show in
``/performance/llm-providers``. Providers never retry themselves (one retry layer only).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = [
    "CLIENT_ERRORS",
    "RETRYABLE",
    "ChatRequest",
    "Completion",
    "ContextBlock",
    "ErrorKind",
    "Message",
    "Provider",
    "ProviderError",
    "Role",
    "StreamChunk",
    "Usage",
]

Role = Literal["system", "user", "assistant"]

#: What went wrong, as the router sees it.
#:
#: * ``timeout`` — no (complete) answer within the provider's timeout;
#: * ``connection`` — connect refused/reset, DNS, TLS, a stream cut off mid-way;
#: * ``rate_limited`` — HTTP 429 (``retry_after`` set from ``Retry-After`` when given);
#: * ``overloaded`` — HTTP 408, 409, 5xx, Anthropic's 529 / ``overloaded_error``;
#: * ``malformed`` — a 2xx response that does not parse as the protocol says;
#: * ``auth`` — HTTP 401/403 (bad or missing credentials);
#: * ``client`` — HTTP 400/404/413/422 and other 4xx: the request itself is wrong;
#: * ``deadline`` — the router's overall deadline ran out (set by the router, not providers).
ErrorKind = Literal[
    "timeout", "connection", "rate_limited", "overloaded", "malformed", "auth", "client",
    "deadline",
]
#: Kinds worth another attempt at the same provider.
RETRYABLE: frozenset[ErrorKind] = frozenset(
    {"timeout", "connection", "rate_limited", "overloaded"}
)
#: Kinds that say nothing about the provider's health: they never trip its breaker.
CLIENT_ERRORS: frozenset[ErrorKind] = frozenset({"auth", "client", "deadline"})


class ProviderError(Exception):
    """A provider call failed; ``kind`` drives retries and the breaker.

    ``message`` must never contain credentials (providers strip them from upstream bodies).
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    @property
    def counts_as_failure(self) -> bool:
        """Whether this failure counts against the provider's circuit breaker."""
        return self.kind not in CLIENT_ERRORS

    def __repr__(self) -> str:
        return f"ProviderError({self.kind!r}, {self.message!r}, status={self.status})"


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ContextBlock:
    """One retrieved chunk as given to the model: block ``n`` (1-based) of the prompt."""

    n: int
    chunk_id: str
    document_id: str
    title: str
    page: int | None
    text: str
    heading_path: tuple[str, ...] = ()
    #: Where ``text`` lies in its document's parsed text (chunks of one document that touch
    #: or overlap are read as one passage); None when unknown.
    start: int | None = None
    end: int | None = None
    #: The chunk's position in its document (chunks ``k`` and ``k + 1`` are adjacent).
    ordinal: int | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What a provider answers: ``messages`` (already holding the prompt built from
    ``context``), plus the raw ``question`` and ``context`` for providers that do not use a
    language model (the extractive provider reads those, not the messages)."""

    messages: tuple[Message, ...]
    question: str
    context: tuple[ContextBlock, ...] = ()
    max_tokens: int | None = None  # None: the provider's configured max_tokens
    temperature: float | None = None  # None: the provider's configured temperature


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str
    usage: Usage | None = None
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """One streamed delta. The last chunk of a stream may carry only usage/finish_reason."""

    text: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None


class Provider(Protocol):
    """One configured LLM endpoint (or the extractive composer)."""

    @property
    def name(self) -> str:
        """The configured, unique name (``providers[].name``)."""
        ...

    @property
    def kind(self) -> str:
        """The implementation: ``openai``, ``anthropic`` or ``extractive``."""
        ...

    @property
    def model(self) -> str: ...

    async def complete(self, request: ChatRequest, *, attempt_timeout: float) -> Completion:
        """The whole answer, or :class:`ProviderError`. ``attempt_timeout`` (s) bounds this one
        attempt; the router passes ``min(configured timeout, time left to the deadline)``."""
        ...

    def stream(
        self, request: ChatRequest, *, attempt_timeout: float
    ) -> AsyncIterator[StreamChunk]:
        """Deltas as the upstream produces them; raises :class:`ProviderError` (before or
        after the first delta). ``attempt_timeout`` bounds the wait for the first delta and each
        gap between deltas. Closing the iterator early (``aclose``) closes the upstream request."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def last_user_message(messages: Sequence[Message]) -> str:
    """The content of the last ``user`` message ('' when there is none)."""
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return ""
