"""The pool lab (issue 15, containerlab/pool.clab.yml): connections survive LB-node drain,
death and addition in pool mode, and do not in the control, measured in the same run.

One fixture runs everything (one VM boot, two lab builds): the pool lab's four steps under
traffic (drain lb2, SIGKILL lb3's agent, add lb4, undrain lb2), the silent death of lb1, then
the same four steps on the control lab (scheduler wlc, no sloppy_tcp, no connection sync).
The numbers are printed (``-s`` or the log) and asserted below. Runs before the ECMP tests
(tests/lab/vm.py), so the ECMP lab is not up meanwhile.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest

from .marks import LAB
from .pool import INTERVAL, RATE, DeathResult, RunResult, pool_lab, run_steps, silent_death
from .runner import REPO, teardown

pytestmark = LAB

# new connections per second and seconds between two echoes of a long-lived connection: the
# issue asks 50/s and 100 ms; a TCG guest carries less (tests/lab/pool.py), override on KVM
RATE_NOW = float(os.environ.get("BGPLB_POOL_RATE", str(RATE)))
ECHO_INTERVAL = float(os.environ.get("BGPLB_POOL_ECHO_INTERVAL", str(INTERVAL)))
HELD = 100
HOLD_TIME = 9.0  # the agents' BGP hold time (containerlab/pool/lb*/config.yaml)


@dataclass(frozen=True)
class Runs:
    pool: RunResult
    death: DeathResult
    control: RunResult
    seconds: float


def _show(r: RunResult) -> None:
    kind = "control" if r.control else "pool"
    print(
        f"\n[{kind}] requests {r.requests} at {r.rate}/s, failed {r.failed} {r.failed_errors}; "
        f"echo connections {r.held} (opened on {r.opened}), reset {r.reset} {r.reasons}, "
        f"longest stall {r.max_stall:.2f}s, echoes {r.echo_rate}/s"
    )
    for s in r.steps:
        print(
            f"[{kind}]   {s.name}: {s.seconds:.1f}s, moved {s.moved}/{s.tracked} "
            f"{s.moved_pairs}, vanished {s.vanished}"
        )


@pytest.fixture(scope="module")
def runs() -> Runs:
    t0 = time.monotonic()
    logs = REPO / "_work" / "lab-logs-test"
    lab = pool_lab(keep_logs=logs)
    teardown(lab.topology.name)
    lab.up(say=print, timeout=600)
    try:
        pool = run_steps(
            lab, lab.dir / "steps", control=False, rate=RATE_NOW, held=HELD, interval=ECHO_INTERVAL
        )
        _show(pool)
        death = silent_death(
            lab, lab.dir / "death", "lb1", rate=RATE_NOW, held=HELD, interval=ECHO_INTERVAL
        )
        print(f"\n[pool] silent death: {death}")
    finally:
        lab.down()
    ctl = pool_lab(control=True, keep_logs=logs)
    teardown(ctl.topology.name)
    ctl.up(say=print, timeout=600)
    try:
        control = run_steps(
            ctl, ctl.dir / "steps", control=True, rate=RATE_NOW, held=HELD, interval=ECHO_INTERVAL
        )
        _show(control)
    finally:
        ctl.down()
    took = time.monotonic() - t0
    print(f"\npool lab: pool + silent death + control in {took:.0f}s")
    return Runs(pool, death, control, took)


def test_pool_flows_really_moved_at_every_step(runs: Runs) -> None:
    """Else the zero resets below would prove nothing."""
    for step in runs.pool.steps:
        assert step.moved > 0, f"{step.name}: no echo flow changed LB node ({step})"
    assert [s.name for s in runs.pool.steps] == [
        "drain lb2",
        "SIGKILL lb3's agent",
        "add lb4",
        "undrain lb2",
    ]


def test_pool_zero_resets_zero_failed_requests(runs: Runs) -> None:
    p = runs.pool
    assert p.held == HELD
    assert p.reset == 0, f"{p.reset} long-lived connections broke: {p.reasons}"
    assert p.requests > 0
    assert p.failed == 0, f"{p.failed} of {p.requests} new connections failed: {p.failed_errors}"
    # "vanished" (a flow on no node's set for 4.5 s after the step) is a stall, not a reset:
    # run 3 saw 28 at the drain with 0 resets and a 6.4 s longest echo wait in a loaded guest.
    # The client's own count above is the measure; the stalls are reported (-s).


def test_control_resets_moved_connections(runs: Runs) -> None:
    c = runs.control
    moved_or_gone = sum(s.moved + s.vanished for s in c.steps)
    assert moved_or_gone > 0, f"no flow moved in the control: {c.steps}"
    assert c.reset > 0, f"the control kept every moved connection: {c}"
    assert c.reset > runs.pool.reset


def test_silent_death_recovers_after_hold_timer(runs: Runs) -> None:
    d = runs.death
    assert d.flows_on_node > 0, "lb1 carried no echo flow when it froze"
    # withdrawn by the hold timer (not before: nothing told the routers), with TCG slack
    assert HOLD_TIME - 3.5 <= d.withdraw_seconds <= HOLD_TIME + 30, d
    assert "stalled" not in d.reasons, f"connections never recovered: {d}"
