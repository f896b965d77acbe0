"""A 10 ms ticker on the running loop that keeps its worst lateness: how long something held
the event loop while it ran (tests of work moved off the loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass
class Lateness:
    worst: float = 0.0  # seconds: the latest any tick ran
    stop: bool = False


@asynccontextmanager
async def lateness_ticker(interval: float = 0.01) -> AsyncIterator[Lateness]:
    """Tick every ``interval`` while the block runs (it starts ticking first)."""
    lateness = Lateness()

    async def tick() -> None:
        while not lateness.stop:
            t = time.monotonic()
            await asyncio.sleep(interval)
            lateness.worst = max(lateness.worst, time.monotonic() - t - interval)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)  # the ticker runs
    try:
        yield lateness
    finally:
        lateness.stop = True
        await ticker
