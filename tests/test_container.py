"""Wiring shared by the processes on one data dir: housekeeping runs in one of them."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from ragd.container import (
    HOUSEKEEPING_LOCK,
    PRUNE_INTERVAL_SECONDS,
    open_services,
    run_housekeeping,
)
from ragd.ops.files import Leadership
from tests.conftest import make_settings
from tests.loop_clock import LoopClock
from tests.waiting import eventually, settle


async def test_one_process_prunes_and_another_takes_over_when_it_exits(
    tmp_path: Path, loop_clock: LoopClock
) -> None:
    settings = make_settings(tmp_path / "data")
    async with open_services(settings) as first, open_services(settings) as second:
        lock = settings.data_dir / HOUSEKEEPING_LOCK
        leaders = [Leadership(lock), Leadership(lock)]
        tasks = [asyncio.create_task(run_housekeeping(services, leader=leader))
                 for services, leader in zip((first, second), leaders, strict=True)]
        try:
            await settle()
            assert not any(leader.held for leader in leaders)  # nothing before the first tick
            loop_clock.advance(PRUNE_INTERVAL_SECONDS)
            await eventually(lambda: any(leader.held for leader in leaders),
                             what="a process leads the housekeeping")
            loop_clock.advance(PRUNE_INTERVAL_SECONDS)  # the other tries again: still one
            await settle()
            holder = next(i for i, leader in enumerate(leaders) if leader.held)
            other = 1 - holder
            assert not leaders[other].held
            tasks[holder].cancel()  # the leading process exits: its lock goes with it
            with contextlib.suppress(asyncio.CancelledError):
                await tasks[holder]
            assert not leaders[holder].held
            loop_clock.advance(PRUNE_INTERVAL_SECONDS)
            await eventually(lambda: leaders[other].held, what="the other process takes over")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
