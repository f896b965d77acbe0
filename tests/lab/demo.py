"""``make demo``: bring the ECMP lab up and show bgp-lb at work, then tear it down.

Steps: lab up -> each router's ECMP route for the v4 and v6 VIP (3 next hops) and BFD Up to
every node -> client requests spread over lb1..lb3 -> lb1's backend stopped (withdraw time
measured) -> restarted -> lb2 drained under load (zero failed new connections expected) ->
lb3 frozen (silent death: nftables drops all its packets; how fast each router's BFD removed
it, against the hold timer) -> thawed -> teardown; then (unless `make demo POOL=0`) the
pool lab (containerlab/pool.clab.yml) against its control: resets and failed requests of
each, side by side (tests/lab/pool_demo.py). Ends with a summary table; exits non-zero if any
step failed.
Runs inside one virtme-ng VM when the running kernel lacks IPVS/dummy.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from .death import bfd_states, describe, freeze_node, thaw_node
from .observe import fib_snapshot, fib_text
from .runner import REPO, Lab, teardown
from .scenario import drain_under_load, fail_backend, restore_backend, spread
from .topology import AGENT_CONF, load_topology

ECMP = REPO / "containerlab" / "ecmp.clab.yml"
WORK = REPO / "_work"
SERVICE = "web"
FROZEN = "lb3"  # the silent death (lb1's backend fails, lb2 is drained)


@dataclass
class Step:
    name: str
    ok: bool = False
    detail: str = ""
    seconds: float = 0.0


def withdraw_bound(lab: Lab, node: str) -> float:
    """fall x interval + 2 s over the node's checks (the acceptance bound under TCG)."""
    source = lab.topology.node(node).bind_source(AGENT_CONF)
    assert source is not None
    config = yaml.safe_load(source.read_text())
    bounds = [2.0]
    for svc in config["services"]:
        for rs in svc.get("real_servers", []):
            for c in rs.get("checks", []):
                bounds.append(float(c.get("fall", 2)) * float(c.get("interval", 0.5)) + 2.0)
    return max(bounds)


_T0 = time.monotonic()


def _say(text: str) -> None:
    print(f"    [{time.monotonic() - _T0:6.1f}s] {text}", flush=True)


def run_steps(lab: Lab, workdir: Path) -> list[Step]:
    steps: list[Step] = []
    lbs = [n.name for n in lab.topology.by_role("lb")]

    def step(name: str, fn: Callable[[Step], None]) -> bool:
        s = Step(name)
        steps.append(s)
        print(f"\n==> [{len(steps)}] {name}", flush=True)
        t0 = time.monotonic()
        try:
            fn(s)
        except Exception as e:  # the summary shows it; later steps may still run
            s.ok, s.detail = False, f"{type(e).__name__}: {e}"
            traceback.print_exc()
        s.seconds = time.monotonic() - t0
        print(f"    -> {'OK' if s.ok else 'FAILED'}: {s.detail}", flush=True)
        return s.ok

    def up(s: Step) -> None:
        took = lab.up(say=_say)
        s.ok, s.detail = True, f"{len(lab.topology.nodes)} nodes, ECMP after {took:.0f}s"

    def routes(s: Step) -> None:
        snap = fib_snapshot(lab)
        for router, vip in snap:
            print(f"    {router}: {fib_text(lab, router, vip)}".replace("\n", "\n        "))
        bad = {k: v for k, v in snap.items() if sorted(v) != lbs}
        bfd = bfd_states(lab)
        for router, states in bfd.items():
            print(
                f"    {router} BFD: " + ", ".join(f"{n} {st}" for n, st in sorted(states.items()))
            )
        bfd_up = all(sorted(n for n, st in v.items() if st == "up") == lbs for v in bfd.values())
        s.ok = not bad and bfd_up
        s.detail = (
            f"{len(snap)} routes with next hops {', '.join(lbs)}; BFD Up to every node: {bfd_up}"
            if not bad
            else f"{bad}"
        )

    def traffic(s: Step) -> None:
        sp = spread(lab, count=60)
        for vip, counts in sp.counts.items():
            _say(f"{vip}: " + ", ".join(f"{n} {counts.get(n, 0)}" for n in lbs))
        _say("client packets per router: " + ", ".join(f"{r} {p}" for r, p in sp.router_rx.items()))
        every = all(counts.get(n, 0) > 0 for counts in sp.counts.values() for n in lbs)
        routers = all(p > 50 for p in sp.router_rx.values())
        s.ok = every and routers and sp.failures == 0
        per_node = {n: sum(c.get(n, 0) for c in sp.counts.values()) for n in lbs}
        s.detail = (
            f"{per_node}, failures {sp.failures} {sp.errors or ''}, "
            f"both routers carry flows: {routers}"
        )

    def failure(s: Step) -> None:
        bound = withdraw_bound(lab, "lb1")
        _say(f"killing lb1's backend; bound fall x interval + 2 s = {bound:.1f}s")
        c = fail_backend(lab, "lb1", timeout=60)
        after = spread(lab, count=20)
        on_lb1 = sum(counts.get("lb1", 0) for counts in after.counts.values())
        _say(f"after: {after.counts}, failures {after.failures}")
        s.ok = c.seconds <= bound and c.others_stable and on_lb1 == 0 and after.failures == 0
        s.detail = (
            f"lb1 withdrawn from every FIB in {c.seconds:.2f}s (bound {bound:.1f}s, "
            f"{c.polls} FIB polls), "
            f"others stable: {c.others_stable}, lb1 answers after: {on_lb1}"
        )

    def recovery(s: Step) -> None:
        c = restore_backend(lab, "lb1", timeout=60)
        s.ok = c.others_stable
        s.detail = f"lb1 back in every FIB {c.seconds:.2f}s after its backend restarted"

    def draining(s: Step) -> None:
        d = drain_under_load(lab, "lb2", SERVICE, workdir)
        _say(
            f"new connection per request: {d.requests} requests at {d.rate}/s, {d.failures} failed"
        )
        _say(
            f"open at the instant a router's ECMP set changed, reset by rehashing: "
            f"{d.in_flight_resets} {d.in_flight_errors or ''}"
        )
        _say(f"long-lived connections: {d.held} open, {d.held_reset} reset {d.held_reset_by_node}")
        s.ok = d.failures == 0 and d.rate >= 20
        s.detail = (
            f"lb2 left every FIB {d.withdraw_seconds:.2f}s after the drain; "
            f"{d.requests} requests, {d.failures} failures ({d.rate}/s), "
            f"{d.in_flight_resets} in flight at the next-hop change reset; "
            f"long-lived reset: {d.held_reset}/{d.held} (expected for flows on lb2)"
        )

    def death(s: Step) -> None:
        d = freeze_node(lab, FROZEN)
        _say(f"nft froze {FROZEN} in {d.cut_seconds:.2f}s (the clock starts when it returned)")
        for v in d.routers.values():
            _say(
                f"{v.router}: {FROZEN} left the FIB {v.low:.2f}-{v.high:.2f}s after the cut; "
                f"session reset: {v.reason}; BFD now {v.bfd}"
            )
        _say(f"while frozen: {FROZEN} answered {d.answered} requests, {d.failures} failed")
        # BFD, not the hold timer: the routers say so, and every one was well inside it
        s.ok = (
            d.by_bfd()
            and d.within(d.hold_time / 2)
            and d.others_stable
            and d.answered == 0
            and d.failures == 0
        )
        s.detail = describe(d) + (
            f", others stable: {d.others_stable}" if d.others_stable else f", {d.unexpected}"
        )

    def thawed(s: Step) -> None:
        c = thaw_node(lab, FROZEN)
        s.ok = c.others_stable
        s.detail = f"{FROZEN} back in every FIB {c.seconds:.2f}s after its packets flowed again"

    if step("bring the ECMP lab up (FRR r1 r2, bgp-lb lb1..lb3, client c1)", up):
        step("each router's ECMP route for the VIPs", routes)
        step("client requests spread across lb1..lb3", traffic)
        step("lb1's backend killed -> lb1 withdrawn", failure)
        step("lb1's backend restarted -> lb1 back", recovery)
        step("drain lb2 (API POST /api/v1/services/web/drain) under load", draining)
        step(f"{FROZEN} frozen (nft drops all its packets) -> routers' BFD withdraw it", death)
        step(f"{FROZEN} thawed -> back", thawed)
    return steps


def _table(steps: list[Step]) -> str:
    width = max(len(s.name) for s in steps)
    lines = [f"{'step':<{width}}  result  time    detail", "-" * (width + 60)]
    for s in steps:
        result = "OK" if s.ok else "FAILED"
        lines.append(f"{s.name:<{width}}  {result:<6}  {s.seconds:5.1f}s  {s.detail}")
    return "\n".join(lines)


def _with_pool() -> bool:
    """The pool lab step (two more lab builds: ~6 min in a quiet TCG guest on 2 cores) is on
    unless BGPLB_DEMO_POOL=0 (``make demo POOL=0``)."""
    return os.environ.get("BGPLB_DEMO_POOL", "1") != "0"


def pool_step() -> Step:
    """The pool lab vs its control: zero resets expected in pool mode, resets in the control."""
    from .pool_demo import both, table

    print("\n==> pool lab: drain lb2, SIGKILL lb3's agent, add lb4, undrain lb2 under traffic,")
    print("    pool mode (mh, sloppy_tcp, sync) and then the control (wlc, no sloppy, no sync)")
    t0 = time.monotonic()
    s = Step("pool mode vs control (containerlab/pool.clab.yml)")
    try:
        pool, control = both(WORK)
        print("\n" + table(pool, control), flush=True)
        s.ok = pool.reset == 0 and pool.failed == 0 and pool.moved > 0 and control.reset > 0
        s.detail = (
            f"pool: {pool.reset} reset, {pool.failed} failed ({pool.moved} flows moved); "
            f"control: {control.reset}/{control.held} reset, {control.failed} failed"
        )
    except Exception as e:  # the summary shows it
        s.ok, s.detail = False, f"{type(e).__name__}: {e}"
        traceback.print_exc()
    s.seconds = time.monotonic() - t0
    return s


def run_demo(native: bool = False) -> int:
    from .vm import WORK as VM_WORK
    from .vm import in_vm, running_kernel_has_dataplane

    if not native and not running_kernel_has_dataplane():
        pool = _with_pool()  # passed on: the guest's environment is not this one
        env = ["env", f"BGPLB_DEMO_POOL={int(pool)}"]
        cmd = [*env, sys.executable, "-m", "tests.lab", "demo", "--native"]
        return in_vm(cmd, VM_WORK / "demo.log", timeout=2700 if pool else 1800)
    t0 = time.monotonic()
    lab = Lab(load_topology(ECMP), keep_logs=WORK / "lab-logs")
    left = teardown(lab.topology.name)
    if left:
        print(f"==> removed leftovers of an earlier run: {len(left)} items")
    steps: list[Step] = []
    try:
        steps = run_steps(lab, lab.dir)
    finally:
        print("\n==> teardown", flush=True)
        t1 = time.monotonic()
        removed = lab.down()
        detail = f"{len(removed)} objects removed; logs in {WORK / 'lab-logs'}"
        steps.append(Step("teardown", ok=True, detail=detail, seconds=time.monotonic() - t1))
    if _with_pool():
        steps.append(pool_step())
    else:
        print("\n==> pool mode vs control left out (POOL=0); `make demo` shows it (~6 more min)")
    print("\n" + _table(steps))
    failed = [s.name for s in steps if not s.ok]
    total = time.monotonic() - t0
    print(
        f"\n{'ALL STEPS PASSED' if not failed else 'FAILED: ' + ', '.join(failed)} ({total:.0f}s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_demo(native="--native" in sys.argv))
