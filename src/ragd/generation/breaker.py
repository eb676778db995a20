"""A small circuit breaker for one LLM provider.

Why our own rather than ``purgatory`` or ``aiobreaker``: the router needs

* injectable clocks (monotonic for every decision, wall only for the ``opened_at`` it
  shows), so cooldowns and status pages are tested without sleeping;
* failure classification by :class:`~ragd.generation.base.ProviderError` kind, decided by the
  caller (a 401 or a cancelled call must neither count nor leave a half-open probe slot
  taken, hence :meth:`CircuitBreaker.release`);
* two opening rules: ``failures`` consecutive failures, or a failure *rate* over a sliding
  time window once ``min_calls`` calls were seen in it;
* exactly one half-open probe at a time, with concurrent callers refused meanwhile;
* its state as plain data for ``/performance/llm-providers``.

Those libraries give some of that (each behind its own storage or decorator abstractions and
with exception-type based classification), not all of it cleanly; the whole thing is ~150 lines.

The breaker is not thread-safe: it is used from one event loop and none of its methods await.

States:

``closed``
    Calls pass. Each result is recorded; a failure streak of ``failures``, or a failure share
    ``>= failure_rate`` among ``>= min_calls`` calls in the last ``window_seconds``, opens it.
``open``
    :meth:`~CircuitBreaker.allow` returns False until ``cooldown_seconds`` have passed since
    it opened (:attr:`~CircuitBreaker.retry_at`).
``half_open``
    The first :meth:`~CircuitBreaker.allow` after the cooldown turns the breaker half-open and
    lets that one probe through; everyone else is refused while the probe is out. Its success
    closes the breaker (counters reset); its failure re-opens it with a fresh cooldown;
    :meth:`~CircuitBreaker.release` frees the slot for the next caller.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

__all__ = ["BreakerSnapshot", "BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """The breaker as shown on status pages.

    ``opened_at`` is wall-clock ISO 8601 (UTC); ``retry_in_seconds`` is how long until the
    next call may probe (0 when the cooldown is over, None unless open).
    """

    state: BreakerState
    consecutive_failures: int
    window_calls: int
    window_failures: int
    times_opened: int
    opened_at: str | None
    retry_in_seconds: float | None


class CircuitBreaker:
    """Closed / open / half-open breaker with a consecutive-failure and a rate rule.

    The caller asks :meth:`allow` before each call and reports its outcome with exactly one
    of :meth:`record_success`, :meth:`record_failure` (the failure says something about the
    provider's health) or :meth:`release` (it does not: a client error, a cancelled call).
    """

    def __init__(
        self,
        *,
        failures: int,
        window_seconds: float,
        failure_rate: float,
        min_calls: int,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` (monotonic seconds) drives windows and cooldowns; ``wall_clock``
        (seconds since the epoch) only dates the last opening for :meth:`snapshot`."""
        if failures < 1 or min_calls < 1:
            raise ValueError("failures and min_calls must be at least 1")
        if window_seconds <= 0 or cooldown_seconds <= 0:
            raise ValueError("window_seconds and cooldown_seconds must be positive")
        if not 0 < failure_rate <= 1:
            raise ValueError("failure_rate must be in (0, 1]")
        self._failures = failures
        self._window = window_seconds
        self._rate = failure_rate
        self._min_calls = min_calls
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._state: BreakerState = "closed"
        self._streak = 0
        self._events: deque[tuple[float, bool]] = deque()  # (at, failed), closed state only
        self._opened_at: float | None = None
        self._opened_wall: float | None = None
        self._probe_out = False
        self._times_opened = 0

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose cooldown is over stays ``open`` until the
        next :meth:`allow` turns it half-open."""
        return self._state

    @property
    def opened_at(self) -> float | None:
        """When (on the breaker's clock) it last opened; None while closed."""
        return self._opened_at if self._state != "closed" else None

    @property
    def retry_at(self) -> float | None:
        """When (on the breaker's clock) an open breaker lets a probe through; else None."""
        if self._state != "open" or self._opened_at is None:
            return None
        return self._opened_at + self._cooldown

    def allow(self) -> bool:
        """Whether a call may go ahead now. True in half-open means *you* are the probe: report
        its outcome (or :meth:`release`) so the slot is freed."""
        if self._state == "closed":
            return True
        if self._state == "open":
            retry_at = self.retry_at
            if retry_at is None or self._clock() < retry_at:
                return False
            self._state = "half_open"
            self._probe_out = False
        if self._probe_out:
            return False
        self._probe_out = True
        return True

    def record_success(self) -> None:
        """A call succeeded. Closes a half-open breaker; a late result while open is ignored."""
        if self._state == "half_open":
            self._close()
        elif self._state == "closed":
            self._streak = 0
            self._record(failed=False)

    def record_failure(self) -> None:
        """A call failed in a way that counts against the provider's health."""
        if self._state == "half_open":
            self._open()
        elif self._state == "closed":
            self._streak += 1
            self._record(failed=True)
            if self._streak >= self._failures or self._rate_exceeded():
                self._open()
        # open: a call let through before it opened finished late; it changes nothing.

    def release(self) -> None:
        """A call ended without saying anything about health (client error, cancelled):
        frees a half-open probe slot without counting the call."""
        if self._state == "half_open":
            self._probe_out = False

    def reset(self) -> None:
        """Close the breaker now, counters cleared (a call made in spite of it succeeded)."""
        self._close()

    def snapshot(self) -> BreakerSnapshot:
        """The state and counters as plain data."""
        self._prune()
        retry_at = self.retry_at
        retry_in = None if retry_at is None else max(0.0, retry_at - self._clock())
        opened = self._opened_wall if self._state != "closed" else None
        return BreakerSnapshot(
            state=self._state,
            consecutive_failures=self._streak,
            window_calls=len(self._events),
            window_failures=sum(1 for _, failed in self._events if failed),
            times_opened=self._times_opened,
            opened_at=None if opened is None else datetime.fromtimestamp(opened, UTC).isoformat(),
            retry_in_seconds=retry_in,
        )

    def _record(self, *, failed: bool) -> None:
        self._events.append((self._clock(), failed))
        self._prune()

    def _prune(self) -> None:
        horizon = self._clock() - self._window
        while self._events and self._events[0][0] <= horizon:
            self._events.popleft()

    def _rate_exceeded(self) -> bool:
        calls = len(self._events)
        if calls < self._min_calls:
            return False
        failed = sum(1 for _, f in self._events if f)
        return failed / calls >= self._rate

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._opened_wall = self._wall_clock()
        self._probe_out = False
        self._times_opened += 1

    def _close(self) -> None:
        self._state = "closed"
        self._opened_at = None
        self._opened_wall = None
        self._probe_out = False
        self._streak = 0
        self._events.clear()
