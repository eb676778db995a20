"""An event loop clock that a test moves forward, for code that waits on ``loop.time()``.

Timeouts (``asyncio.timeout``), ``call_later`` timers, micro-batch windows and per-gap stream
deadlines all run on the loop's clock. Rather than sleeping until they are due, a test
advances the clock: every timer due by then fires at the loop's next turn, while the real
time a step takes (on any machine, under any load) stays far below the limits under test.
"""

from __future__ import annotations

import asyncio
import threading

__all__ = ["LoopClock"]


def _nothing() -> None:
    return None


class LoopClock:
    """``time()`` is the loop's real clock plus an offset that :meth:`advance` grows.

    Install it with ``monkeypatch.setattr(loop, "time", clock.time)`` (the ``loop_clock``
    fixture does). The clock only moves forward, as a monotonic clock must; ``advance`` may be
    called from any thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._real = loop.time
        self._offset = 0.0
        self._lock = threading.Lock()

    def time(self) -> float:
        return self._real() + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock only moves forward")
        with self._lock:
            self._offset += seconds
        # A loop asleep in select() computed its timeout from the old time: wake it up.
        self._loop.call_soon_threadsafe(_nothing)
