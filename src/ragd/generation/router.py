"""The ordered provider chain: retries, backoff, circuit breakers, a deadline, fallback.

:class:`Router` tries its :class:`Route` s in order (or in the order a request names) until one
answers:

* a provider whose breaker is open is skipped (``Skip(reason="breaker_open")``);
* retryable failures (:data:`~ragd.generation.base.RETRYABLE`) are retried at the same
  provider up to ``max_attempts`` times after a capped exponential backoff with full jitter,
  ``random() * min(backoff_max, backoff_base * 2 ** (attempt - 1))``, or after the
  ``Retry-After`` the provider reported; a ``Retry-After`` above ``retry_after_max_seconds``
  or beyond the deadline abandons that provider at once;
* any other failure moves on to the next provider without a retry (``malformed`` counts against
  the breaker, ``auth``/``client`` do not);
* ``settings.deadline_seconds`` bounds the whole request: each attempt gets
  ``min(route timeout, time left)``, no backoff wait crosses the deadline, and once it has
  passed the remaining providers are skipped (``Skip(reason="deadline")``);
* the chain's **last** route (the local extractive provider) is the fallback that must always
  answer: it is always in the plan, its breaker never makes it skipped, and it is still tried
  once after the deadline with a budget of :data:`FALLBACK_BUDGET_SECONDS`.

A timeout of an attempt whose timeout had been shortened by the deadline is reported as kind
``deadline``: it says nothing about the provider's health, so it does not trip the breaker.

Streaming (:meth:`Router.stream`) falls back only while no text has been produced; a failure
after the first non-empty delta ends the stream with :class:`StreamInterrupted`. Once the
first delta is out the deadline no longer applies (the provider still bounds each gap between
deltas). A consumer that stops early (``aclose``, cancellation) closes the upstream request;
that is not a provider failure.

Breakers and statistics live in the router (one per provider, for the process lifetime) and
are exposed by :meth:`Router.status` for ``/performance/llm-providers``.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from ragd.generation.base import ChatRequest, Completion, Provider, ProviderError, StreamChunk
from ragd.generation.breaker import BreakerSnapshot, CircuitBreaker
from ragd.ops.percentile import percentile
from ragd.settings import LLMSettings

__all__ = [
    "FALLBACK_BUDGET_SECONDS",
    "AllProvidersFailed",
    "Attempt",
    "LastError",
    "OutcomeObserver",
    "ProviderState",
    "ProviderStatus",
    "Route",
    "Routed",
    "RoutedStream",
    "Router",
    "Skip",
    "SkipReason",
    "StreamInterrupted",
]

logger = logging.getLogger(__name__)

#: The attempt timeout the fallback route gets at least, even once the deadline has passed.
FALLBACK_BUDGET_SECONDS = 5.0
#: Extra time a provider gets beyond ``attempt_timeout`` before the router stops waiting for
#: it (providers enforce the timeout themselves; this guards against one that does not).
_GUARD_GRACE_SECONDS = 1.0
_LATENCY_SAMPLES = 200
_RECENT_CALLS = 20

SkipReason = Literal["breaker_open", "deadline", "not_requested"]
ProviderState = Literal["configured", "healthy", "degraded", "open"]
_Gate = Literal["call", "forced", "stop"]
#: Told each provider's outcome: ``(provider, outcome)``, the outcome being ``ok``, the
#: failure's kind (:data:`~ragd.generation.base.ErrorKind`), or ``skipped_breaker_open`` /
#: ``skipped_deadline`` for a provider of the plan that was not called.
OutcomeObserver = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class Route:
    """One configured provider and its limits."""

    provider: Provider
    timeout_seconds: float
    max_attempts: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call of one provider.

    ``seconds`` is the call's duration; ``waited_seconds`` the backoff slept before it.
    ``error_kind``/``status``/``message`` describe the failure (None when ``ok``).
    """

    provider: str
    attempt: int
    ok: bool
    error_kind: str | None
    status: int | None
    message: str | None
    seconds: float
    waited_seconds: float


@dataclass(frozen=True, slots=True)
class Skip:
    """A provider of the chain that was not called, and why."""

    provider: str
    reason: SkipReason


@dataclass(frozen=True, slots=True)
class Routed:
    """A completion and how it was obtained."""

    completion: Completion
    provider: str
    model: str
    attempts: tuple[Attempt, ...]
    skipped: tuple[Skip, ...]


class AllProvidersFailed(Exception):
    """Every provider of the plan failed or was skipped (even the fallback route)."""

    def __init__(self, attempts: Sequence[Attempt], skipped: Sequence[Skip]) -> None:
        self.attempts: tuple[Attempt, ...] = tuple(attempts)
        self.skipped: tuple[Skip, ...] = tuple(skipped)
        tried = ", ".join(
            f"{a.provider}#{a.attempt}: {a.error_kind}" for a in self.attempts if not a.ok
        )
        super().__init__(f"all LLM providers failed ({tried or 'none tried'})")


class StreamInterrupted(Exception):
    """The provider failed after it had streamed text; ``partial`` is the text so far."""

    def __init__(self, provider: str, partial: str, error: ProviderError) -> None:
        super().__init__(f"stream from {provider} interrupted: {error.kind}: {error.message}")
        self.provider = provider
        self.partial = partial
        self.error = error


@dataclass(frozen=True, slots=True)
class LastError:
    """The most recent failure of a provider; ``at`` is wall-clock ISO 8601 (UTC)."""

    kind: str
    message: str
    at: str


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    """One provider as ``/performance/llm-providers`` shows it.

    ``state``: ``configured`` (never called), ``healthy``, ``degraded`` (breaker closed but
    the last call, or one of the last 20, failed for a reason other than a client error or
    the deadline) or ``open`` (breaker open or half-open). ``failing``: the last call failed,
    for a reason other than the request itself (``client``) or the deadline (a rejected key,
    ``auth``, is failing). Latencies are over the last 200 successful calls (streams: until the
    last chunk), None before the first one.
    """

    name: str
    kind: str
    model: str
    state: ProviderState
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    calls: int
    successes: int
    errors_by_kind: dict[str, int]
    last_error: LastError | None
    last_success_at: str | None
    breaker: BreakerSnapshot
    failing: bool = False


@dataclass(slots=True)
class _Stats:
    calls: int = 0
    successes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=_LATENCY_SAMPLES))
    recent_unhealthy: deque[bool] = field(default_factory=lambda: deque(maxlen=_RECENT_CALLS))
    last_error: LastError | None = None
    last_success_at: str | None = None
    last_outcome: str | None = None  # "ok" or the last failure's kind


@dataclass(slots=True)
class _Slot:
    """One route with its breaker and statistics."""

    route: Route
    breaker: CircuitBreaker
    stats: _Stats

    @property
    def name(self) -> str:
        return self.route.provider.name


@dataclass(slots=True)
class _Run:
    """The bookkeeping of one routed request."""

    plan: list[_Slot]
    deadline: float
    attempts: list[Attempt] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


class Router:
    """Routes chat requests over an ordered chain of providers (see the module docstring).

    ``clock`` (monotonic seconds) drives the deadline, backoff decisions, breakers and
    durations; ``wall_clock`` (seconds since the epoch) only dates the last success, the last
    error and a breaker's opening on the status page; ``sleep`` performs backoff waits;
    ``random`` (in [0, 1)) is the jitter. All are injectable so tests need not wait.
    ``on_outcome`` is told every call's outcome and every skip (the Prometheus counter).
    """

    def __init__(
        self,
        routes: Sequence[Route],
        settings: LLMSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random: Callable[[], float] = _random.random,
        on_outcome: OutcomeObserver | None = None,
    ) -> None:
        if not routes:
            raise ValueError("the router needs at least one route")
        names = [route.provider.name for route in routes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate provider names: {', '.join(duplicates)}")
        self._settings = settings
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._random = random
        self._on_outcome = on_outcome
        self._slots = [
            _Slot(
                route=route,
                breaker=CircuitBreaker(
                    failures=settings.breaker_failures,
                    window_seconds=settings.breaker_window_seconds,
                    failure_rate=settings.breaker_failure_rate,
                    min_calls=settings.breaker_min_calls,
                    cooldown_seconds=settings.breaker_cooldown_seconds,
                    clock=clock,
                    wall_clock=wall_clock,
                ),
                stats=_Stats(),
            )
            for route in routes
        ]
        self._by_name = {slot.name: slot for slot in self._slots}

    @property
    def names(self) -> list[str]:
        """The provider names in chain order (the last one is the fallback)."""
        return [slot.name for slot in self._slots]

    @property
    def language_models(self) -> frozenset[str]:
        """The names of the providers that are language models (not ``extractive``)."""
        return frozenset(s.name for s in self._slots if s.route.provider.kind != "extractive")

    def check_order(self, order: Sequence[str]) -> None:
        """Raise ValueError (listing the valid names) when ``order`` names an unknown
        provider."""
        unknown = [name for name in order if name not in self._by_name]
        if unknown:
            raise ValueError(
                f"unknown provider(s): {', '.join(unknown)}; valid: {', '.join(self.names)}"
            )

    def has_language_model(self, order: Sequence[str] | None = None) -> bool:
        """Whether the plan for ``order`` holds a language model (breakers aside)."""
        return any(slot.name in self.language_models for slot in self._plan(order).plan)

    # -- planning ---------------------------------------------------------------------------

    def _plan(self, order: Sequence[str] | None) -> _Run:
        deadline = self._clock() + self._settings.deadline_seconds
        if order is None:
            return _Run(plan=list(self._slots), deadline=deadline)
        self.check_order(order)
        plan: list[_Slot] = []
        for name in order:
            slot = self._by_name[name]
            if slot not in plan:
                plan.append(slot)
        if self._slots[-1] not in plan:
            plan.append(self._slots[-1])
        skipped = [Skip(s.name, "not_requested") for s in self._slots if s not in plan]
        return _Run(plan=plan, deadline=deadline, skipped=skipped)

    def _is_fallback(self, slot: _Slot) -> bool:
        return slot is self._slots[-1]

    def _attempt_timeout(self, slot: _Slot, run: _Run) -> tuple[float, bool]:
        """The timeout of the next attempt, and whether the deadline shortened it."""
        configured = slot.route.timeout_seconds
        left = run.deadline - self._clock()
        if self._is_fallback(slot):
            floor = min(configured, FALLBACK_BUDGET_SECONDS)
            return max(min(configured, left), floor), left < floor
        return min(configured, left), left < configured

    def _backoff(self, slot: _Slot, error: ProviderError, attempt: int, run: _Run) -> float | None:
        """How long to wait before the next attempt at ``slot``, or None to move on."""
        if not error.retryable or attempt >= slot.route.max_attempts:
            return None
        if slot.breaker.state == "open" and not self._is_fallback(slot):
            return None  # this failure opened it: waiting would only delay the next provider
        settings = self._settings
        if error.retry_after is not None:
            if error.retry_after > settings.retry_after_max_seconds:
                return None
            wait = max(0.0, error.retry_after)
        else:
            cap = min(
                settings.backoff_max_seconds, settings.backoff_base_seconds * 2 ** (attempt - 1)
            )
            wait = self._random() * cap
        if self._clock() + wait >= run.deadline:
            return None
        return wait

    # -- bookkeeping ------------------------------------------------------------------------

    def _succeeded(
        self, slot: _Slot, run: _Run, attempt: int, seconds: float, waited: float, forced: bool
    ) -> None:
        if forced:  # called in spite of an open breaker, and it worked
            slot.breaker.reset()
        else:
            slot.breaker.record_success()
        stats = slot.stats
        stats.calls += 1
        stats.successes += 1
        stats.latencies.append(seconds)
        stats.recent_unhealthy.append(False)
        stats.last_success_at = self._now_iso()
        stats.last_outcome = "ok"
        run.attempts.append(Attempt(slot.name, attempt, True, None, None, None, seconds, waited))
        self._tell(slot.name, "ok")

    def _failed(
        self,
        slot: _Slot,
        run: _Run,
        attempt: int,
        error: ProviderError,
        seconds: float,
        waited: float,
        forced: bool,
    ) -> None:
        if forced:  # the breaker did not allow this call: it holds no slot of it
            pass
        elif error.counts_as_failure:
            slot.breaker.record_failure()
        else:
            slot.breaker.release()
        stats = slot.stats
        stats.calls += 1
        stats.errors[error.kind] += 1
        stats.recent_unhealthy.append(error.kind not in ("client", "deadline"))
        stats.last_error = LastError(error.kind, error.message, self._now_iso())
        stats.last_outcome = error.kind
        self._tell(slot.name, error.kind)
        run.attempts.append(
            Attempt(
                slot.name, attempt, False, error.kind, error.status, error.message, seconds, waited
            )
        )
        logger.info(
            "LLM provider call failed",
            extra={
                "provider": slot.name,
                "attempt": attempt,
                "error_kind": error.kind,
                "status": error.status,
            },
        )

    def _skip(self, run: _Run, slot: _Slot, reason: SkipReason) -> None:
        run.skipped.append(Skip(slot.name, reason))
        self._tell(slot.name, f"skipped_{reason}")

    def _tell(self, provider: str, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(provider, outcome)

    @staticmethod
    def _classify(exc: BaseException, shortened: bool) -> ProviderError:
        """Map what a call raised to a :class:`ProviderError` (a deadline-cut timeout becomes
        kind ``deadline``; a provider bug becomes ``malformed`` so it falls through)."""
        if isinstance(exc, ProviderError):
            if exc.kind == "timeout" and shortened:
                return ProviderError(
                    "deadline", f"the request deadline ran out ({exc.message})", status=exc.status
                )
            return exc
        if isinstance(exc, TimeoutError):
            kind: Literal["deadline", "timeout"] = "deadline" if shortened else "timeout"
            return ProviderError(kind, "the provider did not answer within its timeout")
        return ProviderError("malformed", f"provider error: {type(exc).__name__}")

    # -- completion -------------------------------------------------------------------------

    async def complete(self, request: ChatRequest, *, order: Sequence[str] | None = None) -> Routed:
        """The first answer of the chain (or of ``order``, see the module docstring).

        Raises ValueError for unknown names in ``order`` and :class:`AllProvidersFailed`
        when no provider answered.
        """
        run = self._plan(order)
        for slot in run.plan:
            completion = await self._complete_at(slot, request, run)
            if completion is not None:
                return Routed(
                    completion=completion,
                    provider=slot.name,
                    model=completion.model or slot.route.provider.model,
                    attempts=tuple(run.attempts),
                    skipped=tuple(run.skipped),
                )
        raise AllProvidersFailed(run.attempts, run.skipped)

    def _gate(self, slot: _Slot, run: _Run, attempt: int) -> _Gate:
        """Whether attempt number ``attempt`` at ``slot`` may start (records skips):
        ``call``, ``forced`` (the fallback route, in spite of its breaker) or ``stop``."""
        fallback = self._is_fallback(slot)
        past_deadline = self._clock() >= run.deadline
        if past_deadline and (not fallback or attempt > 1):
            if attempt == 1:
                self._skip(run, slot, "deadline")
            return "stop"
        if slot.breaker.allow():
            return "call"
        # The fallback must always answer: its breaker is kept for status, never obeyed.
        if fallback:
            return "forced"
        if attempt == 1:
            self._skip(run, slot, "breaker_open")
        return "stop"

    async def _complete_at(self, slot: _Slot, request: ChatRequest, run: _Run) -> Completion | None:
        provider = slot.route.provider
        waited = 0.0
        for attempt in range(1, slot.route.max_attempts + 1):
            gate = self._gate(slot, run, attempt)
            if gate == "stop":
                return None
            timeout, shortened = self._attempt_timeout(slot, run)
            started = self._clock()
            try:
                async with asyncio.timeout(timeout + _GUARD_GRACE_SECONDS):
                    completion = await provider.complete(request, attempt_timeout=timeout)
            except asyncio.CancelledError:
                if gate == "call":
                    slot.breaker.release()
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is classified and recorded
                if not isinstance(exc, ProviderError | TimeoutError):
                    logger.exception("LLM provider %s raised unexpectedly", slot.name)
                error = self._classify(exc, shortened)
                self._failed(
                    slot, run, attempt, error, self._clock() - started, waited, gate == "forced"
                )
                wait = self._backoff(slot, error, attempt, run)
                if wait is None:
                    return None
                await self._sleep(wait)
                waited = wait
                continue
            self._succeeded(slot, run, attempt, self._clock() - started, waited, gate == "forced")
            return completion
        return None

    # -- streaming --------------------------------------------------------------------------

    def stream(self, request: ChatRequest, *, order: Sequence[str] | None = None) -> RoutedStream:
        """Stream the first provider that produces text (see the module docstring).

        Raises ValueError at once for unknown names in ``order``; iterating raises
        :class:`AllProvidersFailed` or :class:`StreamInterrupted`.
        """
        run = self._plan(order)
        return RoutedStream(self, request, run)

    async def _stream_at(
        self, slot: _Slot, request: ChatRequest, run: _Run, out: RoutedStream
    ) -> AsyncGenerator[StreamChunk, None]:
        """Yield ``slot``'s chunks; returns without yielding when it failed before any text
        (the caller moves on), raises :class:`StreamInterrupted` when it failed after."""
        provider = slot.route.provider
        waited = 0.0
        for attempt in range(1, slot.route.max_attempts + 1):
            gate = self._gate(slot, run, attempt)
            if gate == "stop":
                return
            timeout, shortened = self._attempt_timeout(slot, run)
            started = self._clock()
            upstream = provider.stream(request, attempt_timeout=timeout)
            held: list[StreamChunk] = []  # chunks without text before the first delta
            parts: list[str] = []
            settled = False  # the breaker and stats know how this call ended
            error: ProviderError
            try:
                try:
                    while True:
                        # The provider bounds the wait for each chunk; the guard is for one
                        # that does not.
                        async with asyncio.timeout(timeout + _GUARD_GRACE_SECONDS):
                            chunk = await anext(upstream, None)
                        if chunk is None:
                            break
                        if not parts and not chunk.text:
                            held.append(chunk)
                            continue
                        if not parts:
                            out.provider = slot.name
                            out.model = provider.model
                            for early in held:
                                yield early
                            held.clear()
                        parts.append(chunk.text)
                        yield chunk
                except Exception as exc:  # noqa: BLE001 - every failure is classified
                    if not isinstance(exc, ProviderError | TimeoutError):
                        logger.exception("LLM provider %s raised unexpectedly", slot.name)
                    error = self._classify(exc, shortened and not parts)
                    settled = True
                    self._failed(
                        slot, run, attempt, error, self._clock() - started, waited, gate == "forced"
                    )
                    if parts:
                        raise StreamInterrupted(slot.name, "".join(parts), error) from exc
                else:
                    settled = True
                    self._succeeded(
                        slot, run, attempt, self._clock() - started, waited, gate == "forced"
                    )
                    out._done = True
                    if not parts:  # an empty answer is still an answer
                        out.provider = slot.name
                        out.model = provider.model
                        for early in held:
                            yield early
                    return
            finally:
                if not settled and gate == "call":  # the consumer went away: not a failure
                    slot.breaker.release()
                await _close(upstream)
            wait = self._backoff(slot, error, attempt, run)
            if wait is None:
                return
            await self._sleep(wait)
            waited = wait

    # -- status -----------------------------------------------------------------------------

    def _now_iso(self) -> str:
        return datetime.fromtimestamp(self._wall_clock(), UTC).isoformat()

    def status(self) -> list[ProviderStatus]:
        """Every provider in chain order, for ``/performance/llm-providers``."""
        result = []
        for slot in self._slots:
            stats = slot.stats
            snapshot = slot.breaker.snapshot()
            state: ProviderState
            if snapshot.state != "closed":
                state = "open"
            elif stats.calls == 0:
                state = "configured"
            elif any(stats.recent_unhealthy):
                state = "degraded"
            else:
                state = "healthy"
            latencies = list(stats.latencies)
            p50 = percentile(latencies, 50) if latencies else None
            p95 = percentile(latencies, 95) if latencies else None
            provider = slot.route.provider
            result.append(
                ProviderStatus(
                    name=slot.name,
                    kind=provider.kind,
                    model=provider.model,
                    state=state,
                    latency_p50_ms=None if p50 is None else round(p50 * 1000, 3),
                    latency_p95_ms=None if p95 is None else round(p95 * 1000, 3),
                    calls=stats.calls,
                    successes=stats.successes,
                    errors_by_kind=dict(stats.errors),
                    last_error=stats.last_error,
                    last_success_at=stats.last_success_at,
                    breaker=snapshot,
                    failing=stats.last_outcome not in (None, "ok", "client", "deadline"),
                )
            )
        return result

    async def aclose(self) -> None:
        """Close every provider (one failing to close does not stop the others)."""
        for slot in self._slots:
            try:
                await slot.route.provider.aclose()
            except Exception:
                logger.exception("closing LLM provider %s failed", slot.name)


async def _close(iterator: AsyncIterator[StreamChunk]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


class RoutedStream:
    """An async iterator of :class:`StreamChunk` from the first provider that produced text.

    ``provider``/``model`` are set when a provider produced its first delta; ``attempts`` and
    ``skipped`` grow as the router goes. :meth:`aclose` closes the upstream request.
    """

    def __init__(self, router: Router, request: ChatRequest, run: _Run) -> None:
        self.provider: str | None = None
        self.model: str | None = None
        self._done = False
        self._router = router
        self._request = request
        self._run = run
        self._gen = self._chunks()

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """The calls made so far."""
        return tuple(self._run.attempts)

    @property
    def skipped(self) -> tuple[Skip, ...]:
        """The providers skipped so far."""
        return tuple(self._run.skipped)

    async def _chunks(self) -> AsyncGenerator[StreamChunk, None]:
        # The deadline counts from the first read, not from when the stream was created.
        self._run.deadline = self._router._clock() + self._router._settings.deadline_seconds
        for slot in self._run.plan:
            inner = self._router._stream_at(slot, self._request, self._run, self)
            try:
                async for chunk in inner:
                    yield chunk
            finally:
                await inner.aclose()
            if self._done:
                return
        raise AllProvidersFailed(self._run.attempts, self._run.skipped)

    def __aiter__(self) -> RoutedStream:
        return self

    async def __anext__(self) -> StreamChunk:
        return await anext(self._gen)

    async def aclose(self) -> None:
        """Stop: closes the upstream provider stream; not counted as a provider failure."""
        await self._gen.aclose()
