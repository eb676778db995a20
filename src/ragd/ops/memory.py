"""The memory manager: watch the process's memory and give memory back when it grows.

Memory is bounded by design first (models load lazily and unload when idle, caches are
bounded in bytes); this manager is the safety net and the source of the figures behind
``/performance/memory``. Every ``monitor_interval_seconds`` it samples RSS, VMS and the share
of system memory, and compares RSS with two thresholds:

* ``rss < soft``: status ``ok``, nothing to do.
* ``soft <= rss < emergency``: status ``degraded``; a **soft** cleanup runs: caches are
  cleared, models idle for ``soft_idle_seconds`` (or their TTL, if shorter) are unloaded, and
  the registered cleanup callbacks run with ``"soft"``, then one ``gc.collect()`` and
  ``malloc_trim(0)`` if any of that freed something. Models in use, and models whose TTL is 0
  ("never unload"), are kept.
* ``rss >= emergency``: status ``critical``; an **emergency** cleanup runs: every model is
  unloaded (after its in-flight calls finish), every cache is cleared, the callbacks run with
  ``"emergency"``, then three rounds of ``gc.collect()`` and ``malloc_trim(0)``.

Each cleanup measures RSS before and after and is recorded as a :class:`CleanupEvent` in a
ring buffer (the latest 100). Every ``cache_cleanup_interval_seconds``, whatever the RSS,
expired cache entries are swept and models idle beyond their TTL are unloaded.

Models are reached through the small :class:`ModelCache` Protocol, which the model registry
implements: ``ragd.models`` builds on this module, so this module never imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import functools
import gc
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import psutil

from ragd.ops.cache import ByteLRUCache
from ragd.settings import MemorySettings

__all__ = [
    "CleanupAction",
    "CleanupCallback",
    "CleanupEvent",
    "CleanupLevel",
    "MemoryLevel",
    "MemoryManager",
    "MemorySample",
    "MemoryStatus",
    "ModelCache",
    "ModelFigures",
    "UnloadedModel",
    "malloc_trim",
    "process_rss",
    "read_process_memory",
    "release_memory",
]

logger = logging.getLogger(__name__)

CleanupLevel = Literal["soft", "emergency"]
MemoryLevel = Literal["ok", "degraded", "critical"]
#: ``async (level) -> bytes freed (an estimate)``.
CleanupCallback = Callable[[CleanupLevel], Awaitable[int]]

MIB = 1024 * 1024
EVENT_HISTORY = 100
#: RSS samples kept for plots: 6 hours at the default 30 s monitor interval.
SAMPLE_HISTORY = 720
EMERGENCY_GC_ROUNDS = 3


# -- releasing memory to the OS ------------------------------------------------------------


@functools.cache
def _malloc_trim_fn() -> Callable[[int], int] | None:
    # glibc only: musl and other platforms have no malloc_trim (nor, usually, libc.so.6).
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    trim: Callable[[int], int] = fn
    return trim


#: ``mallopt``'s parameter for the number of arenas (glibc's malloc.h: ``M_ARENA_MAX``).
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` for this process (and its forks); False where
    it does not apply (not glibc, ``arenas`` 0, or ``MALLOC_ARENA_MAX`` set, which glibc
    already follows).

    glibc gives each thread that meets a locked arena a new one, up to 8 per core, and
    memory freed in one arena is not reused by another. ragd runs threads that allocate in
    turn (database connections, inference, index syncs, parsing I/O), so a busy server held
    hundreds of MB in half-empty arenas: ingesting 400 passages peaked at 564 MB RSS with
    the default and 333 MB with two arenas, at the same speed. Call it before threads start.
    """
    if arenas <= 0 or "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


def malloc_trim() -> bool:
    """Return free heap pages to the OS (glibc's ``malloc_trim(0)``); False if unsupported."""
    fn = _malloc_trim_fn()
    if fn is None:
        return False
    return bool(fn(0))


def release_memory(gc_rounds: int = 1) -> None:
    """Collect garbage ``gc_rounds`` times, then trim the C heap.

    Blocking (a full collection of a large heap takes a while): call it from a worker thread.
    """
    for _ in range(gc_rounds):
        gc.collect()
    malloc_trim()


# -- samples, events, status ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemorySample:
    """Process memory: resident and virtual bytes, and RSS as a percentage of system memory."""

    rss: int
    vms: int
    percent: float


def process_rss(pid: int | None = None, *, descendants: bool = False) -> int:
    """Resident set size in bytes of this process (or of ``pid``), with ``descendants``
    the sum over it and all its descendants (one that exits meanwhile counts as 0).

    The one RSS reader of ragd: the model registry's load deltas and the benchmarks use it,
    and :func:`read_process_memory` reads the same figure for the memory manager.
    """
    root = psutil.Process(pid)
    total = int(root.memory_info().rss)
    if descendants:
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += int(child.memory_info().rss)
    return total


def read_process_memory() -> MemorySample:
    """This process's memory (RSS as :func:`process_rss` reads it, VMS, share of RAM)."""
    process = psutil.Process()
    with process.oneshot():
        info = process.memory_info()
        percent = process.memory_percent()
    return MemorySample(rss=int(info.rss), vms=int(info.vms), percent=round(percent, 3))


@dataclass(frozen=True, slots=True)
class CleanupAction:
    """One step of a cleanup. ``freed_bytes`` is the step's own estimate (or RSS drop)."""

    target: str  # "cache:<name>", "model:<name>", "callback:<name>", "gc"
    action: str  # "expire", "clear", "unload", "soft", "emergency", "collect"
    freed_bytes: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CleanupEvent:
    """One cleanup: when (epoch seconds), why, RSS before and after, and what was done."""

    at: float
    level: CleanupLevel
    reason: str
    rss_before: int
    rss_after: int
    freed_bytes: int  # measured: the RSS drop, never negative
    estimated_bytes: int  # the sum the actions reported
    seconds: float
    actions: tuple[CleanupAction, ...]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["actions"] = list(data["actions"])
        return data


@dataclass(frozen=True, slots=True)
class MemoryStatus:
    """The outcome of one monitoring cycle. ``level`` reflects the latest sample, taken
    after the cleanup when one ran."""

    level: MemoryLevel
    sample: MemorySample
    cleanup: CleanupEvent | None = None


# -- what the manager needs of the models --------------------------------------------------


class UnloadedModel(Protocol):
    """What unloading one model did."""

    @property
    def name(self) -> str: ...

    @property
    def freed_bytes(self) -> int:
        """The RSS drop measured around the unload (>= 0)."""
        ...


class ModelFigures(Protocol):
    """One model's state, as the memory report and the live metrics show it."""

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def state(self) -> str: ...

    @property
    def in_flight(self) -> int: ...

    @property
    def rss_delta_bytes(self) -> int | None: ...


class ModelCache(Protocol):
    """Loaded models that can be given back (``ragd.models.registry.ModelRegistry``)."""

    async def unload_idle(self, *, idle_for: float | None = None) -> Sequence[UnloadedModel]:
        """Unload the models idle beyond their TTL (or ``idle_for``, when shorter); models in
        use and TTL 0 ("never") are kept. Returns the models actually unloaded."""
        ...

    async def unload_all(self, reason: str) -> Sequence[UnloadedModel]:
        """Unload every loaded model, each after its in-flight calls finish."""
        ...

    def stats(self) -> Sequence[ModelFigures]: ...


# -- the manager ---------------------------------------------------------------------------


class MemoryManager:
    """Samples memory, runs cleanups at the thresholds and keeps the event history.

    ``reader`` and ``clock`` (epoch seconds, for event times) are injection points for tests.
    """

    def __init__(
        self,
        settings: MemorySettings,
        *,
        reader: Callable[[], MemorySample] = read_process_memory,
        clock: Callable[[], float] = time.time,
        history: int = EVENT_HISTORY,
    ) -> None:
        self.settings = settings
        self.soft_bytes = int(settings.soft_limit_mb * MIB)
        self.emergency_bytes = int(settings.emergency_limit_mb * MIB)
        self._reader = reader
        self._clock = clock
        self._callbacks: dict[str, CleanupCallback] = {}
        self._caches: dict[str, ByteLRUCache[Any, Any]] = {}
        self._registries: list[ModelCache] = []
        self._events: deque[CleanupEvent] = deque(maxlen=history)
        self._lock = asyncio.Lock()
        self._latest: MemorySample | None = None
        self._latest_at: float | None = None
        self._samples: deque[tuple[float, int]] = deque(maxlen=SAMPLE_HISTORY)
        self.checks = 0

    # -- registration --------------------------------------------------------------------

    def register_cleanup(self, name: str, callback: CleanupCallback) -> None:
        """Run ``callback(level)`` at each cleanup; it returns the bytes it freed (estimate)."""
        if name in self._callbacks:
            raise ValueError(f"cleanup callback {name!r} is already registered")
        self._callbacks[name] = callback

    def register_cache(self, cache: ByteLRUCache[Any, Any]) -> None:
        if cache.name in self._caches:
            raise ValueError(f"cache {cache.name!r} is already registered")
        self._caches[cache.name] = cache

    def register_registry(self, registry: ModelCache) -> None:
        """Soft cleanups unload its idle models; emergency cleanups unload all of them."""
        self._registries.append(registry)

    # -- levels --------------------------------------------------------------------------

    def level(self, rss: int) -> MemoryLevel:
        if rss >= self.emergency_bytes:
            return "critical"
        if rss >= self.soft_bytes:
            return "degraded"
        return "ok"

    @property
    def events(self) -> list[CleanupEvent]:
        """Recent cleanups, oldest first."""
        return list(self._events)

    @property
    def latest(self) -> MemorySample | None:
        return self._latest

    def _sample(self) -> MemorySample:
        sample = self._reader()
        self._latest, self._latest_at = sample, self._clock()
        self._samples.append((self._latest_at, sample.rss))
        return sample

    # -- cycles --------------------------------------------------------------------------

    async def check(self) -> MemoryStatus:
        """One monitoring cycle: sample, and clean up if a threshold is crossed."""
        self.checks += 1
        sample = self._sample()
        level = self.level(sample.rss)
        event: CleanupEvent | None = None
        mb = sample.rss / MIB
        if level == "critical":
            event = await self.cleanup(
                "emergency",
                f"RSS {mb:.0f} MiB >= emergency threshold {self.emergency_bytes / MIB:.0f} MiB",
            )
        elif level == "degraded":
            event = await self.cleanup(
                "soft", f"RSS {mb:.0f} MiB >= soft threshold {self.soft_bytes / MIB:.0f} MiB"
            )
        if event is not None:
            sample = self._latest or sample
            level = self.level(sample.rss)
        return MemoryStatus(level=level, sample=sample, cleanup=event)

    async def cleanup(self, level: CleanupLevel, reason: str) -> CleanupEvent:
        """Run a soft or emergency cleanup now (see the module docstring) and record it."""
        async with self._lock:
            started = time.perf_counter()
            rss_before = self._sample().rss
            actions: list[CleanupAction] = []
            if level == "emergency":
                logger.error("memory emergency cleanup", extra={"reason": reason})
                for registry in self._registries:
                    actions += await self._unload(registry, emergency=True)
                for cache in self._caches.values():
                    actions.append(CleanupAction(f"cache:{cache.name}", "clear", cache.clear()))
            else:
                logger.warning("memory soft cleanup", extra={"reason": reason})
                for cache in self._caches.values():
                    actions.append(CleanupAction(f"cache:{cache.name}", "clear", cache.clear()))
                for registry in self._registries:
                    actions += await self._unload(registry, emergency=False)
            for name, callback in self._callbacks.items():
                actions.append(await self._run_callback(name, callback, level))
            # A full collection of a large heap stalls every thread (it holds the GIL), so a
            # soft cleanup that freed nothing, repeated each cycle while RSS stays above the
            # threshold, skips it.
            if level == "emergency" or any(action.freed_bytes for action in actions):
                rounds = EMERGENCY_GC_ROUNDS if level == "emergency" else 1
                await asyncio.to_thread(release_memory, rounds)
                actions.append(CleanupAction("gc", f"collect x{rounds} + malloc_trim"))
            rss_after = self._sample().rss
            event = CleanupEvent(
                at=self._clock(),
                level=level,
                reason=reason,
                rss_before=rss_before,
                rss_after=rss_after,
                freed_bytes=max(0, rss_before - rss_after),
                estimated_bytes=sum(action.freed_bytes for action in actions),
                seconds=round(time.perf_counter() - started, 6),
                actions=tuple(actions),
            )
            self._events.append(event)
            logger.info(
                "memory cleanup done",
                extra={
                    "level": level,
                    "rss_before": rss_before,
                    "rss_after": rss_after,
                    "freed": event.freed_bytes,
                },
            )
            return event

    async def _unload(self, registry: ModelCache, *, emergency: bool) -> list[CleanupAction]:
        try:
            if emergency:
                results = await registry.unload_all("memory emergency")
            else:
                results = await registry.unload_idle(idle_for=self.settings.soft_idle_seconds)
        except Exception as exc:  # noqa: BLE001 - the rest of the cleanup must still run
            logger.exception("unloading models failed during cleanup")
            return [CleanupAction("models", "unload", error=_describe(exc))]
        return [CleanupAction(f"model:{r.name}", "unload", r.freed_bytes) for r in results]

    async def _run_callback(
        self, name: str, callback: CleanupCallback, level: CleanupLevel
    ) -> CleanupAction:
        try:
            freed = await callback(level)
        except Exception as exc:  # noqa: BLE001 - one failing callback must not stop the rest
            logger.exception("cleanup callback failed", extra={"callback": name})
            return CleanupAction(f"callback:{name}", level, error=_describe(exc))
        return CleanupAction(f"callback:{name}", level, max(0, int(freed)))

    async def expire_caches(self) -> int:
        """Sweep expired entries from every cache; return the bytes freed."""
        freed = sum(cache.expire() for cache in self._caches.values())
        if freed:
            logger.debug("expired cache entries", extra={"freed": freed})
        return freed

    async def unload_idle_models(self) -> list[UnloadedModel]:
        """Unload the models idle beyond their TTL, whatever the memory level."""
        results: list[UnloadedModel] = []
        for registry in self._registries:
            results += await registry.unload_idle()
        return results

    async def run(self) -> None:
        """Monitor forever: :meth:`check` every ``monitor_interval_seconds``; every
        ``cache_cleanup_interval_seconds`` :meth:`expire_caches` and
        :meth:`unload_idle_models` (so idle TTLs apply without memory pressure too).
        A cycle that fails is logged and the loop goes on. Cancel the task to stop it."""
        loop = asyncio.get_running_loop()
        next_check = loop.time()
        next_expire = loop.time() + self.settings.cache_cleanup_interval_seconds
        while True:
            now = loop.time()
            if now >= next_check:
                next_check = now + self.settings.monitor_interval_seconds
                try:
                    await self.check()
                except Exception:  # noqa: BLE001 - the monitor must outlive one bad cycle
                    logger.exception("memory check failed")
            if now >= next_expire:
                next_expire = now + self.settings.cache_cleanup_interval_seconds
                try:
                    await self.expire_caches()
                except Exception:  # noqa: BLE001 - as above
                    logger.exception("cache expiry failed")
                try:
                    await self.unload_idle_models()
                except Exception:  # noqa: BLE001 - as above
                    logger.exception("unloading idle models failed")
            await asyncio.sleep(max(0.0, min(next_check, next_expire) - loop.time()))

    # -- reporting -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Current figures for ``/performance/memory``: a fresh sample (the latest one if
        reading fails), thresholds, caches, per-model RSS deltas and recent cleanups."""
        try:
            sample: MemorySample | None = self._sample()
        except Exception:  # noqa: BLE001 - report what we have rather than fail the endpoint
            logger.exception("reading process memory failed")
            sample = self._latest
        caches = []
        for cache in self._caches.values():
            stats = cache.stats()
            caches.append({**dataclasses.asdict(stats), "hit_rate": stats.hit_rate})
        models = [
            {
                "name": stats.name,
                "kind": stats.kind,
                "state": stats.state,
                "rss_delta_bytes": stats.rss_delta_bytes,
            }
            for registry in self._registries
            for stats in registry.stats()
        ]
        return {
            "status": self.level(sample.rss) if sample is not None else "ok",
            "sample": (
                None
                if sample is None
                else {
                    "rss": sample.rss,
                    "vms": sample.vms,
                    "percent": sample.percent,
                    "at": self._latest_at,
                }
            ),
            "thresholds": {"soft_bytes": self.soft_bytes, "emergency_bytes": self.emergency_bytes},
            "monitor_interval_seconds": self.settings.monitor_interval_seconds,
            "cache_cleanup_interval_seconds": self.settings.cache_cleanup_interval_seconds,
            "caches": caches,
            "models": models,
            "events": [event.to_dict() for event in self._events],
            # Every sample taken (monitor cycles and these reports), oldest first, bounded.
            "history": [{"at": at, "rss": rss} for at, rss in self._samples],
        }


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
