"""Rate limits shared by every process: the contract, and the pure GCRA rule it keeps.

GCRA (the generic cell rate algorithm) is a token bucket kept as one number per key, the
bucket's *theoretical arrival time* (``tat``, seconds since the epoch): each admitted hit
pushes it ``interval = window / limit`` further, never from earlier than now; a hit is
refused when it would push it more than ``window`` ahead of now. So a key gets a burst of
``limit`` hits, refilled at ``limit`` per ``window`` seconds, and over any span of ``d``
seconds at most ``limit + d * limit / window`` hits pass. A bucket whose ``tat`` is in the
past is full again: it equals a missing one, so it can be forgotten.

One number per key is what makes the state shareable: it lives in the database
(``rate_limits``), and every replica and worker process counts against the same buckets
with one atomic statement per hit, so N processes do not give N times the attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["EPSILON", "MAX_KEY_CHARS", "Hit", "Rate", "RateLimits", "Verdict", "admit",
           "retry_after"]

#: Float error must not refuse the last hit of a burst: a time in seconds since the epoch
#: (~1.8e9) resolves to about 0.24 microseconds, and a decision adds and subtracts a few.
EPSILON = 1e-6
#: The longest key a store keeps (``rate_limits.key``).
MAX_KEY_CHARS = 400


@dataclass(frozen=True, slots=True)
class Rate:
    """A burst of ``limit`` hits, refilled at ``limit`` per ``window`` seconds."""

    limit: int
    window: float

    def __post_init__(self) -> None:
        if self.limit < 1 or not self.window > 0:
            raise ValueError("limit must be >= 1 and window > 0")

    @property
    def interval(self) -> float:
        """How far one hit pushes the bucket's arrival time."""
        return self.window / self.limit


def admit(tat: float | None, now: float, rate: Rate) -> float | None:
    """The bucket's new arrival time if one more hit at ``now`` is admitted, else None (the
    bucket is then left as it was). ``tat`` None is a new (full) bucket."""
    pushed = max(now if tat is None else tat, now) + rate.interval
    return pushed if pushed - now <= rate.window + EPSILON else None


def retry_after(tat: float, now: float, rate: Rate) -> float:
    """Seconds until a bucket at ``tat`` admits a hit again (0 when it would now)."""
    return max(0.0, tat + rate.interval - now - rate.window)


@dataclass(frozen=True, slots=True)
class Hit:
    """One attempt to count against the bucket ``key`` at ``rate``."""

    key: str
    rate: Rate


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of counting one attempt against several buckets, in order.

    ``tats`` holds the new arrival time of each bucket that admitted it (all of them when
    ``retry_after`` is None); otherwise the next bucket refused it, and ``retry_after`` says
    in how many seconds it would admit one.
    """

    now: float
    tats: tuple[float, ...]
    retry_after: float | None

    @property
    def admitted(self) -> bool:
        return self.retry_after is None

    def had_earlier_hits(self, index: int, rate: Rate) -> bool:
        """True when bucket ``index`` held hits before this one (it was not full), so that
        forgetting it (after a successful login, say) changes something."""
        return self.tats[index] - self.now > rate.interval + EPSILON


class RateLimits(Protocol):
    """GCRA buckets shared by every process of a deployment.

    ``now`` is seconds since the epoch; without it the database's clock is used, the one
    clock every process and host shares (a host whose clock is behind would otherwise see
    every bucket as fuller than it is). Keys are at most :data:`MAX_KEY_CHARS` characters
    (``ValueError`` beyond); callers hash what they key on.
    """

    async def hit(self, hits: Sequence[Hit], *, now: float | None = None) -> Verdict:
        """Count one attempt against each bucket in order, atomically per bucket (two
        processes hitting one bucket at once are counted one after the other), stopping at
        the first bucket that refuses: it is not moved, and the buckets after it are not
        charged. One transaction for all of them."""
        ...

    async def reset(self, key: str) -> None:
        """Forget a bucket (it is full again)."""
        ...

    async def prune(self, *, now: float | None = None) -> int:
        """Forget every bucket that is full again; returns how many."""
        ...
