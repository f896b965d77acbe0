"""Event loop lag: how late a callback scheduled every 10 ms actually runs.

Everything the agent does shares one event loop, so anything that holds it (a YAML parse,
an fsync, a big status page, a long C call that keeps the GIL) delays health probes,
timers and BGP keepalives alike. :class:`LoopLagMonitor` measures that from the inside: a
callback due every ``interval`` records ``ran - due`` (never negative). The agent feeds
``bgplb_event_loop_lag_seconds`` with it.

It reads the loop's own clock (``loop.time()``, the monotonic clock ``SystemClock`` uses
too), not the injected :class:`~bgplb.clock.Clock`: what it measures is the real loop's
lateness, which a ``FakeClock`` cannot show, and ``Clock.call_at`` is a coarse 10 ms timer
(bgplb/wheel.py) that would add its own lateness.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

INTERVAL = 0.010  # seconds between two ticks


class LoopLagMonitor:
    """Calls ``observe(lag_seconds)`` about every ``interval`` from the running loop."""

    def __init__(self, observe: Callable[[float], None], interval: float = INTERVAL) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.observe = observe
        self.interval = interval
        self.ticks = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start ticking on the running loop (idempotent)."""
        if self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._schedule(self._loop.time() + self.interval)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, due: float) -> None:
        assert self._loop is not None
        self._handle = self._loop.call_at(due, self._tick, due)

    def _tick(self, due: float) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.ticks += 1
        try:
            self.observe(max(0.0, now - due))
        finally:
            # the next tick is due one interval from now: a stall counts once, as one late
            # tick, instead of a burst of catch-up ticks that would each look late
            self._schedule(now + self.interval)
