"""Benchmark 2: node death -> r1's FIB drops the node's path.

``python -m bench.node_death [--trials 10]`` (root). Cases: the agent SIGKILLed (ExaBGP dies
with it: PDEATHSIG), ExaBGP SIGKILLed alone (the agent restarts it), and the node's link cut
without FIN (nftables drops everything on lb1's eth0) with hold time 3 s and 9 s (r1's
timers set to match, the session reset first). Time from the action until the VIP has left
r1's kernel FIB; then the node is healed and the route must come back before the next trial.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import time

from tests.harness.agent_proc import BACKEND_PORT
from tests.harness.frr import BgpLab
from tests.harness.netns import kill_pids

from .convergence import DEFAULT, ToggleBackend, agent_service
from .lab import (
    BenchAgent,
    FibProbe,
    bgp_lab,
    load_logged,
    make_agent,
    save,
    save_raw,
    timing_records,
)

BENCH = "2 node death"
COMMAND = "make bench (python -m bench.node_death)"
VIP = "10.99.0.1"
CUT = """table inet benchcut {
  chain in { type filter hook input priority -10; iifname "eth0" drop; }
  chain out { type filter hook output priority -10; oifname "eth0" drop; }
}
"""


def nft(ns: str, script: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input=script,
        text=True,
        check=True,
        timeout=10,
    )


def set_r1_timers(bl: BgpLab, keepalive: int, hold: int) -> None:
    bl.router.vtysh(
        "configure terminal",
        f"router bgp {bl.router.asn}",
        f"neighbor {bl.lb_v4(1)} timers {keepalive} {hold}",
        "end",
        f"clear bgp {bl.lb_v4(1)}",
    )


def run_case(bl: BgpLab, name: str, trials: int, probe: FibProbe) -> list[float]:
    hold = 9 if name == "link-cut-hold9" else 3
    if name.startswith("link-cut"):
        set_r1_timers(bl, hold // 3, hold)
    backend = ToggleBackend(bl.lb_ns[0], bl.lb_v4(1), BACKEND_PORT)
    svc = agent_service("web", VIP, bl.lb_v4(1), BACKEND_PORT, "/", DEFAULT)
    agent: BenchAgent = make_agent(bl, 1, [svc], hold_time=hold)
    out: list[float] = []
    try:
        agent.start()
        for t in range(trials):
            probe.wait(VIP, True, 60)
            time.sleep(1.0 + random.uniform(0, 1.0))
            t0 = time.time()
            if name == "agent-sigkill":
                agent.signal(signal.SIGKILL)
            elif name == "exabgp-sigkill":
                os.kill(agent.exabgp_pids()[-1], signal.SIGKILL)
            else:
                nft(agent.ns, CUT)
            t1 = probe.wait(VIP, False, hold + 20)
            out.append((t1 - t0) * 1000)
            if name == "agent-sigkill":
                agent.wait(10)
                agent.start()
            elif name.startswith("link-cut"):
                nft(agent.ns, "delete table inet benchcut\n")
            print(f"{name}: {t + 1}/{trials} {out[-1]:.0f} ms", flush=True)
        probe.wait(VIP, True, 60)
    finally:
        agent.kill()
        kill_pids(list(agent.exabgp_pids()))
        shutil.rmtree(agent.workdir, ignore_errors=True)
        backend.close()
        if name.startswith("link-cut"):
            subprocess.run(
                ["ip", "netns", "exec", agent.ns, "nft", "delete", "table", "inet", "benchcut"],
                capture_output=True,
                check=False,
            )
            set_r1_timers(bl, 1, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--cases", default="agent-sigkill,exabgp-sigkill,link-cut-hold3,link-cut-hold9")
    args = ap.parse_args()
    with load_logged("node_death"), bgp_lab(n_lbs=1) as bl:
        probe = FibProbe(bl.router.ns)
        try:
            for name in args.cases.split(","):
                print(f"== {name}: {args.trials} trials", flush=True)
                out = run_case(bl, name, args.trials, probe)
                save_raw(f"node-death-{name}", out)
                save(timing_records(f"{BENCH}: {name}", "action -> FIB withdrawn", out, COMMAND))
        finally:
            probe.close()


if __name__ == "__main__":
    main()
