"""The one percentile of ragd: latency figures on the status pages, evaluation reports and
benchmarks all use :func:`percentile`, so a p95 means the same thing everywhere.

The convention is **linear interpolation between the two closest ranks** (Hyndman and Fan's
type 7, the default of ``numpy.percentile`` and of spreadsheets' ``PERCENTILE.INC``): the
``q``-th percentile of ``n`` sorted values sits at position ``(n - 1) * q / 100``. It was
chosen over nearest-rank because it is what the benchmarks, the evaluation harness and anyone
checking a figure with numpy already used, and it moves smoothly as samples are added rather
than jumping from one observed value to the next.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["percentile"]


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (``0 <= q <= 100``) of ``values`` by linear interpolation
    between the two closest ranks, equal to ``numpy.percentile(values, q)``.

    ``q = 0`` is the minimum, ``q = 100`` the maximum and ``q = 50`` the median. Raises
    ``ValueError`` for no values or ``q`` outside ``[0, 100]``.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    ordered = sorted(values)
    if not ordered:
        raise ValueError("cannot take a percentile of no values")
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    below, above = float(ordered[low]), float(ordered[high])
    # numpy's two-sided lerp: interpolate from the nearer neighbour, so the result is exact
    # at the ends and never overshoots either neighbour through rounding.
    if fraction >= 0.5:
        return above - (above - below) * (1 - fraction)
    return below + (above - below) * fraction
