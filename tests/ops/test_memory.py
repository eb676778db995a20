"""The memory manager, with memory readings injected and a real registry and caches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ragd.models.registry import ModelRegistry
from ragd.ops.cache import ByteLRUCache
from ragd.ops.memory import (
    MIB,
    CleanupLevel,
    MemoryManager,
    MemorySample,
    malloc_trim,
    read_process_memory,
    release_memory,
)
from ragd.settings import MemorySettings, ModelsSettings
from tests.fake_clock import FakeClock
from tests.waiting import eventually

SOFT_MB = 100
EMERGENCY_MB = 200


class FakeMemory:
    """The injected reader: returns ``rss`` (MiB), which cleanups can lower."""

    def __init__(self, rss_mb: float = 50) -> None:
        self.rss = int(rss_mb * MIB)
        self.reads = 0
        self.fail_next = 0

    def set(self, rss_mb: float) -> None:
        self.rss = int(rss_mb * MIB)

    def __call__(self) -> MemorySample:
        self.reads += 1
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("cannot read /proc")
        return MemorySample(rss=self.rss, vms=self.rss * 3, percent=1.0)


class Model:
    def close(self) -> None:
        return None


@pytest.fixture
def memory() -> FakeMemory:
    return FakeMemory()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def registry(clock: FakeClock) -> AsyncIterator[ModelRegistry]:
    reg = ModelRegistry(ModelsSettings(), clock=clock, rss=lambda: 0)
    reg.register("embedder", Model, kind="embedder", idle_ttl=60)
    reg.register("reranker", Model, kind="reranker", idle_ttl=60)
    reg.register("keywords", Model, kind="keywords", idle_ttl=0)
    yield reg
    await reg.close()


@pytest.fixture
def cache(clock: FakeClock) -> ByteLRUCache[str, str]:
    return ByteLRUCache("queries", 1_000_000, ttl=100, clock=clock)


@pytest.fixture
def manager(
    memory: FakeMemory,
    clock: FakeClock,
    registry: ModelRegistry,
    cache: ByteLRUCache[str, str],
) -> MemoryManager:
    settings = MemorySettings(
        soft_limit_mb=SOFT_MB,
        emergency_limit_mb=EMERGENCY_MB,
        monitor_interval_seconds=0.01,
        cache_cleanup_interval_seconds=0.01,
    )
    mgr = MemoryManager(settings, reader=memory, clock=clock)
    mgr.register_registry(registry)
    mgr.register_cache(cache)
    return mgr


class Callbacks:
    def __init__(self, memory: FakeMemory, *, lower_to_mb: float | None = None) -> None:
        self.levels: list[CleanupLevel] = []
        self.memory = memory
        self.lower_to_mb = lower_to_mb

    async def __call__(self, level: CleanupLevel) -> int:
        self.levels.append(level)
        if self.lower_to_mb is not None:
            self.memory.set(self.lower_to_mb)
        return 1234


async def test_below_the_soft_threshold_nothing_happens(
    manager: MemoryManager, memory: FakeMemory, registry: ModelRegistry
) -> None:
    callback = Callbacks(memory)
    manager.register_cleanup("search-cache", callback)
    await registry.get("embedder")
    memory.set(SOFT_MB - 1)
    status = await manager.check()
    assert status.level == "ok"
    assert status.cleanup is None
    assert callback.levels == []
    assert manager.events == []
    assert registry.state("embedder") == "loaded"


async def test_soft_cleanup_clears_caches_unloads_idle_models_and_runs_callbacks(
    manager: MemoryManager,
    memory: FakeMemory,
    clock: FakeClock,
    registry: ModelRegistry,
    cache: ByteLRUCache[str, str],
) -> None:
    callback = Callbacks(memory, lower_to_mb=90)
    manager.register_cleanup("search-cache", callback)
    await registry.get("embedder")
    await registry.get("keywords")  # TTL 0: never idle
    cache.put("old query", "x" * 1000)
    clock.now += 61  # the embedder is idle past its TTL
    await registry.get("reranker")  # just used
    cache.put("new query", "y" * 1000)
    clock.now += 50  # "old query" expires (TTL 100), "new query" does not

    memory.set(150)
    status = await manager.check()

    assert callback.levels == ["soft"]
    assert registry.state("embedder") == "not_loaded"
    assert registry.state("reranker") == "loaded"
    assert registry.state("keywords") == "loaded"
    assert cache.keys() == []
    assert status.level == "ok"  # the sample after the cleanup: 90 MiB
    event = status.cleanup
    assert event is not None and manager.events == [event]
    assert event.level == "soft"
    assert "soft threshold" in event.reason
    assert event.rss_before == 150 * MIB and event.rss_after == 90 * MIB
    assert event.freed_bytes == 60 * MIB
    assert event.at == clock.now
    targets = {action.target: action for action in event.actions}
    assert targets["cache:queries"].action == "clear"
    assert targets["cache:queries"].freed_bytes > 2000
    assert targets["model:embedder"].action == "unload"
    assert targets["callback:search-cache"].freed_bytes == 1234
    assert "model:reranker" not in targets
    assert event.estimated_bytes >= 1234 + 1000


async def test_emergency_cleanup_unloads_everything_and_clears_caches(
    manager: MemoryManager,
    memory: FakeMemory,
    registry: ModelRegistry,
    cache: ByteLRUCache[str, str],
) -> None:
    callback = Callbacks(memory, lower_to_mb=120)
    manager.register_cleanup("search-cache", callback)
    for name in registry.names():
        await registry.get(name)
    cache.put("live query", "z" * 1000)

    memory.set(250)
    status = await manager.check()

    assert callback.levels == ["emergency"]
    assert [registry.state(name) for name in registry.names()] == ["not_loaded"] * 3
    assert len(cache) == 0
    assert status.level == "degraded"  # 120 MiB after the cleanup
    event = status.cleanup
    assert event is not None and event.level == "emergency"
    assert event.freed_bytes == 130 * MIB
    targets = {action.target: action.action for action in event.actions}
    assert targets["cache:queries"] == "clear"
    assert {"model:embedder", "model:reranker", "model:keywords"} <= set(targets)
    assert targets["gc"].startswith("collect x3")


async def test_a_failing_callback_is_recorded_and_the_rest_still_runs(
    manager: MemoryManager, memory: FakeMemory
) -> None:
    async def broken(level: CleanupLevel) -> int:
        raise RuntimeError("no luck")

    after = Callbacks(memory)
    manager.register_cleanup("broken", broken)
    manager.register_cleanup("after", after)
    event = await manager.cleanup("soft", "admin request")
    assert after.levels == ["soft"]
    [failed] = [action for action in event.actions if action.target == "callback:broken"]
    assert failed.error == "RuntimeError: no luck"
    assert event.reason == "admin request"
    with pytest.raises(ValueError, match="already registered"):
        manager.register_cleanup("after", after)


async def test_run_loop_survives_failing_cycles(
    manager: MemoryManager, memory: FakeMemory, clock: FakeClock, cache: ByteLRUCache[str, str]
) -> None:
    async def broken(level: CleanupLevel) -> int:
        raise RuntimeError("callback crashed")

    manager.register_cleanup("broken", broken)
    memory.set(150)
    memory.fail_next = 2  # the first two readings fail outright
    cache.put("q", "v")
    clock.now += 101

    task = asyncio.create_task(manager.run())
    try:
        await eventually(lambda: len(manager.events) >= 3, what="three cleanup events")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert manager.checks >= 4
    assert len(manager.events) >= 3
    assert all(any(action.error for action in event.actions) for event in manager.events)
    assert len(cache) == 0  # the periodic expiry ran


async def test_run_loop_unloads_idle_models_without_memory_pressure(
    manager: MemoryManager, memory: FakeMemory, clock: FakeClock, registry: ModelRegistry
) -> None:
    await registry.get("embedder")
    await registry.get("keywords")
    clock.now += 61
    task = asyncio.create_task(manager.run())
    try:
        await eventually(lambda: registry.state("embedder") == "not_loaded",
                         what="the idle embedder unloaded")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert registry.state("embedder") == "not_loaded"
    assert registry.state("keywords") == "loaded"  # TTL 0
    assert manager.events == []  # no cleanup: memory stayed below the soft threshold


async def test_event_history_is_a_ring_buffer(memory: FakeMemory) -> None:
    manager = MemoryManager(MemorySettings(), reader=memory, history=5)
    for i in range(7):
        await manager.cleanup("soft", f"round {i}")
    assert [event.reason for event in manager.events] == [f"round {i}" for i in range(2, 7)]


async def test_snapshot(
    manager: MemoryManager,
    memory: FakeMemory,
    registry: ModelRegistry,
    cache: ByteLRUCache[str, str],
) -> None:
    await registry.get("embedder")
    memory.set(150)
    await manager.cleanup("soft", "test")
    cache.put("q", "v")  # after the cleanup, which clears caches
    memory.set(120)
    snap = manager.snapshot()
    assert snap["status"] == "degraded"
    assert snap["sample"]["rss"] == 120 * MIB
    assert snap["thresholds"] == {
        "soft_bytes": SOFT_MB * MIB,
        "emergency_bytes": EMERGENCY_MB * MIB,
    }
    assert snap["caches"][0]["name"] == "queries" and snap["caches"][0]["entries"] == 1
    assert {model["name"] for model in snap["models"]} == {"embedder", "reranker", "keywords"}
    [event] = snap["events"]
    assert event["level"] == "soft" and isinstance(event["actions"], list)
    memory.set(250)
    assert manager.snapshot()["status"] == "critical"
    memory.fail_next = 1
    assert manager.snapshot()["sample"]["rss"] == 250 * MIB  # the latest sample stands in


async def test_expire_caches(
    manager: MemoryManager, clock: FakeClock, cache: ByteLRUCache[str, str]
) -> None:
    cache.put("a", "1")
    assert await manager.expire_caches() == 0
    clock.now += 100
    assert await manager.expire_caches() > 0
    assert len(cache) == 0


def test_real_process_readings_and_release() -> None:
    sample = read_process_memory()
    assert sample.rss > 10 * MIB
    assert sample.vms >= sample.rss
    assert 0 < sample.percent < 100
    release_memory(1)
    assert isinstance(malloc_trim(), bool)


async def test_soft_cleanup_unloads_models_idle_shorter_than_their_ttl(
    memory: FakeMemory, clock: FakeClock, registry: ModelRegistry
) -> None:
    """Under memory pressure a model unused for ``soft_idle_seconds`` goes, TTL or not;
    TTL 0 ("never") and models used just now stay."""
    settings = MemorySettings(soft_limit_mb=SOFT_MB, emergency_limit_mb=EMERGENCY_MB,
                              soft_idle_seconds=20)
    manager = MemoryManager(settings, reader=memory, clock=clock)
    manager.register_registry(registry)
    await registry.get("embedder")
    await registry.get("keywords")
    clock.now += 30  # past soft_idle_seconds, well within the 60 s TTL
    await registry.get("reranker")
    memory.set(150)
    await manager.check()
    assert registry.state("embedder") == "not_loaded"
    assert registry.state("reranker") == "loaded"
    assert registry.state("keywords") == "loaded"
    assert (await registry.unload_idle()) == []  # plain idle sweeps still follow the TTL


def test_malloc_arenas_are_capped_unless_the_environment_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ragd.ops.memory import limit_malloc_arenas

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas(0) is False  # 0: glibc's default stays
    assert limit_malloc_arenas(2) is True  # this suite runs on Linux with glibc
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas(2) is False  # glibc already follows the variable


async def test_snapshot_keeps_an_rss_history_for_plots(
    memory: FakeMemory, clock: FakeClock
) -> None:
    manager = MemoryManager(MemorySettings(), reader=memory, clock=clock)
    for mb in (100, 110, 120):
        memory.set(mb)
        await manager.check()
        clock.now += 30
    history = manager.snapshot()["history"]
    assert [point["rss"] for point in history] == [100 * MIB, 110 * MIB, 120 * MIB, 120 * MIB]
    times = [point["at"] for point in history]
    assert times == sorted(times) and times[1] - times[0] == 30
