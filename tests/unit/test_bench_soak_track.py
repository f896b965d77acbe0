"""The soak's honest counts (bench/soak_track.py, bench/soak_truth.drain_allowance): per route
change delay / late / lost, wrong episodes counted once, and the drain allowance."""

from __future__ import annotations

import pytest
from bench.soak_records import run_delay
from bench.soak_truth import Checker, Truth, drain_allowance

A, B, X = "10.99.1.1", "10.99.1.2", "10.99.1.3"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[Truth, Checker, Clock]:
    clock = Clock()
    truth = Truth({"a": A, "b": B, "x": X}, {"a", "b"}, clock=clock)
    checker = Checker(truth)
    checker.compare({A, B}, clock.now, "rib")  # seeds the RIB tracker: a, b announced
    for vip in (A, B):
        checker.event(vip, True, clock.now)  # and the FIB one
    checker.event(X, False, clock.now)
    return truth, checker, clock


def test_drain_allowance_counts_two_updates_per_route_for_a_drain() -> None:
    # re-announce with GRACEFUL_SHUTDOWN + withdraw: 2 updates a route behind drain_delay
    assert drain_allowance(1000, 2.0, 3.0, 0.01, undrain=False) == pytest.approx(25.0)
    assert drain_allowance(1000, 2.0, 3.0, 0.01, undrain=True) == pytest.approx(13.0)
    assert drain_allowance(3, 2.0, 3.0, 0.01, undrain=False) == pytest.approx(5.06)
    # shorter than the 30 s a node stays drained: a withdraw that never comes is judged
    assert drain_allowance(1000, 2.0, 3.0, 0.01, undrain=False) < 30


def test_change_reached_in_time_gives_its_delay_and_nothing_wrong() -> None:
    truth, checker, clock = make()
    with truth.change(["b"], 10.0, "backend down"):
        truth.down.add("b")
    clock.now += 4.0
    checker.event(B, False, clock.now)  # withdrawn 4 s after the change started
    clock.now += 20.0
    checker.finish(clock.now)
    fib = checker.fib
    assert fib.changes == 1
    assert fib.delays == [pytest.approx(4.0)]
    assert (fib.late, fib.lost, fib.episodes, fib.wrong_seconds) == (0, 0, 0, 0.0)


def test_late_change_is_one_episode_however_many_samples_see_it() -> None:
    truth, checker, clock = make()
    with truth.change(["b"], 5.0, "backend down"):
        truth.down.add("b")
    for _ in range(30):  # b still at r1 for 30 s: 25 s beyond the allowance
        clock.now += 1.0
        checker.compare({A, B}, clock.now, "rib")
    checker.compare({A}, clock.now + 0.5, "rib")
    rib = checker.rib
    assert rib.episodes == 1  # not 25 (samples) nor 25 x routes
    assert rib.late == 1
    assert rib.lost == 0
    assert rib.late_over == [pytest.approx(25.5)]
    assert rib.wrong_seconds == pytest.approx(25.5)
    assert checker.wrong_total == 25  # the old per-sample count, for comparison


def test_route_never_right_before_the_next_change_is_lost() -> None:
    truth, checker, clock = make()
    with truth.change(None, 25.0, "node drain"):
        truth.node_drained = True
    clock.now += 10.0
    checker.event(A, False, clock.now)  # a withdrawn; b's withdraw never comes
    clock.now += 20.0  # undrained 30 s after the drain
    with truth.change(None, 13.0, "node undrain"):
        truth.node_drained = False
    clock.now += 1.0
    checker.event(A, True, clock.now)
    clock.now += 60.0
    checker.finish(clock.now)
    fib = checker.fib
    assert fib.changes == 4  # a, b drained and undrained (x not configured: none)
    assert sorted(fib.delays) == [0.0, pytest.approx(1.0), pytest.approx(10.0)]  # b's undrain: 0
    assert (fib.lost, fib.lost_by_kind) == (1, {"node drain": 1})
    assert fib.late == 0
    assert fib.episodes == 1
    assert fib.wrong_seconds == pytest.approx(5.0)  # 25 s .. 30 s


def test_superseded_inside_the_allowance_is_not_judged() -> None:
    truth, checker, clock = make()
    with truth.change(["b"], 10.0, "backend down"):
        truth.down.add("b")
    clock.now += 3.0
    with truth.change(["b"], 10.0, "backend up"):  # back before the withdraw arrived
        truth.down.discard("b")
    clock.now += 30.0
    checker.finish(clock.now)
    fib = checker.fib
    assert (fib.superseded, fib.lost, fib.late, fib.episodes) == (1, 0, 0, 0)
    assert fib.changes == 2  # down, then up; the up was right at once
    assert fib.delays == [0.0]


def test_a_flip_nobody_asked_for_is_an_episode() -> None:
    _, checker, clock = make()
    clock.now += 5.0
    checker.event(A, False, clock.now)  # e.g. a timing-only reload withdrew a healthy service
    clock.now += 0.6
    checker.event(A, True, clock.now)
    clock.now += 5.0
    checker.event(A, False, clock.now)
    clock.now += 0.4
    checker.event(A, True, clock.now)
    checker.finish(clock.now + 1)
    fib = checker.fib
    assert fib.episodes == 2
    assert fib.wrong_seconds == pytest.approx(1.0)
    assert fib.changes == 0


def test_change_that_keeps_the_expectation_is_not_a_route_change() -> None:
    truth, checker, clock = make()
    truth.down.add("b")  # b's backend already down (set without a window: test setup)
    checker.event(B, False, clock.now)
    with truth.change(None, 25.0, "node drain"):
        truth.node_drained = True
    assert checker.fib.changes == 1  # a only: b and x stay withdrawn


def test_fib_sample_corrects_a_missed_event_after_the_guard() -> None:
    _, checker, clock = make()
    clock.now += 10.0
    checker.compare({A}, clock.now, "fib")  # B gone without an event: a gap
    assert checker.fib.gaps == 1
    assert checker.fib.lines["b"].seen is False
    checker.event(A, False, clock.now + 0.1)  # an event just in...
    checker.compare({A}, clock.now + 0.5, "fib")  # ...not yet in this sample: no correction
    assert checker.fib.gaps == 1
    assert checker.fib.lines["a"].seen is False


def test_run_delay_per_role_skips_a_restarted_pid() -> None:
    def sample(t: float, exabgp: list[int]) -> dict[str, object]:
        return {"t": t, "schedstat": {"exabgp": exabgp}}

    samples = [
        sample(0.0, [10, 0, 0, 0]),
        sample(5.0, [10, 1, int(2.5e9), 9]),  # waited 2.5 s of 5
        sample(10.0, [11, 1, int(0.1e9), 3]),  # restarted: a new pid, no delta
        sample(15.0, [11, 1, int(0.6e9), 3]),  # 0.5 s of 5
    ]
    assert run_delay(samples) == {"exabgp": pytest.approx(100 * 3.0 / 10.0)}
