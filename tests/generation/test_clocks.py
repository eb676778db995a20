"""The breaker and the router read time only from their injected clocks: the monotonic one
for every decision, the wall one only for the timestamps shown on the status page.

The router runs the real :class:`OpenAIProvider` against fake upstream servers on 127.0.0.1;
both clocks are fakes that move only when the test moves them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime

import pytest

from ragd.generation.base import ChatRequest, Message
from ragd.generation.breaker import CircuitBreaker
from ragd.generation.providers.openai import OpenAIProvider
from ragd.generation.router import Route, Router
from ragd.settings import LLMSettings, ProviderSettings
from tests.fake_clock import FakeClock
from tests.generation.fakes import FakeLLMServer, Step

EPOCH = 1_700_000_000.0  # 2023-11-14T22:13:20Z
REQUEST = ChatRequest(messages=(Message("user", "What is in the report?"),), question="Q?")


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def test_the_breaker_decides_on_its_clock_and_dates_on_its_wall_clock() -> None:
    clock, wall = FakeClock(100.0), FakeClock(EPOCH)
    breaker = CircuitBreaker(
        failures=2, window_seconds=60, failure_rate=1.0, min_calls=100, cooldown_seconds=30,
        clock=clock, wall_clock=wall,
    )
    breaker.record_failure()
    clock.advance(5)
    wall.advance(5)
    breaker.record_failure()
    opened = breaker.snapshot()
    assert opened.state == "open"
    assert opened.opened_at == iso(EPOCH + 5)
    assert opened.retry_in_seconds == 30

    # The wall clock jumps (an NTP step, a suspended VM): nothing is decided by it.
    wall.advance(-3600)
    clock.advance(29.5)
    assert not breaker.allow()
    assert breaker.snapshot().retry_in_seconds == pytest.approx(0.5)
    assert breaker.snapshot().opened_at == iso(EPOCH + 5)
    clock.advance(0.5)
    assert breaker.allow()  # the half-open probe
    breaker.record_success()
    closed = breaker.snapshot()
    assert closed.state == "closed" and closed.opened_at is None


@pytest.fixture
def servers() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def _route(server: FakeLLMServer, name: str) -> Route:
    provider = OpenAIProvider(ProviderSettings(
        name=name, type="openai", model="fake-model", base_url=server.base_url,
        timeout_seconds=5.0, max_attempts=1,
    ))
    return Route(provider=provider, timeout_seconds=5.0, max_attempts=1)


async def test_the_router_dates_successes_errors_and_openings_on_its_wall_clock(
    servers: ExitStack,
) -> None:
    failing = servers.enter_context(
        FakeLLMServer("openai", (), default=Step("status", status=500))
    )
    healthy = servers.enter_context(FakeLLMServer("openai", ()))
    clock, wall = FakeClock(100.0), FakeClock(EPOCH)
    router = Router(
        [_route(failing, "failing"), _route(healthy, "healthy")],
        LLMSettings(breaker_failures=1, breaker_cooldown_seconds=30.0),
        clock=clock, wall_clock=wall,
    )
    try:
        routed = await router.complete(REQUEST)
        assert routed.provider == "healthy"
        wall.advance(60)
        await router.complete(REQUEST)  # "failing" is skipped: its breaker is open
    finally:
        await router.aclose()

    status = {s.name: s for s in router.status()}
    assert status["failing"].last_error is not None
    assert status["failing"].last_error.at == iso(EPOCH)
    assert status["failing"].breaker.state == "open"
    assert status["failing"].breaker.opened_at == iso(EPOCH)
    assert status["failing"].breaker.retry_in_seconds == 30.0  # the monotonic clock stood
    assert status["healthy"].last_success_at == iso(EPOCH + 60)
    assert len(failing.requests) == 1
