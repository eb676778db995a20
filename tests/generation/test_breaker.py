"""The circuit breaker, driven by a fake clock (no waiting)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragd.generation.breaker import CircuitBreaker
from tests.fake_clock import FakeClock


def make(clock: FakeClock, **overrides: float) -> CircuitBreaker:
    values: dict[str, float] = {
        "failures": 3,
        "window_seconds": 60.0,
        "failure_rate": 0.5,
        "min_calls": 10,
        "cooldown_seconds": 30.0,
    }
    values.update(overrides)
    return CircuitBreaker(
        failures=int(values["failures"]),
        window_seconds=values["window_seconds"],
        failure_rate=values["failure_rate"],
        min_calls=int(values["min_calls"]),
        cooldown_seconds=values["cooldown_seconds"],
        clock=clock,
    )


def open_it(breaker: CircuitBreaker, times: int = 3) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_failure()


def test_starts_closed_and_allows() -> None:
    breaker = make(FakeClock())
    assert breaker.state == "closed"
    assert breaker.allow()
    assert breaker.opened_at is None and breaker.retry_at is None
    snap = breaker.snapshot()
    assert snap.state == "closed" and snap.times_opened == 0 and snap.retry_in_seconds is None


def test_consecutive_failures_open_it() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_it(breaker, 2)
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.opened_at == clock.now
    assert breaker.retry_at == clock.now + 30.0
    assert not breaker.allow()


def test_a_success_resets_the_streak() -> None:
    breaker = make(FakeClock(), min_calls=1000)  # the rate rule out of the way
    for _ in range(5):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.snapshot().consecutive_failures == 0


def test_failure_rate_in_window_opens_it() -> None:
    clock = FakeClock()
    breaker = make(clock, failures=100, min_calls=10, failure_rate=0.5)
    # alternate: never 2 failures in a row, but half of all calls fail
    for i in range(9):
        if i % 2:
            breaker.record_failure()
        else:
            breaker.record_success()
        clock.advance(1)
    assert breaker.state == "closed"  # 9 calls < min_calls
    breaker.record_failure()  # 10 calls, 5 failed
    assert breaker.state == "open"


def test_rate_rule_forgets_calls_outside_the_window() -> None:
    clock = FakeClock()
    breaker = make(clock, failures=100, min_calls=4, failure_rate=0.5, window_seconds=10.0)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(11)  # both failures fall out of the window
    breaker.record_success()
    breaker.record_success()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"  # 1 of 4 in the window
    snap = breaker.snapshot()
    assert (snap.window_calls, snap.window_failures) == (4, 1)


def test_below_the_rate_stays_closed() -> None:
    breaker = make(FakeClock(), failures=100, min_calls=10, failure_rate=0.5)
    for _ in range(6):
        breaker.record_success()
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state == "closed"


def test_cooldown_then_exactly_one_probe() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_it(breaker)
    clock.advance(29.9)
    assert not breaker.allow()
    assert breaker.state == "open"
    assert breaker.snapshot().retry_in_seconds == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.allow()  # the probe
    assert breaker.state == "half_open"
    assert not breaker.allow()  # concurrent callers are refused while it is out
    assert not breaker.allow()
    assert breaker.retry_at is None


def test_probe_success_closes_and_resets() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_it(breaker)
    clock.advance(30)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.opened_at is None
    snap = breaker.snapshot()
    assert (snap.consecutive_failures, snap.window_calls, snap.times_opened) == (0, 0, 1)
    assert breaker.allow() and breaker.allow()
    # counters were reset: it takes the full streak again to open it
    open_it(breaker, 2)
    assert breaker.state == "closed"


def test_probe_failure_reopens_with_a_fresh_cooldown() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_it(breaker)
    clock.advance(45)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.opened_at == clock.now
    assert breaker.retry_at == clock.now + 30
    clock.advance(29)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()
    assert breaker.snapshot().times_opened == 2


def test_release_frees_the_probe_slot_without_counting() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_it(breaker)
    clock.advance(30)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release()  # e.g. the probe got a 401 or was cancelled
    assert breaker.state == "half_open"
    assert breaker.allow()  # the next caller becomes the probe
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"


def test_release_while_closed_counts_nothing() -> None:
    breaker = make(FakeClock())
    for _ in range(10):
        assert breaker.allow()
        breaker.release()
    snap = breaker.snapshot()
    assert breaker.state == "closed" and snap.window_calls == 0


def test_late_results_while_open_change_nothing() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_it(breaker)
    opened = breaker.opened_at
    clock.advance(5)
    breaker.record_success()  # a call let through before it opened
    breaker.record_failure()
    assert breaker.state == "open"
    assert breaker.opened_at == opened


def test_snapshot_of_an_open_breaker() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_it(breaker)
    clock.advance(10)
    snap = breaker.snapshot()
    assert snap.state == "open"
    assert snap.consecutive_failures == 3
    assert snap.retry_in_seconds == pytest.approx(20.0)
    assert snap.opened_at is not None and snap.opened_at.endswith("+00:00")


@pytest.mark.parametrize(
    "overrides",
    [{"failures": 0}, {"min_calls": 0}, {"failure_rate": 0.0}, {"failure_rate": 1.5},
     {"cooldown_seconds": 0.0}, {"window_seconds": -1.0}],
)
def test_invalid_parameters(overrides: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        make(FakeClock(), **overrides)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["allow", "ok", "fail", "release", "tick"]), max_size=80))
def test_never_more_than_one_probe_out(ops: list[str]) -> None:
    """Whatever happens, a half-open breaker has at most one call in flight that it allowed
    while half-open, and an open breaker within its cooldown allows nothing."""
    clock = FakeClock()
    breaker = make(clock, failures=2, cooldown_seconds=5.0)
    probes_out = 0
    for op in ops:
        if op == "tick":
            clock.advance(2.0)
        elif op == "allow":
            before = breaker.state
            retry_at = breaker.retry_at
            allowed = breaker.allow()
            if before == "open" and retry_at is not None and clock.now < retry_at:
                assert not allowed
            if allowed and breaker.state == "half_open":
                probes_out += 1
            assert probes_out <= 1
        elif breaker.state == "half_open" and probes_out:
            probes_out -= 1
            {"ok": breaker.record_success, "fail": breaker.record_failure,
             "release": breaker.release}[op]()
        elif breaker.state != "half_open":
            probes_out = 0
            {"ok": breaker.record_success, "fail": breaker.record_failure,
             "release": breaker.release}[op]()


def test_reset_closes_an_open_breaker() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_it(breaker)
    breaker.reset()  # e.g. the fallback was called in spite of it and answered
    assert breaker.state == "closed" and breaker.opened_at is None
    assert breaker.snapshot().consecutive_failures == 0
    assert breaker.allow()
