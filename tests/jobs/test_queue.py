"""The queue's pure retry rule. Its behaviour (leases, fencing, backoff, release, cancel,
retry, tenants, claims racing across processes) is the job queue contract, run against every
backend in ``tests/contracts/test_queue.py``."""

from __future__ import annotations

from ragd.jobs import backoff_delay


def test_backoff_is_capped_exponential() -> None:
    assert [backoff_delay(n).total_seconds() for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert backoff_delay(8).total_seconds() == 256
    assert backoff_delay(9).total_seconds() == 300
    assert backoff_delay(10_000).total_seconds() == 300
