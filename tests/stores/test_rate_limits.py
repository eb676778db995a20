"""The GCRA rule every rate-limit store keeps (``stores/rate_limits.py``): properties over
arbitrary request timings. That the SQL store makes exactly these decisions is checked in
``tests/auth/test_ratelimit.py`` (model against store) and ``tests/contracts``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragd.stores.rate_limits import Rate, Verdict, admit, retry_after

rates = st.builds(
    Rate,
    limit=st.integers(min_value=1, max_value=20),
    window=st.floats(min_value=1.0, max_value=600.0),
)


def _run(rate: Rate, times: list[float]) -> tuple[list[float], list[float]]:
    """Hits at ``times``: the admitted ones, and each refusal's wait."""
    tat: float | None = None
    allowed, waits = [], []
    for now in times:
        pushed = admit(tat, now, rate)
        if pushed is None:
            assert tat is not None
            waits.append(retry_after(tat, now, rate))
        else:
            tat = pushed
            allowed.append(now)
    return allowed, waits


def _times(gaps: list[float]) -> list[float]:
    now, times = 1_800_000_000.0, []
    for gap in gaps:
        now += gap
        times.append(now)
    return times


@settings(max_examples=200, deadline=None)
@given(rate=rates, gaps=st.lists(st.floats(min_value=0.0, max_value=30.0), min_size=1,
                                max_size=200))
def test_burst_plus_refill_bounds_every_span(rate: Rate, gaps: list[float]) -> None:
    allowed, waits = _run(rate, _times(gaps))
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            span = allowed[j] - start
            assert j - i + 1 <= rate.limit + span / rate.interval + 1e-6
    assert all(wait > 0 for wait in waits)


@given(limit=st.integers(min_value=1, max_value=50))
def test_a_burst_of_exactly_limit_is_allowed_then_refused(limit: int) -> None:
    rate = Rate(limit, 60)
    allowed, waits = _run(rate, [1000.0] * (limit + 1))
    assert len(allowed) == limit
    assert len(waits) == 1 and 0 < waits[0] <= 60


@given(rate=rates, burst=st.integers(min_value=0, max_value=40))
def test_retry_after_is_honest(rate: Rate, burst: int) -> None:
    """A refused bucket admits a hit exactly ``retry_after`` later, not before."""
    now = 1000.0
    tat: float | None = None
    for _ in range(rate.limit + burst):
        tat = admit(tat, now, rate) or tat
    assert tat is not None and admit(tat, now, rate) is None
    wait = retry_after(tat, now, rate)
    assert admit(tat, now + wait, rate) is not None
    assert wait < 1e-6 or admit(tat, now + wait * 0.99 - 1e-6, rate) is None


def test_a_bucket_full_again_equals_a_new_one() -> None:
    rate = Rate(3, 30)
    tat = admit(None, 1000.0, rate)
    assert tat == 1010.0
    assert admit(tat, 2000.0, rate) == admit(None, 2000.0, rate)


def test_earlier_hits_are_told_apart_from_a_first_one() -> None:
    rate = Rate(3, 30)
    first = Verdict(now=1000.0, tats=(1010.0,), retry_after=None)
    second = Verdict(now=1000.0, tats=(1020.0,), retry_after=None)
    assert not first.had_earlier_hits(0, rate) and second.had_earlier_hits(0, rate)
    assert first.admitted and not Verdict(1000.0, (), 5.0).admitted


@pytest.mark.parametrize(("limit", "window"), [(0, 10), (1, 0), (1, -1), (1, float("nan"))])
def test_a_rate_must_admit_something(limit: int, window: float) -> None:
    with pytest.raises(ValueError, match="limit"):
        Rate(limit, window)
