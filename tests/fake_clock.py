"""A clock that moves only when a test moves it: inject it wherever code takes a ``clock``
(monotonic seconds) or a ``wall_clock`` (seconds since the epoch)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FakeClock"]


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
