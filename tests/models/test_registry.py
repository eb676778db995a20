"""The lazy model registry, against real threads and a fake clock.

The "models" here are small objects built by loader functions; what is under test is the
registry's own machinery: single-flight loading, backoff, idle unloading, the concurrency
limit and that nothing blocks the event loop.

No assertion here depends on how fast the machine is. "Off the event loop" is shown by work
in a worker thread that can only finish once a coroutine on the loop has run meanwhile (had
it run on the loop's thread, it would wait for itself until a hang guard fails the test);
how *responsive* the loop stays under such work is a figure for ``bench/loop_lag.py``.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from ragd.errors import Unavailable
from ragd.models.registry import (
    MAX_RETRY_SECONDS,
    ModelRegistry,
    ModelUnavailable,
    UnknownModel,
)
from ragd.settings import ModelsSettings
from tests.fake_clock import FakeClock
from tests.waiting import HANG_TIMEOUT, eventually, settle, thread_event, wait_event


class Model:
    """A loaded model: weak-referenceable, remembers whether it was closed."""

    def __init__(self, tag: int = 0) -> None:
        self.tag = tag
        self.closed = False

    def close(self) -> None:
        self.closed = True


class CountingLoader:
    """Builds a Model in the calling (worker) thread; can be held at a gate and fail on demand.

    ``entered`` is set when a load starts; with a ``gate``, the load then waits until the test
    opens it. ``seconds`` holds each load's own duration, measured inside it.
    """

    def __init__(self, *, gate: threading.Event | None = None) -> None:
        self.calls = 0
        self.gate = gate
        self.entered = threading.Event()
        self.fail_with: Exception | None = None
        self.threads: list[int] = []
        self.seconds: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> Model:
        started = time.perf_counter()
        with self._lock:
            self.calls += 1
            self.threads.append(threading.get_ident())
        self.entered.set()
        try:
            if self.gate is not None:
                wait_event(self.gate, "the loader's gate")
            if self.fail_with is not None:
                raise self.fail_with
            return Model(self.calls)
        finally:
            self.seconds.append(time.perf_counter() - started)


class Timings:
    """An observer that keeps the durations the registry reports."""

    def __init__(self) -> None:
        self.loads: list[float] = []
        self.inferences: list[float] = []

    def on_load(self, name: str, seconds: float, ok: bool) -> None:
        self.loads.append(seconds)

    def on_unload(self, name: str, reason: str) -> None:
        return None

    def on_inference(self, name: str, seconds: float) -> None:
        self.inferences.append(seconds)


async def callers_waiting(registry: ModelRegistry, name: str, count: int) -> list[Any]:
    """``count`` first calls of ``registry.get(name)``, each already waiting on the load."""
    waiting = 0

    async def first_call() -> Any:
        nonlocal waiting
        waiting += 1  # get() reaches its first await, the shared load, in this same step
        return await registry.get(name)

    calls = [asyncio.create_task(first_call()) for _ in range(count)]
    await eventually(lambda: waiting == count, what=f"{count} callers in get()")
    return calls


def make_registry(
    clock: Callable[[], float] | None = None, *, workers: int = 2, retry: float = 5.0
) -> ModelRegistry:
    settings = ModelsSettings(pool_workers=workers, load_retry_seconds=retry)
    return ModelRegistry(settings, clock=clock or time.monotonic, rss=lambda: 0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def registry(clock: FakeClock) -> AsyncIterator[ModelRegistry]:
    reg = make_registry(clock, workers=4)
    yield reg
    await reg.close()


async def test_nothing_loads_at_registration(registry: ModelRegistry) -> None:
    loader = CountingLoader()
    registry.register("m", loader, kind="embedder", idle_ttl=60)
    assert loader.calls == 0
    assert registry.state("m") == "not_loaded"
    assert registry.names() == ["m"]


async def test_single_flight_under_twenty_concurrent_first_calls(
    clock: FakeClock,
) -> None:
    timings = Timings()
    registry = ModelRegistry(ModelsSettings(pool_workers=4), clock=clock, rss=lambda: 0,
                             observer=timings)
    loader = CountingLoader(gate=threading.Event())
    registry.register("m", loader, kind="embedder", idle_ttl=60)

    calls = await callers_waiting(registry, "m", 20)
    await thread_event(loader.entered, "the load started")
    # The load is in progress, held at its gate: the loop still runs this coroutine (the load
    # is in a worker thread; on the loop's thread it would wait for the gate forever), one
    # load serves all twenty callers and none of them has a model yet.
    assert loader.calls == 1
    assert registry.state("m") == "loading"
    assert not any(call.done() for call in calls)
    assert loader.gate is not None
    loader.gate.set()
    models = await asyncio.gather(*calls)

    assert loader.calls == 1
    assert all(model is models[0] for model in models)
    assert loader.threads[0] != threading.get_ident()  # the loader ran in a worker thread
    assert registry.state("m") == "loaded"
    [stats] = registry.stats()
    assert stats.use_count == 20
    # The figure covers the whole load (as the loader measured it itself) and is the one
    # the observer was given.
    assert stats.load_seconds is not None and stats.load_seconds >= loader.seconds[0]
    assert timings.loads == [stats.load_seconds]
    await registry.close()


async def test_cancelled_first_caller_does_not_cancel_the_shared_load(
    registry: ModelRegistry,
) -> None:
    loader = CountingLoader(gate=threading.Event())
    registry.register("m", loader, kind="embedder", idle_ttl=60)
    first, second = await callers_waiting(registry, "m", 2)
    await thread_event(loader.entered, "the load started")
    first.cancel()  # while the load it started is still running
    with pytest.raises(asyncio.CancelledError):
        await first
    assert registry.state("m") == "loading"
    assert loader.gate is not None
    loader.gate.set()
    model = await second
    assert isinstance(model, Model)
    assert loader.calls == 1


async def test_run_executes_off_the_event_loop_and_records_latency(clock: FakeClock) -> None:
    timings = Timings()
    registry = ModelRegistry(ModelsSettings(pool_workers=4), clock=clock, rss=lambda: 0,
                             observer=timings)
    registry.register("m", CountingLoader(), kind="embedder", idle_ttl=60)
    own: list[float] = []  # each call's duration, as the call itself measured it

    def work(model: Model) -> int:
        started = time.perf_counter()
        ident = threading.get_ident()
        own.append(time.perf_counter() - started)
        return ident

    idents = [await registry.run("m", work) for _ in range(5)]
    await registry.close()
    assert threading.get_ident() not in idents
    [stats] = registry.stats()
    assert stats.inference_count == 5
    assert stats.use_count == 5
    # Each recorded latency spans its whole call; the percentiles are drawn from them.
    assert len(timings.inferences) == 5
    assert all(seconds >= inside for seconds, inside in zip(timings.inferences, own,
                                                            strict=True))
    low, high = min(timings.inferences) * 1000, max(timings.inferences) * 1000
    assert stats.p50_ms is not None and stats.p95_ms is not None
    assert low - 0.001 <= stats.p50_ms <= stats.p95_ms <= high + 0.001  # rounded to 1 us


async def test_typed_handle(registry: ModelRegistry) -> None:
    handle = registry.register("m", lambda: Model(7), kind="embedder", idle_ttl=60)
    assert (await handle.get()).tag == 7
    assert await handle.run(lambda model: model.tag * 2) == 14


async def test_errors_inside_run_propagate_and_the_model_stays_loaded(
    registry: ModelRegistry,
) -> None:
    registry.register("m", CountingLoader(), kind="embedder", idle_ttl=60)

    def boom(model: Model) -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        await registry.run("m", boom)
    assert registry.state("m") == "loaded"
    assert registry.stats()[0].in_flight == 0


async def test_concurrency_limit_is_honoured(registry: ModelRegistry) -> None:
    registry.register("m", CountingLoader(), kind="embedder", idle_ttl=60, concurrency=2)
    lock = threading.Lock()
    running = 0
    peak = 0
    # Calls go through in pairs: each waits for a second one to run beside it (so the limit
    # is reached however fast the machine is; with a limit of 1 the barrier breaks).
    pair = threading.Barrier(2, timeout=HANG_TIMEOUT)

    def work(model: Model) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        pair.wait()
        with lock:
            running -= 1

    await asyncio.gather(*(registry.run("m", work) for _ in range(8)))
    assert peak == 2  # the pool has 4 workers; the model's limit is what held it to 2


async def test_unknown_name_lists_the_registered_ones(registry: ModelRegistry) -> None:
    registry.register("embedder", Model, kind="embedder", idle_ttl=0)
    registry.register("reranker", Model, kind="reranker", idle_ttl=0)
    with pytest.raises(UnknownModel, match="'nope'.*embedder, reranker"):
        await registry.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("embedder", Model, kind="embedder", idle_ttl=0)


async def test_idle_unload_closes_and_drops_the_model_then_reloads(
    registry: ModelRegistry, clock: FakeClock
) -> None:
    loader = CountingLoader()
    closed: list[int] = []

    def close(model: Model) -> None:
        closed.append(model.tag)

    registry.register("m", loader, kind="embedder", idle_ttl=60, close=close)
    ref = weakref.ref(await registry.get("m"))
    assert ref() is not None
    assert await registry.run("m", lambda model: model.tag) == 1

    clock.advance(59)
    assert await registry.unload_idle() == []
    assert registry.state("m") == "loaded"

    clock.advance(2)
    [result] = await registry.unload_idle()
    assert result.unloaded and result.reason == "idle" and result.name == "m"
    assert closed == [1]
    assert registry.state("m") == "not_loaded"
    gc.collect()
    assert ref() is None, "the registry still holds the unloaded model"
    assert registry.stats()[0].rss_delta_bytes is None

    model = await registry.get("m")
    assert model.tag == 2
    assert loader.calls == 2
    assert registry.state("m") == "loaded"


async def test_default_close_calls_the_models_close_method(registry: ModelRegistry) -> None:
    registry.register("m", CountingLoader(), kind="embedder", idle_ttl=60)
    model = await registry.get("m")
    result = await registry.unload("m", "admin")
    assert result.unloaded
    assert model.closed
    # Unloading what is not loaded is a no-op that says so.
    again = await registry.unload("m", "admin")
    assert not again.unloaded and again.detail == "not_loaded"


async def test_ttl_zero_never_unloads(registry: ModelRegistry, clock: FakeClock) -> None:
    registry.register("m", CountingLoader(), kind="embedder", idle_ttl=0)
    await registry.get("m")
    clock.advance(10**7)
    assert await registry.unload_idle() == []
    assert registry.state("m") == "loaded"


async def test_a_busy_model_is_not_unloaded_idle(registry: ModelRegistry, clock: FakeClock) -> None:
    registry.register("m", CountingLoader(), kind="embedder", idle_ttl=60)
    await registry.get("m")
    release = threading.Event()
    started = threading.Event()

    def long_call(model: Model) -> str:
        started.set()
        wait_event(release, "release")
        return "done"

    call = asyncio.create_task(registry.run("m", long_call))
    await thread_event(started, "the call started")
    clock.advance(3600)
    assert await registry.unload_idle() == []
    assert registry.state("m") == "loaded"
    release.set()
    assert await call == "done"
    # Its use just ended: still not idle.
    assert await registry.unload_idle() == []


async def test_unload_waits_for_in_flight_calls(registry: ModelRegistry) -> None:
    events: list[str] = []
    release = threading.Event()
    started = threading.Event()

    def close(model: Model) -> None:
        events.append("close")

    registry.register("m", CountingLoader(), kind="embedder", idle_ttl=60, close=close)

    def long_call(model: Model) -> None:
        started.set()
        wait_event(release, "release")
        events.append("call done")

    call = asyncio.create_task(registry.run("m", long_call))
    await thread_event(started, "the call started")
    unload = asyncio.create_task(registry.unload("m", "admin"))
    await settle()  # an unload that did not wait would have taken the model by now
    assert not unload.done()
    assert registry.state("m") == "loaded"
    release.set()
    await call
    result = await unload
    assert result.unloaded
    assert events == ["call done", "close"]


async def test_a_cancelled_caller_keeps_the_model_in_use_until_its_thread_is_done(
    registry: ModelRegistry,
) -> None:
    events: list[str] = []
    release = threading.Event()
    started = threading.Event()

    def close(model: Model) -> None:
        events.append("close")

    registry.register("m", CountingLoader(), kind="embedder", idle_ttl=60, close=close)

    def long_call(model: Model) -> None:
        started.set()
        wait_event(release, "release")
        events.append("call done")

    call = asyncio.create_task(registry.run("m", long_call))
    await thread_event(started, "the call started")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # The worker still uses the model: it stays in flight and holds its concurrency slot.
    assert registry.stats()[0].in_flight == 1
    unload = asyncio.create_task(registry.unload("m", "admin"))
    await settle()  # an unload that did not wait would have taken the model by now
    assert not unload.done()
    assert registry.state("m") == "loaded"
    release.set()
    assert (await unload).unloaded
    assert events == ["call done", "close"]
    assert registry.stats()[0].in_flight == 0


async def test_failed_load_backs_off_then_recovers(
    registry: ModelRegistry, clock: FakeClock
) -> None:
    loader = CountingLoader()
    loader.fail_with = OSError("model file missing")
    registry.register("m", loader, kind="embedder", idle_ttl=60)

    with pytest.raises(ModelUnavailable, match="model file missing") as caught:
        await registry.run("m", lambda model: model)
    assert isinstance(caught.value, Unavailable)
    assert caught.value.retry_after == pytest.approx(5.0)
    assert "next attempt in 5 s" in caught.value.message
    assert registry.state("m") == "failed"
    [stats] = registry.stats()
    assert stats.last_error == "OSError: model file missing"
    assert stats.failures == 1 and stats.next_retry_at is not None

    # Before the retry time: refused at once, without calling the loader.
    clock.advance(4.9)
    with pytest.raises(ModelUnavailable):
        await registry.get("m")
    assert loader.calls == 1

    # After it: tried again; a second failure doubles the backoff.
    clock.advance(0.2)
    with pytest.raises(ModelUnavailable) as caught:
        await registry.get("m")
    assert loader.calls == 2
    assert caught.value.retry_after == pytest.approx(10.0)

    clock.advance(9.9)
    with pytest.raises(ModelUnavailable):
        await registry.get("m")
    assert loader.calls == 2

    loader.fail_with = None
    clock.advance(0.2)
    model = await registry.get("m")
    assert isinstance(model, Model)
    [stats] = registry.stats()
    assert stats.state == "loaded"
    assert stats.last_error is None and stats.next_retry_at is None
    assert stats.failures == 2 and stats.consecutive_failures == 0

    # The backoff was reset by the success: the next failure waits the base time again.
    del model
    await registry.unload("m", "test")
    loader.fail_with = RuntimeError("again")
    with pytest.raises(ModelUnavailable) as caught:
        await registry.get("m")
    assert caught.value.retry_after == pytest.approx(5.0)


async def test_backoff_is_capped(clock: FakeClock) -> None:
    registry = make_registry(clock, retry=100.0)
    loader = CountingLoader()
    loader.fail_with = RuntimeError("no")
    registry.register("m", loader, kind="embedder", idle_ttl=60)
    retry_afters = []
    for _ in range(4):
        with pytest.raises(ModelUnavailable) as caught:
            await registry.get("m")
        assert caught.value.retry_after is not None
        retry_afters.append(caught.value.retry_after)
        clock.advance(caught.value.retry_after)
    assert retry_afters == [100.0, 200.0, MAX_RETRY_SECONDS, MAX_RETRY_SECONDS]
    await registry.close()


async def test_concurrent_callers_of_a_failing_load_share_one_attempt(
    registry: ModelRegistry,
) -> None:
    loader = CountingLoader(gate=threading.Event())
    loader.fail_with = RuntimeError("broken")
    registry.register("m", loader, kind="embedder", idle_ttl=60)
    calls = await callers_waiting(registry, "m", 10)
    await thread_event(loader.entered, "the load started")
    assert loader.gate is not None
    loader.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert loader.calls == 1
    assert all(isinstance(result, ModelUnavailable) for result in results)


async def test_unload_all_and_close(clock: FakeClock) -> None:
    registry = make_registry(clock)
    registry.register("a", CountingLoader(), kind="embedder", idle_ttl=60)
    registry.register("b", CountingLoader(), kind="reranker", idle_ttl=0)
    registry.register("c", CountingLoader(), kind="keywords", idle_ttl=60)
    a = await registry.get("a")
    b = await registry.get("b")
    results = await registry.unload_all("memory emergency")
    assert sorted(result.name for result in results) == ["a", "b"]
    assert a.closed and b.closed
    assert [registry.state(name) for name in "abc"] == ["not_loaded"] * 3

    await registry.get("a")
    await registry.close()
    assert registry.state("a") == "not_loaded"
    with pytest.raises(ModelUnavailable, match="closed"):
        await registry.get("a")


async def test_observer_hooks(clock: FakeClock) -> None:
    calls: list[tuple[Any, ...]] = []

    class Recorder:
        def on_load(self, name: str, seconds: float, ok: bool) -> None:
            calls.append(("load", name, ok))

        def on_unload(self, name: str, reason: str) -> None:
            calls.append(("unload", name, reason))

        def on_inference(self, name: str, seconds: float) -> None:
            calls.append(("inference", name))

    registry = ModelRegistry(ModelsSettings(), clock=clock, rss=lambda: 0, observer=Recorder())
    registry.register("m", CountingLoader(), kind="embedder", idle_ttl=60)
    await registry.run("m", lambda model: None)
    await registry.unload("m", "admin")
    await registry.close()
    assert calls == [("load", "m", True), ("inference", "m"), ("unload", "m", "admin")]


async def test_rss_delta_is_measured_around_the_load(clock: FakeClock) -> None:
    readings = iter([100_000_000, 150_000_000, 150_000_000, 110_000_000])
    registry = ModelRegistry(ModelsSettings(), clock=clock, rss=lambda: next(readings))
    registry.register("m", Model, kind="embedder", idle_ttl=60)
    await registry.get("m")
    assert registry.stats()[0].rss_delta_bytes == 50_000_000
    result = await registry.unload("m", "admin")
    assert result.freed_bytes == 40_000_000
    await registry.close()


async def test_the_event_loop_runs_during_a_large_cpu_bound_batch(
    registry: ModelRegistry,
) -> None:
    registry.register("m", CountingLoader(), kind="embedder", idle_ttl=60)
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((384, 384)).astype(np.float32)
    batch = rng.standard_normal((2048, 384)).astype(np.float32)
    computing = threading.Event()
    loop_ran = threading.Event()

    def embed_batch(model: Model) -> tuple[int, int]:
        # Stand-in for a large embedding batch: matrix products until a coroutine on the
        # event loop has run meanwhile. On the loop's own thread that could never happen.
        out = np.tanh(batch @ weights)
        rounds = 1
        computing.set()
        deadline = time.monotonic() + HANG_TIMEOUT  # a hang guard, not a speed bar
        while not loop_ran.is_set():
            if time.monotonic() > deadline:
                raise AssertionError("the event loop never ran during the batch")
            out = np.tanh(out @ weights)
            rounds += 1
        return rounds, threading.get_ident()

    async def on_the_loop() -> None:
        await eventually(computing.is_set, what="the batch started")
        loop_ran.set()

    await registry.get("m")
    witness = asyncio.create_task(on_the_loop())
    rounds, ident = await registry.run("m", embed_batch)
    await witness
    assert rounds >= 1
    assert ident != threading.get_ident()


async def test_unload_all_credits_each_model_with_its_own_drop(clock: FakeClock) -> None:
    """Each model's freed bytes are the RSS drop of its own unload, not the total."""
    held = {"a": 30 * 2**20, "b": 50 * 2**20}
    loaded: set[str] = set()

    def rss() -> int:
        return 100 * 2**20 + sum(held[name] for name in loaded)

    class Sized:
        def __init__(self, name: str) -> None:
            self.name = name
            loaded.add(name)

        def close(self) -> None:
            loaded.discard(self.name)

    registry = ModelRegistry(ModelsSettings(), clock=clock, rss=rss)
    registry.register("a", lambda: Sized("a"), kind="test", idle_ttl=0)
    registry.register("b", lambda: Sized("b"), kind="test", idle_ttl=0)
    await registry.get("a")
    await registry.get("b")
    results = {r.name: r.freed_bytes for r in await registry.unload_all("test")}
    assert results == {"a": 30 * 2**20, "b": 50 * 2**20}
    await registry.close()
