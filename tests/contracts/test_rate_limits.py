"""The rate-limit store's contract (:class:`~ragd.stores.rate_limits.RateLimits`), run
against every backend: GCRA buckets (a burst of ``limit``, refilled at ``limit`` per
``window``; a refusal leaves its bucket as it was), several buckets per attempt with the
first refusal stopping the rest, reset and pruning, the database's own clock, and hits
from two processes on one bucket counted as one bucket (never more than ``limit``).

Time is a number the tests pass (``now``), never waited for."""

from __future__ import annotations

import asyncio
import time

import pytest

from ragd.stores.rate_limits import MAX_KEY_CHARS, Hit, Rate, RateLimits
from tests.contracts.site import Site

T0 = 1_800_000_000.0
THREE_PER_MINUTE = Rate(3, 60)


@pytest.fixture
def limits(site: Site) -> RateLimits:
    return site.rate_limits()


def _hit(key: str, rate: Rate = THREE_PER_MINUTE) -> list[Hit]:
    return [Hit(key, rate)]


async def test_a_burst_of_limit_then_refusals_that_move_nothing(limits: RateLimits) -> None:
    for n in range(3):
        verdict = await limits.hit(_hit("k"), now=T0)
        assert verdict.admitted and verdict.tats == (T0 + 20 * (n + 1),)
    for _ in range(5):  # refused hits must not push the bucket further
        refused = await limits.hit(_hit("k"), now=T0)
        assert not refused.admitted and refused.tats == ()
        assert refused.retry_after == pytest.approx(20.0)
    assert not (await limits.hit(_hit("k"), now=T0 + 19.9)).admitted
    assert (await limits.hit(_hit("k"), now=T0 + 20.0)).admitted
    assert not (await limits.hit(_hit("k"), now=T0 + 20.0)).admitted


async def test_a_bucket_refills_at_its_rate(limits: RateLimits) -> None:
    for _ in range(3):
        await limits.hit(_hit("k"), now=T0)
    later = await limits.hit(_hit("k"), now=T0 + 60)  # a full window: the bucket is full
    assert later.admitted and not later.had_earlier_hits(0, THREE_PER_MINUTE)
    assert (await limits.hit(_hit("k"), now=T0 + 60)).had_earlier_hits(0, THREE_PER_MINUTE)


async def test_keys_are_independent(limits: RateLimits) -> None:
    for _ in range(3):
        await limits.hit(_hit("a"), now=T0)
    assert not (await limits.hit(_hit("a"), now=T0)).admitted
    assert (await limits.hit(_hit("b"), now=T0)).admitted


async def test_the_first_refusal_stops_the_later_buckets(limits: RateLimits) -> None:
    one = Rate(1, 60)
    assert (await limits.hit([Hit("outer", one), Hit("inner", one)], now=T0)).admitted
    refused = await limits.hit([Hit("fresh", one), Hit("inner", one), Hit("last", one)],
                               now=T0)
    # "fresh" admitted (charged), "inner" refused, "last" never reached.
    assert not refused.admitted and len(refused.tats) == 1
    assert refused.retry_after == pytest.approx(60.0)
    assert (await limits.hit([Hit("last", one)], now=T0)).admitted
    assert not (await limits.hit([Hit("fresh", one)], now=T0)).admitted


async def test_reset_and_prune_forget_buckets(limits: RateLimits) -> None:
    for _ in range(3):
        await limits.hit(_hit("busy"), now=T0)
    await limits.hit(_hit("idle"), now=T0 - 3600)
    await limits.reset("busy")
    assert (await limits.hit(_hit("busy"), now=T0)).tats == (T0 + 20,)
    await limits.reset("never seen")
    assert await limits.prune(now=T0) == 1  # only "idle" is full again
    assert await limits.prune(now=T0 + 20) == 1
    assert await limits.prune(now=T0 + 20) == 0


async def test_the_database_clock_is_the_default(limits: RateLimits) -> None:
    before = time.time()
    verdict = await limits.hit(_hit("k"))
    after = time.time()
    # The database server runs on this machine in the tests: its clock is this one.
    assert before - 5 <= verdict.now <= after + 5
    assert verdict.tats == (pytest.approx(verdict.now + 20, abs=1e-3),)
    assert await limits.prune() == 0


async def test_any_key_up_to_the_limit_is_kept_and_longer_ones_are_refused(
    limits: RateLimits,
) -> None:
    key = "ü\u202e'; DROP TABLE rate_limits; --" + "x" * (MAX_KEY_CHARS - 40)
    assert len(key) == MAX_KEY_CHARS - 9
    long_key = "é" * MAX_KEY_CHARS
    for k in (key, long_key):
        assert (await limits.hit(_hit(k), now=T0)).admitted
        assert (await limits.hit(_hit(k), now=T0)).had_earlier_hits(0, THREE_PER_MINUTE)
    for bad in ("", "x" * (MAX_KEY_CHARS + 1)):
        with pytest.raises(ValueError, match="rate-limit key"):
            await limits.hit(_hit(bad), now=T0)


async def test_two_processes_hitting_one_bucket_share_its_limit(site: Site) -> None:
    processes = [site.rate_limits(), site.another_process().rate_limits()]
    rate = Rate(5, 3600)
    verdicts = await asyncio.gather(*[
        processes[n % 2].hit([Hit("shared", rate), Hit(f"account-{n % 3}", Rate(100, 60))],
                             now=T0)
        for n in range(24)
    ])
    assert sum(v.admitted for v in verdicts) == 5
    # Refused by the first bucket: the second was never charged.
    assert all(len(v.tats) == (2 if v.admitted else 0) for v in verdicts)
