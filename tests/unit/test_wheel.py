"""Coarse timers (bgplb/wheel.py) and SystemClock.call_at, which uses them."""

from __future__ import annotations

import asyncio

import pytest

from bgplb.clock import SystemClock
from bgplb.wheel import TimerWheel


async def test_callbacks_in_one_slot_share_a_loop_timer_and_run_in_order() -> None:
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(loop, resolution=0.05)
    ran: list[tuple[str, float]] = []
    base = (loop.time() // 0.05 + 2) * 0.05  # the start of a slot, 100 ms away
    for name, offset in (("b", 0.03), ("a", 0.01), ("c", 0.049)):
        wheel.call_at(base + offset, lambda n: ran.append((n, loop.time())), name)
    assert len(wheel._slots) == 1  # one loop timer for the three
    await asyncio.sleep(base + 0.1 - loop.time())
    assert [name for name, _ in ran] == ["b", "a", "c"]  # the order they were added
    for _, at in ran:
        assert base + 0.049 <= at <= base + 0.05 + 0.03  # never early; at the slot's end
    assert len(wheel) == 0


async def test_a_cancelled_timer_does_not_run_and_a_failing_one_does_not_stop_the_rest() -> None:
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    wheel = TimerWheel(loop, resolution=0.01)
    ran: list[str] = []

    def fail() -> None:
        raise RuntimeError("boom")

    when = loop.time() + 0.02
    cancelled = wheel.call_at(when, ran.append, "cancelled")
    wheel.call_at(when, fail)
    wheel.call_at(when, ran.append, "after")
    cancelled.cancel()
    await asyncio.sleep(0.06)
    assert ran == ["after"]
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], RuntimeError)
    loop.set_exception_handler(None)


async def test_close_drops_every_pending_timer() -> None:
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(loop)
    ran: list[int] = []
    for i in range(5):
        wheel.call_later(0.01 * i, ran.append, i)
    assert len(wheel) == 5
    wheel.close()
    await asyncio.sleep(0.08)
    assert ran == []
    assert len(wheel) == 0


async def test_resolution_must_be_positive() -> None:
    with pytest.raises(ValueError, match="resolution"):
        TimerWheel(asyncio.get_running_loop(), resolution=0)


def test_system_clock_timers_follow_the_running_loop() -> None:
    """One SystemClock used from two event loops in turn (as the CLI and tests do): each
    loop gets its own wheel; a timer is never due before its time."""
    clock = SystemClock()

    async def once() -> float:
        fired = asyncio.get_running_loop().create_future()
        due = clock.now() + 0.03
        clock.call_at(due, lambda: fired.set_result(clock.now()))
        return await asyncio.wait_for(fired, 1.0) - due

    for _ in range(2):
        late = asyncio.run(once())
        assert 0 <= late < 0.01 + 0.05  # up to one slot late (+ scheduling slack)


async def test_a_crowded_slot_gives_the_loop_turns_and_keeps_its_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slot whose callbacks take longer than the budget runs them over several turns of
    the loop (another callback gets in between), in the order they were added."""
    import time

    monkeypatch.setattr("bgplb.wheel.BUDGET", 0.002)
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(loop, resolution=0.01)
    ran: list[str] = []

    def slow(name: str) -> None:
        time.sleep(0.001)  # 1 ms of work each: 20 of them are ~10 budgets
        ran.append(name)

    when = loop.time() + 0.02
    for i in range(20):
        wheel.call_at(when, slow, f"t{i:02d}")
    interleaved: list[int] = []

    def ticker() -> None:  # what the event loop also has to run
        interleaved.append(len(ran))
        if len(ran) < 20:
            loop.call_soon(ticker)

    wheel.call_at(when - 0.01, ticker)  # running before the crowded slot, then every turn
    await asyncio.sleep(0.1)
    assert ran == [f"t{i:02d}" for i in range(20)]
    # the ticker ran in between the slot's callbacks, not only before and after all 20
    assert any(0 < n < 20 for n in interleaved), interleaved


async def test_close_stops_the_rest_of_a_crowded_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr("bgplb.wheel.BUDGET", 0.001)
    loop = asyncio.get_running_loop()
    wheel = TimerWheel(loop, resolution=0.01)
    ran: list[int] = []

    def slow(i: int) -> None:
        time.sleep(0.002)
        ran.append(i)
        if i == 0:
            wheel.close()

    when = loop.time() + 0.02
    for i in range(5):
        wheel.call_at(when, slow, i)
    await asyncio.sleep(0.08)
    assert ran == [0]
