"""Long pure computations that share the event loop: run as a generator, yield to the loop
by a time budget.

A pass over 1,000 services spends 0.1-0.5 s computing its desired state (bench/RESULTS.md,
"Event loop lag"); done in one go that is 0.1-0.5 s in which no probe result, API call, BGP
keepalive or timer runs. A thread does not help (it holds the GIL for its switch interval,
5 ms, at every turn). So the pure functions are written as generators that ``yield`` between
items (services, VIPs) and return their result; :func:`run_to_end` runs one in one go (the
pure callers, the tests), :func:`run_cooperatively` gives the loop a turn whenever ``budget``
seconds of work have passed since the last one. Same result either way: the inputs are
immutable snapshots taken before the first step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from typing import TypeVar

T = TypeVar("T")

Steps = Generator[None, None, T]  # yields between items, returns the result
BUDGET = 0.002  # seconds of work between two turns of the loop (goal: loop lag p99 <= 5 ms)


def run_to_end(steps: Steps[T]) -> T:
    """The generator's result, without yielding to anything."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


async def run_cooperatively(
    steps: Steps[T], budget: float | None = None, timer: Callable[[], float] = time.perf_counter
) -> T:
    """The generator's result; the loop gets a turn after every ``budget`` seconds of work
    (None: ``BUDGET``)."""
    budget = BUDGET if budget is None else budget
    deadline = timer() + budget
    while True:
        try:
            next(steps)
        except StopIteration as done:
            if timer() >= deadline - budget / 2:  # over half a budget since the last turn:
                await asyncio.sleep(0)  # one more, or it adds up with the caller's next piece
            return done.value  # type: ignore[no-any-return]
        if timer() >= deadline:
            await asyncio.sleep(0)
            deadline = timer() + budget
