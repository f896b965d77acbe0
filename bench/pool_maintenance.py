"""Benchmark 4b: planned maintenance in pool mode (issue 15), the control as its baseline.

``python -m bench.pool_maintenance [--reps 3] [--rate 20]`` (root). Runs in one virtme-ng VM
(TCG) when this kernel lacks IPVS: the lab is containerlab/pool.clab.yml, rebuilt by the lab
runner (tests/lab/runner.py). Per repetition, on the pool lab and then on the control lab
(same topology, agents with scheduler wlc, no sloppy_tcp, no connection sync), the scenario
of tests/lab/pool.py under traffic: drain lb2, SIGKILL lb3's agent, undrain lb4 (started
drained), undrain lb2, while the client opens new connections at ``--rate``/s (port 80) and
keeps 100 echo connections (a byte every 0.5 s each, checked). Between repetitions each lab
is put back (lb3's agent restarted, lb4 drained, 3-way ECMP). Records (bench/results.json):
failed requests and long-lived resets summed over the repetitions, goal 0 in pool mode, the
control's value as the baseline; raw per-step numbers in bench/raw/pool-maintenance.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .lab import Record, save, save_raw

BENCH = "4b pool maintenance (issue 15)"
COMMAND = "python -m bench.pool_maintenance (kernel VM, containerlab/pool.clab.yml)"
REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "_work" / "pool-maintenance.json"  # written in the VM (_work is shared)


def _reset(lab: Any) -> None:
    """Back to lb1..lb3 announced: lb3's agent again, lb4 drained."""
    from tests.lab.observe import drain

    lab.start_agent("lb3")
    drain(lab, "lb4", "web")
    lab.wait_ecmp(3, timeout=600, say=print)


def measure(reps: int, rate: float) -> dict[str, Any]:
    """In the VM: every repetition of both variants; returns the raw results."""
    from tests.lab.pool import pool_lab, run_steps
    from tests.lab.runner import teardown

    out: dict[str, Any] = {"reps": reps, "rate": rate, "pool": [], "control": []}
    for control in (False, True):
        key = "control" if control else "pool"
        lab = pool_lab(control=control, keep_logs=REPO / "_work" / "lab-logs-bench")
        teardown(lab.topology.name)
        t0 = time.monotonic()
        lab.up(say=print, timeout=600)
        out[f"{key}_up_seconds"] = round(time.monotonic() - t0, 1)
        try:
            for rep in range(1, reps + 1):
                if rep > 1:
                    _reset(lab)
                print(f"== {key} rep {rep}/{reps}", flush=True)
                r = run_steps(lab, lab.dir / f"rep{rep}", control=control, rate=rate)
                print(
                    f"   moved {r.moved}, reset {r.reset}/{r.held}, failed {r.failed}/{r.requests}",
                    flush=True,
                )
                out[key].append(asdict(r))
        finally:
            lab.down()
    return out


def records(out: dict[str, Any]) -> list[Record]:
    recs: list[Record] = []

    def total(key: str, field: str) -> int:
        return int(sum(r[field] for r in out[key]))

    n = len(out["pool"])
    for field, what, unit in (
        ("reset", "long-lived connections reset", "connections"),
        ("failed", "new connections failed", "requests"),
    ):
        base = float(total("control", field)) if out["control"] else None
        recs.append(
            Record(
                BENCH,
                f"pool: {what} (sum over reps)",
                unit,
                total("pool", field),
                "<= 0",
                base,
                n,
                COMMAND,
            )
        )
        recs.append(
            Record(
                BENCH,
                f"control (wlc, no sloppy, no sync): {what} (sum over reps)",
                unit,
                total("control", field) if out["control"] else None,
                None,
                None,
                len(out["control"]),
                COMMAND,
            )
        )
    for key in ("pool", "control"):
        if not out[key]:
            continue
        moved = sum(s["moved"] for r in out[key] for s in r["steps"])
        recs += [
            Record(BENCH, f"{key}: echo flows moved between LB nodes (sum over reps)",
                   "flows", moved, None, None, len(out[key]), COMMAND),
            Record(BENCH, f"{key}: long-lived connections (sum over reps)", "connections",
                   total(key, "held"), None, None, len(out[key]), COMMAND),
            Record(BENCH, f"{key}: new connections (sum over reps)", "requests",
                   total(key, "requests"), None, None, len(out[key]), COMMAND),
            Record(BENCH, f"{key}: longest echo stall:max", "ms",
                   max(r["max_stall"] for r in out[key]) * 1000, None, None, len(out[key]),
                   COMMAND),
        ]  # fmt: skip
    return recs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pool_maintenance")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--native", action="store_true", help="run here (needs IPVS)")
    args = ap.parse_args(argv)
    from tests.lab.vm import in_vm, native

    if args.native or native():
        OUT.write_text(json.dumps(measure(args.reps, args.rate), indent=1) + "\n")
        if args.native:
            return 0
    else:
        OUT.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "bench.pool_maintenance", "--native"]
        cmd += ["--reps", str(args.reps), "--rate", str(args.rate)]
        status = in_vm(cmd, REPO / "_work" / "pool-maintenance.log", timeout=3 * 3600)
        if status != 0 or not OUT.exists():
            print(f"the VM run failed (exit {status}): nothing recorded", file=sys.stderr)
            return 1
    out = json.loads(OUT.read_text())
    save_raw("pool-maintenance", out)
    recs = records(out)
    save(recs)
    for r in recs:
        print(f"{r.metric}: {r.value} {r.unit} (goal {r.goal}, baseline {r.baseline})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
