"""The ``make demo`` step of the pool lab: pool mode vs the control, side by side.

Builds the pool lab, runs the four maintenance steps under traffic (tests/lab/pool.py), removes
it, then the same on the control lab (wlc, no sloppy_tcp, no sync), and prints both.
"""

from __future__ import annotations

from pathlib import Path

from .pool import RunResult, pool_lab, run_steps
from .runner import teardown


def both(workdir: Path, say: object = print) -> tuple[RunResult, RunResult]:
    out = []
    for control in (False, True):
        lab = pool_lab(control=control, keep_logs=workdir / "lab-logs")
        teardown(lab.topology.name)
        lab.up(say=print, timeout=600)
        try:
            out.append(run_steps(lab, lab.dir / "steps", control=control))
        finally:
            lab.down()
    return out[0], out[1]


def table(pool: RunResult, control: RunResult) -> str:
    rows = [
        ("echo flows that changed LB node", str(pool.moved), str(control.moved)),
        (
            "long-lived connections reset",
            f"{pool.reset}/{pool.held}",
            f"{control.reset}/{control.held}",
        ),
        (
            "new connections failed",
            f"{pool.failed}/{pool.requests}",
            f"{control.failed}/{control.requests}",
        ),
        ("new connections per second", f"{pool.rate}", f"{control.rate}"),
        ("longest echo stall (s)", f"{pool.max_stall:.2f}", f"{control.max_stall:.2f}"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"{'(drain lb2, kill lb3, add lb4, undrain lb2)':<{width}}  {'pool':>9}  {'control':>9}"
    ]
    lines += [f"{a:<{width}}  {b:>9}  {c:>9}" for a, b, c in rows]
    return "\n".join(lines)
