"""GCRA rate limiter: properties over arbitrary request timings (injected clock)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ragd.auth.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(min_value=1, max_value=20),
    window=st.floats(min_value=1.0, max_value=600.0),
    gaps=st.lists(st.floats(min_value=0.0, max_value=30.0), min_size=1, max_size=200),
)
def test_burst_plus_refill_bounds_every_span(limit: int, window: float, gaps: list[float]) -> None:
    clock = Clock()
    limiter = RateLimiter(limit, window, clock=clock)
    allowed: list[float] = []
    for gap in gaps:
        clock.now += gap
        wait = limiter.hit("k")
        if wait is None:
            allowed.append(clock.now)
        else:
            assert wait >= 1
    interval = window / limit
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            span = allowed[j] - start
            assert j - i + 1 <= limit + span / interval + 1e-6


@given(limit=st.integers(min_value=1, max_value=50))
def test_a_burst_of_exactly_limit_is_allowed_then_refused(limit: int) -> None:
    clock = Clock()
    limiter = RateLimiter(limit, 60, clock=clock)
    assert all(limiter.hit("k") is None for _ in range(limit))
    wait = limiter.hit("k")
    assert wait is not None and 1 <= wait <= 60


def test_retry_after_is_honest() -> None:
    clock = Clock()
    limiter = RateLimiter(3, 30, clock=clock)
    for _ in range(3):
        assert limiter.hit("k") is None
    wait = limiter.hit("k")
    assert wait is not None
    clock.now += wait
    assert limiter.hit("k") is None


def test_keys_are_independent_and_reset_clears() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 60, clock=clock)
    assert limiter.hit("a") is None
    assert limiter.hit("a") is not None
    assert limiter.hit("b") is None
    limiter.reset("a")
    assert limiter.hit("a") is None


def test_memory_is_bounded_and_prune_forgets_idle_keys() -> None:
    clock = Clock()
    limiter = RateLimiter(5, 10, clock=clock, max_keys=100)
    for i in range(1000):
        limiter.hit(f"ip-{i}")
    assert len(limiter._tat) == 100
    clock.now += 11
    assert limiter.prune() == 100
    assert len(limiter._tat) == 0
