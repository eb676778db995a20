"""The registry's figures read time only from its injected clocks: moments are kept on the
monotonic clock and converted to wall time with the injected wall clock."""

from __future__ import annotations

from ragd.models.registry import ModelRegistry
from ragd.settings import ModelsSettings
from tests.fake_clock import FakeClock

EPOCH = 1_700_000_000.0


async def test_stats_convert_moments_with_the_injected_wall_clock() -> None:
    clock, wall = FakeClock(500.0), FakeClock(EPOCH)
    registry = ModelRegistry(ModelsSettings(), clock=clock, wall_clock=wall, rss=lambda: 0)
    try:
        model = registry.register("model", lambda: "loaded", kind="test", idle_ttl=0)
        assert await model.run(lambda instance: instance) == "loaded"
        clock.advance(10)
        wall.advance(10)
        [stats] = registry.stats()
        assert stats.loaded_at == EPOCH
        assert stats.last_used_at == EPOCH
        assert stats.idle_seconds == 10
        # A step of the wall clock moves the dates shown, never the idle time measured.
        wall.advance(-3600)
        [stats] = registry.stats()
        assert stats.loaded_at == EPOCH - 3600
        assert stats.idle_seconds == 10
    finally:
        await registry.close()
