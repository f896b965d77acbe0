"""PassTimer: where a slow reconcile pass spent its time, logged once (passlog.py)."""

from __future__ import annotations

import logging

import pytest

from bgplb.passlog import SLOW_PASS_SECONDS, PassTimer


class Ticks:
    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t


def test_a_slow_pass_is_logged_with_its_phases(caplog: pytest.LogCaptureFixture) -> None:
    clock = Ticks()
    timer = PassTimer(clock.now)
    clock.t += 0.25
    timer.mark("desired")
    clock.t += 2.0
    timer.mark("observe")
    clock.t += 0.5
    timer.mark("observe")  # a phase marked twice adds up
    with caplog.at_level(logging.INFO, logger="bgplb.reconciler"):
        timer.log_if_slow()
    [rec] = [r for r in caplog.records if getattr(r, "event", "") == "reconcile_slow"]
    assert rec.levelno == logging.WARNING
    assert rec.__dict__["seconds"] == 2.75
    assert rec.__dict__["desired_seconds"] == 0.25
    assert rec.__dict__["observe_seconds"] == 2.5


def test_a_pass_under_the_threshold_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    clock = Ticks()
    timer = PassTimer(clock.now)
    clock.t += SLOW_PASS_SECONDS - 0.01
    timer.mark("announce")
    with caplog.at_level(logging.INFO, logger="bgplb.reconciler"):
        timer.log_if_slow()
    assert not [r for r in caplog.records if getattr(r, "event", "") == "reconcile_slow"]
