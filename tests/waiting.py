"""Waiting for a condition instead of sleeping for a guess.

A fixed sleep is either longer than needed or, on a loaded machine, too short. These helpers
wait for the thing itself: they poll a predicate, or wait on an event, until it holds. The
one time limit, :data:`HANG_TIMEOUT`, only turns a hang into a clear failure; it is never a
speed bar, so a slow machine just waits longer.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = [
    "HANG_TIMEOUT", "eventually", "eventually_sync", "settle", "thread_event", "wait_event",
]

T = TypeVar("T")

#: How long anything may take before the test calls it a hang.
HANG_TIMEOUT = 60.0
#: How often a predicate is polled (a wait, so the value only trades CPU for latency).
POLL_SECONDS = 0.01


def _describe(predicate: Callable[..., object], what: str | None) -> str:
    return what or getattr(predicate, "__qualname__", repr(predicate))


async def eventually(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = HANG_TIMEOUT,  # noqa: ASYNC109 - a polling deadline, not a cancel scope
    interval: float = POLL_SECONDS,
    what: str | None = None,
) -> T:
    """Poll ``predicate`` (sync or async) until it returns something truthy; return that.

    The deadline is wall time (``time.monotonic``), so a test that moves the event loop's
    clock does not move it.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{_describe(predicate, what)}: not true after {timeout:g} s")
        await asyncio.sleep(interval)


def eventually_sync(
    predicate: Callable[[], T],
    *,
    timeout: float = HANG_TIMEOUT,
    interval: float = POLL_SECONDS,
    what: str | None = None,
) -> T:
    """:func:`eventually` for code that is not on an event loop (threads, process tests)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{_describe(predicate, what)}: not true after {timeout:g} s")
        time.sleep(interval)


def wait_event(event: threading.Event, what: str, *, timeout: float = HANG_TIMEOUT) -> None:
    """Block (in a worker thread) until ``event`` is set; a hang is an AssertionError."""
    if not event.wait(timeout):
        raise AssertionError(f"{what}: not set after {timeout:g} s")


async def thread_event(
    event: threading.Event,
    what: str,
    *,
    timeout: float = HANG_TIMEOUT,  # noqa: ASYNC109 - a hang guard, not a cancel scope
) -> None:
    """Wait on the event loop, without blocking it, until a thread sets ``event``."""
    if not await asyncio.to_thread(event.wait, timeout):
        raise AssertionError(f"{what}: not set after {timeout:g} s")


async def settle(turns: int = 20) -> None:
    """Let the tasks that are ready take ``turns`` turns of the event loop.

    For asserting that something did *not* happen: work that is on the loop and needs no I/O
    (a task that skips a wait it should honour, a request that slips past a lock) runs within
    a few turns. This yields to the loop; it does not wait for time to pass.
    """
    for _ in range(turns):
        await asyncio.sleep(0)
