"""Time, passed in. ``SystemClock`` for the agent, ``FakeClock`` for tests."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol

from .wheel import TimerWheel


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic seconds."""

    def wall(self) -> float:
        """Seconds since the epoch (for timestamps shown to people)."""

    async def sleep(self, seconds: float) -> None: ...

    def call_at(self, when: float, callback: Callable[..., None], *args: object) -> Timer:
        """Call ``callback(*args)`` from the event loop once ``now()`` reaches ``when``
        (``SystemClock``: up to :data:`~.wheel.RESOLUTION` later)."""
        ...


class SystemClock:
    """``time.monotonic`` (the event loop's clock too). ``call_at`` is a coarse timer: those
    due in one 10 ms slot share a loop timer (bgplb/wheel.py)."""

    def __init__(self) -> None:
        self._wheel: TimerWheel | None = None

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_at(self, when: float, callback: Callable[..., None], *args: object) -> Timer:
        loop = asyncio.get_running_loop()
        wheel = self._wheel
        if wheel is None or wheel.loop is not loop:
            wheel = self._wheel = TimerWheel(loop)
        return wheel.call_at(when, callback, *args)


class _FakeTimer:
    __slots__ = ("args", "callback", "cancelled")

    def __init__(self, callback: Callable[..., None], args: tuple[object, ...]) -> None:
        self.callback, self.args, self.cancelled = callback, args, False

    def cancel(self) -> None:
        self.cancelled = True

    def done(self) -> bool:  # the sleeper protocol of ``advance``
        return self.cancelled

    def set_result(self, _: None) -> None:
        self.cancelled = True
        self.callback(*self.args)


class FakeClock:
    """A clock that moves only when a test calls ``advance``.

    ``sleep`` parks the caller until the clock passes its deadline and ``call_at`` keeps the
    callback until then; ``advance`` steps through the deadlines in order, letting the event
    loop run the woken tasks at each step.
    """

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0) -> None:
        self._t = start
        self._wall_offset = wall_offset
        self._sleepers: list[tuple[float, int, asyncio.Future[None] | _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._t

    def wall(self) -> float:
        return self._t + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._t + seconds, next(self._seq), fut))
        await fut

    def call_at(self, when: float, callback: Callable[..., None], *args: object) -> Timer:
        timer = _FakeTimer(callback, args)
        heapq.heappush(self._sleepers, (max(when, self._t), next(self._seq), timer))
        return timer

    async def settle(self, rounds: int = 20) -> None:
        """Let every runnable task run until things are quiet."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        target = self._t + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._t = max(self._t, deadline)
            if not fut.done():
                fut.set_result(None)
            await self.settle()
        self._t = target
        await self.settle()
