"""In-process rate limiting with GCRA (a token bucket kept as one timestamp per key)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

_EPSILON = 1e-9  # float error in ``limit * interval`` must not refuse the last hit of a burst


class RateLimiter:
    """Per key: a burst of ``limit`` hits, refilled at ``limit`` per ``window`` seconds.

    Over any span of ``d`` seconds at most ``limit + d * limit / window`` hits pass, so a
    sustained attacker gets ``limit`` attempts per window.

    Memory is bounded: at most ``max_keys`` keys are tracked (least recently used dropped),
    and keys whose bucket is full again are forgotten.
    """

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("limit must be >= 1 and window > 0")
        self.limit = limit
        self.window = float(window)
        self._interval = self.window / limit
        self._tat: OrderedDict[str, float] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    def hit(self, key: str) -> int | None:
        """Count one attempt. Return None if allowed, else seconds to wait (>= 1)."""
        now = self._clock()
        tat = max(self._tat.get(key, now), now)
        new_tat = tat + self._interval
        wait = new_tat - now - self.window
        if wait > _EPSILON:
            return max(1, math.ceil(wait))
        self._tat[key] = new_tat
        self._tat.move_to_end(key)
        if len(self._tat) > self._max_keys:
            self._tat.popitem(last=False)
        return None

    def reset(self, key: str) -> None:
        self._tat.pop(key, None)

    def prune(self) -> int:
        now = self._clock()
        idle = [key for key, tat in self._tat.items() if tat <= now]
        for key in idle:
            del self._tat[key]
        return len(idle)
