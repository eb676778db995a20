"""The one percentile (linear interpolation between the closest ranks): exact values on small
inputs, and properties over arbitrary ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragd.ops.percentile import percentile

# Latencies, sizes and scores: finite and far from overflow (a difference of two values must
# stay finite for any interpolation to be meaningful).
values_strategy = st.lists(
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False),
    min_size=1, max_size=60,
)
q_strategy = st.floats(min_value=0, max_value=100, allow_nan=False)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([7.0], 0, 7.0),
        ([7.0], 95, 7.0),
        ([7.0], 100, 7.0),
        ([1, 2, 3], 0, 1.0),
        ([1, 2, 3], 50, 2.0),
        ([1, 2, 3], 100, 3.0),
        ([4, 1, 3, 2], 50, 2.5),  # unsorted input; the median of an even count
        ([1, 2, 3, 4], 25, 1.75),
        ([10, 20], 95, 19.5),
        ([0, 10, 20, 30, 40], 90, 36.0),
        (range(1, 21), 95, 19.05),
        (range(1, 101), 50, 50.5),
        ([5, 5, 5, 5], 37.5, 5.0),
    ],
)
def test_known_small_inputs(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected, rel=1e-12)


def test_no_values_or_q_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    for q in (-1, 100.5):
        with pytest.raises(ValueError, match="within"):
            percentile([1.0], q)


@given(values_strategy, q_strategy, q_strategy)
def test_monotone_in_q(values: list[float], q1: float, q2: float) -> None:
    low, high = sorted((q1, q2))
    assert percentile(values, low) <= percentile(values, high)


@given(values_strategy, q_strategy)
def test_within_min_and_max(values: list[float], q: float) -> None:
    assert min(values) <= percentile(values, q) <= max(values)


@given(values_strategy)
def test_the_ends_are_the_extremes(values: list[float]) -> None:
    assert percentile(values, 0) == min(values)
    assert percentile(values, 100) == max(values)


@given(values_strategy, q_strategy)
def test_order_of_the_values_does_not_matter(values: list[float], q: float) -> None:
    assert percentile(values, q) == percentile(list(reversed(values)), q)


@given(values_strategy, q_strategy)
def test_agrees_with_numpy(values: list[float], q: float) -> None:
    expected = float(np.percentile(np.asarray(values, dtype=np.float64), q))
    assert percentile(values, q) == pytest.approx(expected, rel=1e-9, abs=1e-6)
