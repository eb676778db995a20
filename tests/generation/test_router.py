"""The provider router against real OpenAI-compatible HTTP servers on 127.0.0.1.

Every provider is the real :class:`OpenAIProvider`; the only fakes are the upstream servers
(:class:`FakeLLMServer`). Waiting is replaced by a fake clock and a recording ``sleep``
wherever the behaviour under test is a wait, so the suite stays fast.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from ragd.generation.base import ChatRequest, ContextBlock, Message, StreamChunk
from ragd.generation.providers.extractive import EXTRACTIVE_PREFIX, ExtractiveProvider
from ragd.generation.providers.openai import OpenAIProvider
from ragd.generation.router import (
    AllProvidersFailed,
    Route,
    Router,
    Skip,
    StreamInterrupted,
)
from ragd.models.onnx_embedder import OnnxEmbedder
from ragd.settings import LLMSettings, ProviderSettings
from tests.fake_clock import FakeClock
from tests.generation.fakes import FakeLLMServer, Step
from tests.waiting import HANG_TIMEOUT, eventually

REQUEST = ChatRequest(messages=(Message("user", "What is in the report?"),), question="Q?")
FAKE_TEXT = "Hello from the fake model [1]."



@dataclass
class Sleeps:
    """A ``sleep`` that records the waits and moves the fake clock instead of waiting."""

    clock: FakeClock | None = None
    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)


def llm_settings(**overrides: Any) -> LLMSettings:
    values: dict[str, Any] = {
        "deadline_seconds": 60.0,
        "backoff_base_seconds": 0.5,
        "backoff_max_seconds": 8.0,
        "retry_after_max_seconds": 20.0,
        "breaker_failures": 3,
        "breaker_window_seconds": 60.0,
        "breaker_failure_rate": 0.5,
        "breaker_min_calls": 10,
        "breaker_cooldown_seconds": 30.0,
    }
    values.update(overrides)
    return LLMSettings(**values)


def route(
    server: FakeLLMServer, name: str, *, timeout: float = HANG_TIMEOUT, max_attempts: int = 3
) -> Route:
    provider = OpenAIProvider(
        ProviderSettings(
            name=name,
            type="openai",
            model="fake-model",
            base_url=server.base_url,
            timeout_seconds=timeout,
            max_attempts=max_attempts,
        )
    )
    return Route(provider=provider, timeout_seconds=timeout, max_attempts=max_attempts)


@pytest.fixture
def servers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def start(stack: ExitStack, *script: Step, default: Step | None = None, **kw: Any) -> FakeLLMServer:
    return stack.enter_context(FakeLLMServer("openai", script, default=default, **kw))


def status_of(router: Router, name: str) -> Any:
    return next(s for s in router.status() if s.name == name)


async def collect(stream: Any) -> list[StreamChunk]:
    return [chunk async for chunk in stream]


# -- completion: retries and backoff -------------------------------------------------------


async def test_first_provider_answers(servers: ExitStack) -> None:
    primary = start(servers)
    fallback = start(servers)
    router = Router([route(primary, "primary"), route(fallback, "fallback")], llm_settings())
    try:
        assert router.names == ["primary", "fallback"]
        assert [s.state for s in router.status()] == ["configured", "configured"]
        routed = await router.complete(REQUEST)
    finally:
        await router.aclose()
    assert routed.provider == "primary"
    assert routed.completion.text == FAKE_TEXT
    assert routed.model == "fake-model"
    assert [(a.provider, a.attempt, a.ok) for a in routed.attempts] == [("primary", 1, True)]
    assert routed.skipped == ()
    assert len(primary.requests) == 1 and fallback.requests == []
    status = status_of(router, "primary")
    assert status.state == "healthy" and status.calls == 1 and status.successes == 1
    assert status.last_success_at is not None and status.kind == "openai"
    assert status.latency_p50_ms is not None and status.latency_p95_ms is not None
    assert status_of(router, "fallback").state == "configured"


async def test_retryable_errors_are_retried_with_full_jitter_backoff(servers: ExitStack) -> None:
    primary = start(servers, Step("status", status=503), Step("status", status=500), Step("ok"))
    fallback = start(servers)
    sleeps = Sleeps()
    router = Router(
        [route(primary, "primary"), route(fallback, "fallback")],
        llm_settings(backoff_base_seconds=0.5, backoff_max_seconds=8.0),
        sleep=sleeps,
        random=lambda: 1.0,
    )
    routed = await router.complete(REQUEST)
    await router.aclose()
    assert routed.provider == "primary"
    assert len(primary.requests) == 3 and fallback.requests == []
    assert sleeps.waits == [0.5, 1.0]  # 1.0 * 0.5 * 2**0, 1.0 * 0.5 * 2**1
    assert [(a.attempt, a.ok, a.error_kind, a.status) for a in routed.attempts] == [
        (1, False, "overloaded", 503),
        (2, False, "overloaded", 500),
        (3, True, None, None),
    ]
    assert [a.waited_seconds for a in routed.attempts] == [0.0, 0.5, 1.0]


async def test_backoff_is_capped_and_scaled_by_random(servers: ExitStack) -> None:
    primary = start(servers, default=Step("status", status=502))
    fallback = start(servers)
    sleeps = Sleeps()
    router = Router(
        [route(primary, "primary", max_attempts=4), route(fallback, "fallback")],
        llm_settings(backoff_base_seconds=1.0, backoff_max_seconds=1.5, breaker_failures=10),
        sleep=sleeps,
        random=lambda: 0.5,
    )
    routed = await router.complete(REQUEST)
    await router.aclose()
    # 0.5 * min(1.5, 1), 0.5 * min(1.5, 2), 0.5 * min(1.5, 4); no wait after the last attempt
    assert sleeps.waits == [0.5, 0.75, 0.75]
    assert len(primary.requests) == 4
    assert routed.provider == "fallback"
    assert [(a.provider, a.attempt) for a in routed.attempts][-1] == ("fallback", 1)


async def test_retry_after_is_honoured(servers: ExitStack) -> None:
    primary = start(
        servers, Step("status", status=429, headers={"Retry-After": "2"}), Step("ok")
    )
    fallback = start(servers)
    sleeps = Sleeps()
    router = Router(
        [route(primary, "primary"), route(fallback, "fallback")],
        llm_settings(),
        sleep=sleeps,
        random=lambda: 1.0,
    )
    routed = await router.complete(REQUEST)
    await router.aclose()
    assert sleeps.waits == [2.0]
    assert routed.provider == "primary"
    assert routed.attempts[0].error_kind == "rate_limited"
    assert len(primary.requests) == 2


async def test_retry_after_above_the_cap_abandons_the_provider(servers: ExitStack) -> None:
    primary = start(servers, Step("status", status=429, headers={"Retry-After": "120"}))
    fallback = start(servers)
    sleeps = Sleeps()
    router = Router(
        [route(primary, "primary"), route(fallback, "fallback")],
        llm_settings(retry_after_max_seconds=20.0),
        sleep=sleeps,
    )
    routed = await router.complete(REQUEST)
    await router.aclose()
    assert sleeps.waits == []
    assert len(primary.requests) == 1
    assert routed.provider == "fallback"
    assert [(a.provider, a.error_kind) for a in routed.attempts] == [
        ("primary", "rate_limited"),
        ("fallback", None),
    ]


async def test_retry_after_beyond_the_deadline_abandons_the_provider(servers: ExitStack) -> None:
    primary = start(servers, Step("status", status=429, headers={"Retry-After": "10"}))
    fallback = start(servers)
    sleeps = Sleeps()
    router = Router(
        [route(primary, "primary"), route(fallback, "fallback")],
        llm_settings(deadline_seconds=5.0),
        clock=FakeClock(),
        sleep=sleeps,
    )
    routed = await router.complete(REQUEST)
    await router.aclose()
    assert sleeps.waits == [] and len(primary.requests) == 1
    assert routed.provider == "fallback"


@pytest.mark.parametrize(("status", "kind"), [(401, "auth"), (403, "auth"), (400, "client")])
async def test_client_errors_are_not_retried_and_never_open_the_breaker(
    servers: ExitStack, status: int, kind: str
) -> None:
    primary = start(servers, default=Step("status", status=status))
    fallback = start(servers)
    sleeps = Sleeps()
    router = Router(
        [route(primary, "primary"), route(fallback, "fallback")],
        llm_settings(breaker_failures=2, breaker_min_calls=2),
        sleep=sleeps,
    )
    for calls in range(1, 6):
        routed = await router.complete(REQUEST)
        assert routed.provider == "fallback"
        assert len(primary.requests) == calls  # one request each time: no retry
        assert routed.skipped == ()
    await router.aclose()
    assert sleeps.waits == []
    assert routed.attempts[0].error_kind == kind and routed.attempts[0].status == status
    status_ = status_of(router, "primary")
    assert status_.breaker.state == "closed"
    assert status_.breaker.consecutive_failures == 0
    assert status_.errors_by_kind == {kind: 5}
    assert status_.last_error is not None and status_.last_error.kind == kind


async def test_malformed_is_not_retried_but_counts_against_the_breaker(
    servers: ExitStack,
) -> None:
    primary = start(servers, Step("malformed"))
    fallback = start(servers)
    sleeps = Sleeps()
    router = Router(
        [route(primary, "primary"), route(fallback, "fallback")], llm_settings(), sleep=sleeps
    )
    routed = await router.complete(REQUEST)
    await router.aclose()
    assert len(primary.requests) == 1 and sleeps.waits == []
    assert routed.attempts[0].error_kind == "malformed"
    assert routed.provider == "fallback"
    primary_status = status_of(router, "primary")
    assert primary_status.breaker.consecutive_failures == 1
    assert primary_status.state == "degraded"


# -- fallback and order -------------------------------------------------------------------


async def test_falls_through_the_chain_to_the_last_route(servers: ExitStack) -> None:
    first = start(servers, default=Step("status", status=500))
    second = start(servers, default=Step("status", status=503))
    last = start(servers)
    sleeps = Sleeps()
    router = Router(
        [
            route(first, "first", max_attempts=2),
            route(second, "second", max_attempts=1),
            route(last, "last"),
        ],
        llm_settings(),
        sleep=sleeps,
        random=lambda: 0.0,
    )
    routed = await router.complete(REQUEST)
    await router.aclose()
    assert routed.provider == "last" and routed.completion.text == FAKE_TEXT
    assert [(a.provider, a.attempt, a.ok) for a in routed.attempts] == [
        ("first", 1, False),
        ("first", 2, False),
        ("second", 1, False),
        ("last", 1, True),
    ]
    assert (len(first.requests), len(second.requests), len(last.requests)) == (2, 1, 1)
    assert sleeps.waits == [0.0]


async def test_all_providers_failed(servers: ExitStack) -> None:
    first = start(servers, default=Step("status", status=500))
    last = start(servers, default=Step("status", status=401))
    router = Router(
        [route(first, "first", max_attempts=1), route(last, "last")],
        llm_settings(),
        sleep=Sleeps(),
    )
    with pytest.raises(AllProvidersFailed) as info:
        await router.complete(REQUEST)
    await router.aclose()
    assert [(a.provider, a.error_kind) for a in info.value.attempts] == [
        ("first", "overloaded"),
        ("last", "auth"),
    ]
    assert "first#1: overloaded" in str(info.value)


async def test_order_selects_and_keeps_the_last_route(servers: ExitStack) -> None:
    a = start(servers, default=Step("status", status=500))
    b = start(servers)
    last = start(servers)
    router = Router(
        [route(a, "a", max_attempts=1), route(b, "b"), route(last, "last")], llm_settings()
    )
    routed = await router.complete(REQUEST, order=["b"])
    assert routed.provider == "b"
    assert routed.skipped == (Skip("a", "not_requested"),)
    assert a.requests == []

    routed = await router.complete(REQUEST, order=["a"])  # "last" is appended as fallback
    assert routed.provider == "last"
    assert routed.skipped == (Skip("b", "not_requested"),)

    routed = await router.complete(REQUEST, order=["last", "a"])  # the given order is kept
    assert routed.provider == "last" and len(a.requests) == 1

    with pytest.raises(ValueError, match="unknown provider.*nope.*valid: a, b, last"):
        await router.complete(REQUEST, order=["nope"])
    with pytest.raises(ValueError, match="nope"):
        router.stream(REQUEST, order=["b", "nope"])
    await router.aclose()


def test_router_checks_its_routes(servers: ExitStack) -> None:
    server = start(servers)
    with pytest.raises(ValueError, match="at least one"):
        Router([], llm_settings())
    with pytest.raises(ValueError, match="duplicate"):
        Router([route(server, "x"), route(server, "x")], llm_settings())


# -- circuit breaker ----------------------------------------------------------------------


async def test_breaker_opens_skips_the_provider_then_a_probe_closes_it(
    servers: ExitStack,
) -> None:
    primary = start(servers, Step("status", status=500), Step("status", status=500), Step("ok"))
    fallback = start(servers)
    clock = FakeClock()
    router = Router(
        [route(primary, "primary", max_attempts=1), route(fallback, "fallback")],
        llm_settings(breaker_failures=2, breaker_cooldown_seconds=30.0),
        clock=clock,
        sleep=Sleeps(clock),
    )
    for _ in range(2):
        assert (await router.complete(REQUEST)).provider == "fallback"
    assert status_of(router, "primary").state == "open"
    assert status_of(router, "primary").breaker.retry_in_seconds == 30.0

    routed = await router.complete(REQUEST)  # open: no request reaches the fake
    assert routed.skipped == (Skip("primary", "breaker_open"),)
    assert routed.provider == "fallback"
    assert len(primary.requests) == 2

    clock.advance(29.0)
    await router.complete(REQUEST)
    assert len(primary.requests) == 2

    clock.advance(1.0)
    routed = await router.complete(REQUEST)  # the half-open probe
    assert len(primary.requests) == 3
    assert routed.provider == "primary"
    status = status_of(router, "primary")
    assert status.breaker.state == "closed" and status.state == "degraded"
    assert status.errors_by_kind == {"overloaded": 2}
    assert status.breaker.times_opened == 1
    await router.aclose()


async def test_every_outcome_and_skip_is_reported_and_failing_is_the_last_call(
    servers: ExitStack,
) -> None:
    """``on_outcome`` (the Prometheus counter) hears each call's outcome and each skip;
    ``failing`` is whether the provider's last call failed for its own sake: a rejected key
    is failing, a client error is not."""
    primary = start(servers, Step("status", status=500), Step("status", status=401),
                    Step("status", status=400), Step("status", status=500))
    fallback = start(servers)
    heard: list[tuple[str, str]] = []
    clock = FakeClock()
    router = Router(
        [route(primary, "primary", max_attempts=1), route(fallback, "fallback")],
        llm_settings(breaker_failures=2), clock=clock, sleep=Sleeps(clock),
        on_outcome=lambda provider, outcome: heard.append((provider, outcome)),
    )
    failing = []
    for _ in range(3):  # overloaded, auth (not counted by the breaker), client
        await router.complete(REQUEST)
        failing.append(status_of(router, "primary").failing)
    assert failing == [True, True, False]
    # The second overloaded: auth and client errors did not reset the streak, nor count.
    await router.complete(REQUEST)
    await router.complete(REQUEST, order=["primary"])  # skipped
    assert status_of(router, "primary").state == "open" and status_of(router, "primary").failing
    assert not status_of(router, "fallback").failing
    await router.aclose()
    assert heard == [
        ("primary", "overloaded"), ("fallback", "ok"), ("primary", "auth"), ("fallback", "ok"),
        ("primary", "client"), ("fallback", "ok"), ("primary", "overloaded"),
        ("fallback", "ok"), ("primary", "skipped_breaker_open"), ("fallback", "ok"),
    ]


async def test_a_failed_probe_reopens_the_breaker(servers: ExitStack) -> None:
    primary = start(servers, default=Step("status", status=503))
    fallback = start(servers)
    clock = FakeClock()
    router = Router(
        [route(primary, "primary", max_attempts=3), route(fallback, "fallback")],
        llm_settings(breaker_failures=2, breaker_cooldown_seconds=30.0),
        clock=clock,
        sleep=Sleeps(clock),
        random=lambda: 0.0,
    )
    await router.complete(REQUEST)  # 2 failures open it; the 3rd attempt is not made
    assert len(primary.requests) == 2
    clock.advance(30.0)
    routed = await router.complete(REQUEST)  # exactly one probe, no retries while open
    assert len(primary.requests) == 3
    assert [a.provider for a in routed.attempts] == ["primary", "fallback"]
    snapshot = status_of(router, "primary").breaker
    assert snapshot.state == "open" and snapshot.times_opened == 2
    assert snapshot.retry_in_seconds == 30.0
    await router.aclose()


async def test_concurrent_callers_do_not_share_the_half_open_probe(servers: ExitStack) -> None:
    probe_answer = threading.Event()
    primary = start(servers, Step("status", status=500), Step("ok", hold=probe_answer))
    fallback = start(servers)
    clock = FakeClock()
    router = Router(
        [route(primary, "primary", max_attempts=1), route(fallback, "fallback")],
        llm_settings(breaker_failures=1),
        clock=clock,
    )
    await router.complete(REQUEST)
    clock.advance(30.0)
    calls = [asyncio.create_task(router.complete(REQUEST)) for _ in range(3)]
    # While the probe is held upstream, the other two are answered by the fallback.
    await eventually(lambda: sum(call.done() for call in calls) == 2, what="two callers done")
    probe_answer.set()
    results = await asyncio.gather(*calls)
    assert sorted(r.provider for r in results) == ["fallback", "fallback", "primary"]
    assert len(primary.requests) == 2
    assert sum(r.skipped == (Skip("primary", "breaker_open"),) for r in results) == 2
    await router.aclose()


async def test_the_last_route_is_tried_even_with_its_breaker_open(servers: ExitStack) -> None:
    last = start(servers, Step("status", status=500), Step("ok"))
    clock = FakeClock()
    router = Router(
        [route(last, "last", max_attempts=1)],
        llm_settings(breaker_failures=1),
        clock=clock,
    )
    with pytest.raises(AllProvidersFailed):
        await router.complete(REQUEST)
    assert status_of(router, "last").state == "open"
    routed = await router.complete(REQUEST)
    assert routed.provider == "last" and routed.skipped == ()
    await router.aclose()


# -- deadline -----------------------------------------------------------------------------


async def test_deadline_bounds_the_chain_and_the_last_route_still_answers(
    servers: ExitStack,
) -> None:
    slow = start(servers, default=Step("hang"))
    other = start(servers)
    last = start(servers)
    # The slow route's own timeout is far past the deadline: only the deadline can end it.
    router = Router(
        [route(slow, "slow", timeout=600.0), route(other, "other"), route(last, "last")],
        llm_settings(deadline_seconds=0.5),
    )
    async with asyncio.timeout(HANG_TIMEOUT):
        routed = await router.complete(REQUEST)
    await router.aclose()
    assert routed.provider == "last"
    assert routed.skipped == (Skip("other", "deadline"),)
    assert other.requests == []
    assert routed.attempts[0].provider == "slow"
    # the timeout was the deadline's, not the provider's: not counted against its health
    assert routed.attempts[0].error_kind == "deadline"
    assert status_of(router, "slow").breaker.consecutive_failures == 0


async def test_no_backoff_wait_crosses_the_deadline(servers: ExitStack) -> None:
    primary = start(servers, default=Step("status", status=503))
    last = start(servers)
    clock = FakeClock()
    sleeps = Sleeps(clock)
    router = Router(
        [route(primary, "primary", max_attempts=5), route(last, "last")],
        llm_settings(
            deadline_seconds=3.0,
            backoff_base_seconds=1.0,
            backoff_max_seconds=8.0,
            breaker_failures=10,
        ),
        clock=clock,
        sleep=sleeps,
        random=lambda: 1.0,
    )
    routed = await router.complete(REQUEST)
    await router.aclose()
    assert sleeps.waits == [1.0]  # the next wait (2.0) would end at the deadline
    assert len(primary.requests) == 2
    assert routed.provider == "last"


async def test_after_the_deadline_only_the_last_route_is_tried_once(servers: ExitStack) -> None:
    answer = threading.Event()
    primary = start(servers, default=Step("status", status=503, hold=answer))
    other = start(servers)
    last = start(servers, Step("status", status=503), Step("ok"))
    clock = FakeClock()
    sleeps = Sleeps(clock)
    router = Router(
        [route(primary, "primary", max_attempts=1), route(other, "other"), route(last, "last")],
        llm_settings(deadline_seconds=30.0),
        clock=clock,
        sleep=sleeps,
    )

    real_complete = router.complete

    # Time passes during the first attempt (a fake clock does not move by itself): the
    # upstream answers only once the clock has moved past the deadline.
    async def complete_late() -> Any:
        task = asyncio.create_task(real_complete(REQUEST))
        await eventually(lambda: primary.requests)
        clock.advance(35.0)
        answer.set()
        return await task

    with pytest.raises(AllProvidersFailed) as info:
        await complete_late()
    await router.aclose()
    assert info.value.skipped == (Skip("other", "deadline"),)
    assert [(a.provider, a.attempt) for a in info.value.attempts] == [
        ("primary", 1),
        ("last", 1),
    ]
    assert len(last.requests) == 1 and sleeps.waits == []


# -- streaming ----------------------------------------------------------------------------


async def test_stream_falls_back_when_the_first_provider_fails_before_any_text(
    servers: ExitStack,
) -> None:
    primary = start(servers, default=Step("status", status=503))
    fallback = start(servers)
    router = Router(
        [route(primary, "primary", max_attempts=2), route(fallback, "fallback")],
        llm_settings(),
        sleep=Sleeps(),
    )
    stream = router.stream(REQUEST)
    assert stream.provider is None
    chunks = await collect(stream)
    await router.aclose()
    assert "".join(c.text for c in chunks) == FAKE_TEXT
    assert stream.provider == "fallback" and stream.model == "fake-model"
    assert [(a.provider, a.ok) for a in stream.attempts] == [
        ("primary", False),
        ("primary", False),
        ("fallback", True),
    ]
    assert len(primary.requests) == 2
    assert status_of(router, "fallback").successes == 1


async def test_stream_reset_after_first_tokens_raises_without_fallback(
    servers: ExitStack,
) -> None:
    primary = start(servers, Step("reset", reset_after=2))
    fallback = start(servers)
    router = Router([route(primary, "primary"), route(fallback, "fallback")], llm_settings())
    stream = router.stream(REQUEST)
    received: list[str] = []
    with pytest.raises(StreamInterrupted) as info:
        async for chunk in stream:
            received.append(chunk.text)
    await router.aclose()
    texts = [t for t in received if t]
    assert len(texts) == 2
    assert info.value.partial == "".join(texts)
    assert FAKE_TEXT.startswith(info.value.partial)
    assert info.value.provider == "primary"
    assert info.value.error.kind == "connection"
    assert fallback.requests == [] and len(primary.requests) == 1
    assert stream.provider == "primary"
    assert [(a.provider, a.ok, a.error_kind) for a in stream.attempts] == [
        ("primary", False, "connection")
    ]
    assert status_of(router, "primary").breaker.consecutive_failures == 1


async def test_closing_the_stream_early_closes_upstream_without_a_failure(
    servers: ExitStack,
) -> None:
    long_text = " ".join(f"word{i}" for i in range(200))
    primary = start(servers, Step("ok", text=long_text), stream_interval=0.02)
    fallback = start(servers)
    router = Router([route(primary, "primary"), route(fallback, "fallback")], llm_settings())
    stream = router.stream(REQUEST)
    first = await anext(stream)
    assert first.text
    await stream.aclose()
    await eventually(lambda: primary.disconnects)
    assert fallback.requests == []
    status = status_of(router, "primary")
    assert status.breaker.state == "closed" and status.breaker.consecutive_failures == 0
    assert status.errors_by_kind == {} and status.calls == 0
    await router.aclose()


async def test_cancelling_a_stream_consumer_is_not_a_failure(servers: ExitStack) -> None:
    primary = start(servers, Step("hang"))
    fallback = start(servers)
    clock = FakeClock()
    router = Router(
        [route(primary, "primary"), route(fallback, "fallback")],
        llm_settings(breaker_failures=1),
        clock=clock,
    )
    stream = router.stream(REQUEST)

    async def consume() -> None:
        async for _ in stream:
            pass

    task = asyncio.create_task(consume())
    await eventually(lambda: primary.requests)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stream.aclose()
    status = status_of(router, "primary")
    assert status.breaker.state == "closed" and status.errors_by_kind == {}
    assert fallback.requests == []
    await router.aclose()


# -- end to end with the real extractive provider as the last route -----------------------


async def test_failing_language_models_fall_back_to_the_extractive_provider(
    servers: ExitStack, minilm_embedder: OnnxEmbedder
) -> None:
    async def embed(texts: list[str]) -> npt.NDArray[np.float32]:
        return await asyncio.to_thread(minilm_embedder.embed, texts, kind="passage")

    extractive = ExtractiveProvider(embed)
    down = start(servers, default=Step("status", status=503))
    denied = start(servers, default=Step("status", status=401))
    router = Router(
        [
            route(down, "down", max_attempts=2),
            route(denied, "denied"),
            Route(extractive, timeout_seconds=30.0, max_attempts=1),
        ],
        llm_settings(),
        sleep=Sleeps(),
    )
    request = ChatRequest(
        messages=(Message("user", "How high is the volcano?"),),
        question="How high is the volcano?",
        context=(
            ContextBlock(1, "c1", "d1", "volcano", 1, "The volcano rises 3,350 metres high."),
            ContextBlock(2, "c2", "d2", "glacier", None, "The glacier retreats every summer."),
        ),
    )
    routed = await router.complete(request)
    streamed = router.stream(request)
    text = "".join([chunk.text async for chunk in streamed])
    await router.aclose()
    assert routed.provider == "extractive" and streamed.provider == "extractive"
    assert routed.completion.text.startswith(EXTRACTIVE_PREFIX)
    assert "3,350 metres" in routed.completion.text and "[1]" in routed.completion.text
    assert text == routed.completion.text
    assert [(a.provider, a.error_kind) for a in routed.attempts] == [
        ("down", "overloaded"),
        ("down", "overloaded"),
        ("denied", "auth"),
        ("extractive", None),
    ]
    assert router.language_models == frozenset({"down", "denied"})
    assert router.has_language_model(["extractive"]) is False
    statuses = {s.name: s for s in router.status()}
    assert statuses["extractive"].kind == "extractive" and statuses["extractive"].state == "healthy"
