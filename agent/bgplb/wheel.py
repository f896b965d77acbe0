"""Coarse timers: callbacks due in the same ``resolution`` slot share one event-loop timer.

Why: at 1,000 probes a second, a loop timer per probe start and per probe timeout (a
``TimerHandle``, a push and a pop on the loop's heap, each comparing handles in Python, and
a loop iteration of its own) was several percent of a core (bench/, py-spy). Here the
callbacks due in one slot are a list behind a single loop timer; they run in the order they
were added, at the end of their slot: never early, at most ``resolution`` late. For
periodic work this shifts each schedule by a constant phase, so an interval stays an
interval (a failure is still found interval/2 after it happens, on average). A slot's
callbacks run for at most ~``BUDGET`` seconds in one go; the rest follow after a turn of the
loop (``call_soon``), in order: 10 probe starts in one callback were 5-100 ms on a busy host.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from .cooperative import BUDGET

RESOLUTION = 0.01  # seconds


class WheelTimer:
    """One callback in a slot; :meth:`cancel` keeps it from running."""

    __slots__ = ("args", "callback")

    def __init__(self, callback: Callable[..., None], args: tuple[object, ...]) -> None:
        self.callback: Callable[..., None] | None = callback
        self.args = args

    def cancel(self) -> None:
        self.callback = None
        self.args = ()


class TimerWheel:
    """Slotted timers on ``loop`` (whose clock is ``loop.time()``); ``close()`` drops them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, resolution: float = RESOLUTION) -> None:
        if resolution <= 0:
            raise ValueError(f"resolution must be > 0 (got {resolution})")
        self.loop = loop
        self._resolution = resolution
        self._slots: dict[int, tuple[asyncio.TimerHandle, list[WheelTimer]]] = {}
        self._closed = False  # a slot's rest waiting for its turn must not run after close()

    def call_at(self, when: float, callback: Callable[..., None], *args: object) -> WheelTimer:
        """Call ``callback(*args)`` once ``loop.time()`` has reached ``when`` (the end of its
        slot, so up to ``resolution`` later)."""
        timer = WheelTimer(callback, args)
        slot = math.ceil(when / self._resolution)
        found = self._slots.get(slot)
        if found is None:
            handle = self.loop.call_at(slot * self._resolution, self._run, slot)
            found = self._slots[slot] = (handle, [])
        found[1].append(timer)
        return timer

    def call_later(self, delay: float, callback: Callable[..., None], *args: object) -> WheelTimer:
        return self.call_at(self.loop.time() + delay, callback, *args)

    def _run(self, slot: int) -> None:
        _, timers = self._slots.pop(slot)
        self._run_from(timers, 0)

    def _run_from(self, timers: list[WheelTimer], start: int) -> None:
        deadline = time.perf_counter() + BUDGET
        for i in range(start, len(timers)):
            if self._closed:
                return
            if i > start and time.perf_counter() >= deadline:
                self.loop.call_soon(self._run_from, timers, i)
                return
            timer = timers[i]
            callback = timer.callback
            if callback is None:
                continue
            timer.callback = None
            try:
                callback(*timer.args)
            except Exception as exc:  # one failing callback must not stop the others
                self.loop.call_exception_handler(
                    {"message": f"timer callback {callback!r} failed", "exception": exc}
                )

    def __len__(self) -> int:
        """Callbacks waiting (cancelled ones included until their slot is due)."""
        return sum(len(timers) for _, timers in self._slots.values())

    def close(self) -> None:
        self._closed = True
        for handle, _ in self._slots.values():
            handle.cancel()
        self._slots.clear()
