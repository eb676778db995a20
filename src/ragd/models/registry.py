"""The lazy model registry: named models that load on first use and unload when idle.

Nothing loads at startup. The first :meth:`ModelRegistry.get` or :meth:`ModelRegistry.run`
of a name loads it in a worker thread; concurrent first calls share that one load
(single-flight) and wait for it without blocking the event loop. A failed load is remembered
with exponential backoff: until the retry time every call raises :class:`ModelUnavailable`
(which says what went wrong and when the next attempt is), then the next call loads again.

Inference goes through :meth:`ModelRegistry.run`, which runs the given function in the
registry's bounded thread pool under a per-model concurrency limit and keeps the statistics
the ``/performance/models`` endpoint reports. Unloading waits for the model's in-flight calls,
closes it, drops every reference the registry holds and returns the freed heap to the OS.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from ragd.errors import NotFound, Unavailable
from ragd.ops.memory import process_rss, release_memory
from ragd.ops.percentile import percentile
from ragd.settings import ModelsSettings

__all__ = [
    "MAX_RETRY_SECONDS",
    "ModelHandle",
    "ModelRegistry",
    "ModelState",
    "ModelStats",
    "ModelUnavailable",
    "NullObserver",
    "RegistryObserver",
    "UnknownModel",
    "UnloadResult",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

ModelState = Literal["not_loaded", "loading", "loaded", "failed"]

#: Backoff between load attempts doubles from ``load_retry_seconds`` up to this.
MAX_RETRY_SECONDS = 300.0
#: Inference latencies kept per model for the p50/p95 figures.
LATENCY_WINDOW = 512
_MAX_ERROR_CHARS = 500


class ModelUnavailable(Unavailable):
    """A model cannot serve now: its last load failed and the retry time has not come.

    ``retry_after`` is the number of seconds until the registry tries to load it again.
    """

    code = "model_unavailable"

    def __init__(self, message: str, *, name: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.retry_after = retry_after


class UnknownModel(NotFound):
    """No model is registered under this name."""

    code = "unknown_model"


class RegistryObserver(Protocol):
    """Hooks for metrics. Called on the event loop; must be quick and must not raise."""

    def on_load(self, name: str, seconds: float, ok: bool) -> None: ...

    def on_unload(self, name: str, reason: str) -> None: ...

    def on_inference(self, name: str, seconds: float) -> None: ...


class NullObserver:
    """The default observer: records nothing."""

    def on_load(self, name: str, seconds: float, ok: bool) -> None:
        return None

    def on_unload(self, name: str, reason: str) -> None:
        return None

    def on_inference(self, name: str, seconds: float) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ModelStats:
    """One model's state and figures. Times are wall-clock epoch seconds."""

    name: str
    kind: str
    state: ModelState
    load_seconds: float | None
    loaded_at: float | None
    last_used_at: float | None
    idle_seconds: float | None
    use_count: int
    rss_delta_bytes: int | None
    idle_ttl: float
    concurrency: int
    in_flight: int
    failures: int
    consecutive_failures: int
    last_error: str | None
    next_retry_at: float | None
    inference_count: int
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True, slots=True)
class UnloadResult:
    """What one unload did. ``freed_bytes`` is the RSS drop measured around it (>= 0)."""

    name: str
    reason: str
    unloaded: bool
    detail: str = ""
    rss_before: int = 0
    rss_after: int = 0
    seconds: float = 0.0

    @property
    def freed_bytes(self) -> int:
        return max(0, self.rss_before - self.rss_after)


@dataclass(eq=False)
class _Entry:
    name: str
    kind: str
    loader: Callable[[], Any]
    close: Callable[[Any], None] | None
    idle_ttl: float
    concurrency: int
    limiter: asyncio.Semaphore
    drained: asyncio.Event
    state: ModelState = "not_loaded"
    instance: Any = None
    load_task: asyncio.Task[None] | None = None
    unload_task: asyncio.Task[UnloadResult] | None = None
    in_flight: int = 0
    use_count: int = 0
    load_seconds: float | None = None
    loaded_at: float | None = None
    last_used: float | None = None
    rss_delta: int | None = None
    failures: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None
    next_retry_at: float | None = None
    inference_count: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


class ModelHandle(Generic[T]):
    """A typed view of one registered model, returned by :meth:`ModelRegistry.register`."""

    def __init__(self, registry: ModelRegistry, name: str) -> None:
        self.registry = registry
        self.name = name

    async def get(self) -> T:
        result: T = await self.registry.get(self.name)
        return result

    async def run(self, fn: Callable[[T], R]) -> R:
        return await self.registry.run(self.name, fn)


class ModelRegistry:
    """Named models, loaded lazily and run in a bounded thread pool.

    ``clock`` (monotonic seconds) drives idle TTLs and retry times; ``wall_clock`` (seconds
    since the epoch) only converts those moments for :meth:`stats`; ``rss`` reads the process
    RSS for the per-model load delta. All are injection points for tests.

    Loads and closes run one at a time in their own thread, apart from the inference pool:
    a slow load never occupies an inference worker, the peak memory of loading is that of one
    model, and the RSS delta measured around a load is attributable to that model.
    """

    def __init__(
        self,
        settings: ModelsSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rss: Callable[[], int] = process_rss,
        observer: RegistryObserver | None = None,
    ) -> None:
        settings = settings or ModelsSettings()
        self._retry_base = settings.load_retry_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._rss = rss
        self._observer: RegistryObserver = observer or NullObserver()
        self._entries: dict[str, _Entry] = {}
        self._pool = ThreadPoolExecutor(
            max_workers=settings.pool_workers, thread_name_prefix="ragd-infer"
        )
        self._loader_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragd-load")
        self._closed = False

    # -- registration and lookup ---------------------------------------------------------

    def register(
        self,
        name: str,
        loader: Callable[[], T],
        *,
        kind: str,
        idle_ttl: float,
        concurrency: int = 1,
        close: Callable[[T], None] | None = None,
    ) -> ModelHandle[T]:
        """Register a model; nothing is loaded until it is first used.

        ``loader`` builds the loaded model (blocking; it runs in a worker thread).
        ``idle_ttl`` is the idle time in seconds after which :meth:`unload_idle` unloads it
        (0 = never). ``close`` releases it; by default its ``close()`` method, if any.
        """
        if name in self._entries:
            raise ValueError(f"model {name!r} is already registered")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if idle_ttl < 0:
            raise ValueError("idle_ttl must be >= 0 (0 = never unload)")
        self._entries[name] = _Entry(
            name=name,
            kind=kind,
            loader=loader,
            close=close,
            idle_ttl=idle_ttl,
            concurrency=concurrency,
            limiter=asyncio.Semaphore(concurrency),
            drained=asyncio.Event(),
        )
        self._entries[name].drained.set()
        return ModelHandle(self, name)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def state(self, name: str) -> ModelState:
        return self._entry(name).state

    def concurrency(self, name: str) -> int:
        return self._entry(name).concurrency

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UnknownModel(f"unknown model {name!r}; registered: {known}") from None

    # -- use -----------------------------------------------------------------------------

    async def get(self, name: str) -> Any:
        """The loaded model, loading it first if needed.

        Prefer :meth:`run` for inference: it runs off the event loop and the registry knows
        the model is in use, so it is not unloaded under the caller.
        """
        entry = self._entry(name)
        instance = await self._acquire(entry)
        try:
            entry.use_count += 1
            return instance
        finally:
            self._release(entry)

    async def run(self, name: str, fn: Callable[[Any], R]) -> R:
        """Run ``fn(model)`` in the thread pool and return its result.

        At most the model's ``concurrency`` calls run at once; more wait here, on the loop,
        without holding a worker. The model is loaded first if needed and is not unloaded
        while the call runs, even if the caller is cancelled meanwhile: a thread cannot be
        stopped, so the call counts as in flight (and holds its concurrency slot) until the
        worker is done with it.
        """
        entry = self._entry(name)
        await entry.limiter.acquire()
        try:
            instance = await self._acquire(entry)
        except BaseException:
            entry.limiter.release()
            raise
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            work = self._pool.submit(fn, instance)
        except BaseException:
            self._finish_run(entry, None)
            raise
        finally:
            del instance

        def done(finished: Future[R]) -> None:
            # In the worker thread (or here, if the call was cancelled before it started).
            seconds = None if finished.cancelled() else time.perf_counter() - started
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to update
                loop.call_soon_threadsafe(self._finish_run, entry, seconds)

        work.add_done_callback(done)
        return await asyncio.wrap_future(work)

    def _finish_run(self, entry: _Entry, seconds: float | None) -> None:
        entry.limiter.release()
        self._release(entry)
        entry.use_count += 1
        if seconds is not None:
            entry.inference_count += 1
            entry.latencies.append(seconds)
            self._notify("on_inference", entry.name, seconds)

    async def _acquire(self, entry: _Entry) -> Any:
        """Return the loaded instance with ``in_flight`` raised; pair with :meth:`_release`."""
        while True:
            if self._closed:
                raise ModelUnavailable("the model registry is closed", name=entry.name)
            if entry.unload_task is not None:
                # New work waits for the unload to finish, then loads the model again.
                await asyncio.shield(entry.unload_task)
                continue
            if entry.state == "loaded":
                # No await between this check and the increment: an unload that starts
                # later sees the call in flight and waits for it.
                entry.in_flight += 1
                entry.drained.clear()
                return entry.instance
            if entry.state == "failed" and entry.next_retry_at is not None:
                if self._clock() < entry.next_retry_at:
                    raise self._unavailable(entry)
            if entry.load_task is None:
                entry.load_task = asyncio.create_task(
                    self._load(entry), name=f"ragd-load-{entry.name}"
                )
            # Shielded: a waiter that is cancelled does not cancel the load the others share.
            await asyncio.shield(entry.load_task)
            if entry.state == "failed":
                raise self._unavailable(entry)

    def _release(self, entry: _Entry) -> None:
        entry.in_flight -= 1
        entry.last_used = self._clock()
        if entry.in_flight == 0:
            entry.drained.set()

    def _unavailable(self, entry: _Entry) -> ModelUnavailable:
        retry_after = max(0.0, (entry.next_retry_at or 0.0) - self._clock())
        return ModelUnavailable(
            f"model {entry.name!r} failed to load ({entry.last_error}); "
            f"next attempt in {math.ceil(retry_after)} s",
            name=entry.name,
            retry_after=retry_after,
        )

    # -- loading -------------------------------------------------------------------------

    def _load_sync(self, loader: Callable[[], Any]) -> tuple[Any, int]:
        before = self._rss()
        instance = loader()
        return instance, self._rss() - before

    async def _load(self, entry: _Entry) -> None:
        entry.state = "loading"
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            instance, rss_delta = await loop.run_in_executor(
                self._loader_pool, self._load_sync, entry.loader
            )
        except Exception as exc:  # noqa: BLE001 - any loader failure makes the model "failed"
            seconds = time.perf_counter() - started
            entry.state = "failed"
            entry.failures += 1
            entry.consecutive_failures += 1
            delay = min(self._retry_base * 2 ** (entry.consecutive_failures - 1), MAX_RETRY_SECONDS)
            entry.next_retry_at = self._clock() + delay
            entry.last_error = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
            logger.warning(
                "model load failed",
                exc_info=True,
                extra={"model": entry.name, "seconds": round(seconds, 3), "retry_in": delay},
            )
            self._notify("on_load", entry.name, seconds, False)
            return
        except asyncio.CancelledError:
            entry.state = "not_loaded"
            raise
        finally:
            entry.load_task = None
        seconds = time.perf_counter() - started
        entry.instance = instance
        entry.state = "loaded"
        entry.load_seconds = seconds
        entry.loaded_at = entry.last_used = self._clock()
        entry.rss_delta = rss_delta
        entry.consecutive_failures = 0
        entry.last_error = None
        entry.next_retry_at = None
        logger.info(
            "model loaded",
            extra={"model": entry.name, "seconds": round(seconds, 3), "rss_delta": rss_delta},
        )
        self._notify("on_load", entry.name, seconds, True)

    # -- unloading -----------------------------------------------------------------------

    async def unload(self, name: str, reason: str) -> UnloadResult:
        """Unload ``name`` once its in-flight calls finish; the next use loads it again.

        A model that is not loaded (or is loading) is left alone and reported as such.
        """
        entry = self._entry(name)
        if entry.unload_task is None:
            if entry.state != "loaded":
                return UnloadResult(name, reason, unloaded=False, detail=entry.state)
            entry.unload_task = asyncio.create_task(
                self._unload(entry, reason), name=f"ragd-unload-{name}"
            )
        return await asyncio.shield(entry.unload_task)

    async def _unload(self, entry: _Entry, reason: str) -> UnloadResult:
        try:
            await entry.drained.wait()
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            rss_before = self._rss()
            instance, entry.instance = entry.instance, None
            entry.state = "not_loaded"
            try:
                await loop.run_in_executor(
                    self._loader_pool, _close_model, entry.name, instance, entry.close
                )
            finally:
                # The registry's last reference; the model can now be collected.
                del instance
            await loop.run_in_executor(self._loader_pool, release_memory, 1)
            rss_after = self._rss()
            result = UnloadResult(
                entry.name,
                reason,
                unloaded=True,
                rss_before=rss_before,
                rss_after=rss_after,
                seconds=time.perf_counter() - started,
            )
            logger.info(
                "model unloaded",
                extra={"model": entry.name, "reason": reason, "freed": result.freed_bytes},
            )
            self._notify("on_unload", entry.name, reason)
            return result
        finally:
            entry.unload_task = None

    def _is_idle(self, entry: _Entry, now: float, idle_for: float | None) -> bool:
        limit = entry.idle_ttl if idle_for is None else min(entry.idle_ttl, idle_for)
        return (
            entry.state == "loaded"
            and entry.unload_task is None
            and entry.in_flight == 0
            and entry.idle_ttl > 0
            and entry.last_used is not None
            and now - entry.last_used >= limit
        )

    async def unload_idle(self, *, idle_for: float | None = None) -> list[UnloadResult]:
        """Unload the models idle for longer than their TTL (or than ``idle_for``, when that
        is shorter: memory pressure); busy models and TTL 0 ("never") are skipped."""
        now = self._clock()
        idle = [
            entry.name for entry in self._entries.values() if self._is_idle(entry, now, idle_for)
        ]
        results = [await self.unload(name, "idle") for name in idle]
        return [result for result in results if result.unloaded]

    async def unload_all(self, reason: str) -> list[UnloadResult]:
        """Unload every loaded model, each after its in-flight calls finish."""
        loaded = [
            entry.name
            for entry in self._entries.values()
            if entry.state == "loaded" or entry.unload_task is not None
        ]
        # One at a time: each unload measures the RSS drop around itself, and overlapping
        # windows would credit every model with the whole drop.
        results = [await self.unload(name, reason) for name in loaded]
        return [result for result in results if result.unloaded]

    async def close(self) -> None:
        """Wait for loads in progress, unload everything and stop the worker threads."""
        if self._closed:
            return
        self._closed = True  # new calls are refused from here on
        loads = [e.load_task for e in self._entries.values() if e.load_task is not None]
        if loads:
            await asyncio.gather(*(asyncio.shield(task) for task in loads))
        await self.unload_all("shutdown")
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        await asyncio.to_thread(self._loader_pool.shutdown, wait=True)

    # -- figures -------------------------------------------------------------------------

    def stats(self) -> list[ModelStats]:
        now = self._clock()
        wall = self._wall_clock()

        def to_wall(moment: float | None) -> float | None:
            return None if moment is None else wall - (now - moment)

        out: list[ModelStats] = []
        for entry in self._entries.values():
            latencies = list(entry.latencies)
            loaded = entry.state == "loaded"
            out.append(
                ModelStats(
                    name=entry.name,
                    kind=entry.kind,
                    state=entry.state,
                    load_seconds=entry.load_seconds,
                    loaded_at=to_wall(entry.loaded_at) if loaded else None,
                    last_used_at=to_wall(entry.last_used),
                    idle_seconds=(
                        now - entry.last_used if loaded and entry.last_used is not None else None
                    ),
                    use_count=entry.use_count,
                    rss_delta_bytes=entry.rss_delta if loaded else None,
                    idle_ttl=entry.idle_ttl,
                    concurrency=entry.concurrency,
                    in_flight=entry.in_flight,
                    failures=entry.failures,
                    consecutive_failures=entry.consecutive_failures,
                    last_error=entry.last_error,
                    next_retry_at=to_wall(entry.next_retry_at),
                    inference_count=entry.inference_count,
                    p50_ms=_percentile_ms(latencies, 50),
                    p95_ms=_percentile_ms(latencies, 95),
                )
            )
        return out

    def _notify(self, hook: str, *args: Any) -> None:
        try:
            getattr(self._observer, hook)(*args)
        except Exception:  # noqa: BLE001 - a metrics bug must not fail inference
            logger.exception("registry observer failed", extra={"hook": hook})


def _close_model(name: str, instance: Any, close: Callable[[Any], None] | None) -> None:
    """Close one model in the loader thread; a failing close still lets the unload finish."""
    closer: Callable[[], object] | None
    if close is not None:
        closer = functools.partial(close, instance)
    else:
        method = getattr(instance, "close", None)
        closer = method if callable(method) else None
    if closer is None:
        return
    try:
        closer()
    except Exception:  # noqa: BLE001 - the references are dropped anyway
        logger.exception("closing a model failed", extra={"model": name})
    finally:
        del closer


def _percentile_ms(seconds: list[float], q: float) -> float | None:
    """The ``q``-th percentile of ``seconds`` in milliseconds; None for no values."""
    return round(percentile(seconds, q) * 1000.0, 3) if seconds else None
