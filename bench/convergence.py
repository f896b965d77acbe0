"""Benchmark 1: health-failure convergence, backend stops -> r1's FIB no longer has the node.

``python -m bench.convergence [--trials 100] [--cases a,b,...]`` (root). Each trial: route
present -> sleep 0.5 s + U(0, interval) -> kill (SIGKILL) or hang (SIGSTOP) the backend at
t0 -> poll r1's FIB until the VIP is gone (t1) -> sleep 0.3 s + U(0, interval) -> restart /
SIGCONT -> wait until the route is back. From the agent's JSON log (opt-in timing hook,
BGPLB_TIMING_LOG): detection = t0 -> ``health_check_changed`` down; overhead = that -> the
withdraw written to ExaBGP's API (``speaker_commands_written``); the rest is ExaBGP + FRR.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from tests.harness.agent_proc import BACKEND_PORT
from tests.harness.frr import BgpLab
from tests.harness.netns import kill_pids

from .baseline import TIMING_C, ExaBGPHealthcheck, HealthcheckService
from .lab import (
    PY,
    REPO,
    BenchAgent,
    FibProbe,
    Record,
    bgp_lab,
    load_logged,
    log_since,
    make_agent,
    save,
    save_raw,
    stats,
    timing_records,
    ts,
)

BENCH = "1 health-failure convergence"
COMMAND = "make bench (python -m bench.convergence)"
DEFAULT: dict[
    str, Any
] = {}  # the config defaults: interval 1, fast 0.25, timeout 0.8, rise 3, fall 2
AGGRESSIVE = {"interval": 0.1, "fast_interval": 0.1, "timeout": 0.09, "rise": 1, "fall": 1}
WATCH = {"watch_connection": True}  # docs/config.md: a held connection whose drop probes at once
SCALE_BASE_PORT = 20000
SCALE_CONTROL_PORT = 19999


@dataclass(frozen=True)
class Case:
    name: str
    who: str  # agent | baseline
    failure: str  # killed | hung
    interval: float
    timing: dict[str, Any]
    services: int = 1
    goal_p50: str | None = None
    goal_p99: str | None = None
    compare_p50: bool = False  # record the baseline's p50 beside ours (no goal: information)


CASES = {
    c.name: c
    for c in (
        Case("baseline-killed-aggressive", "baseline", "killed", 0.1, {}),
        # No goal (issue 13): without watch_connection both tools wait for the same next
        # probe, U(0, interval) after the kill, then pay the same ExaBGP+FRR; kept as
        # information beside the baseline. The event-driven -watch case keeps the 0.9x goal.
        Case("agent-killed-aggressive", "agent", "killed", 0.1, AGGRESSIVE, compare_p50=True),
        Case(
            "agent-killed-aggressive-watch",
            "agent",
            "killed",
            0.1,
            {**AGGRESSIVE, **WATCH},
            goal_p50="<= 0.9 x baseline p50",
        ),
        Case("agent-killed-default", "agent", "killed", 1.0, DEFAULT, goal_p99="<= 1500"),
        Case(
            "agent-killed-default-watch",
            "agent",
            "killed",
            1.0,
            WATCH,
            goal_p99="<= 1500",
        ),
        Case("agent-hung-default", "agent", "hung", 1.0, DEFAULT, goal_p99="<= 3000"),
        Case(
            "agent-killed-default-1000svc",
            "agent",
            "killed",
            1.0,
            DEFAULT,
            services=1000,
            goal_p99="<= 1500",
        ),
        Case("baseline-hung-aggressive", "baseline", "hung", 0.1, {}),
        Case("agent-hung-aggressive", "agent", "hung", 0.1, AGGRESSIVE),
    )
}


def agent_service(
    name: str, vip: str, address: str, port: int, path: str, timing: dict[str, Any]
) -> dict[str, Any]:
    check = {"type": "http", "address": address, "port": port, "path": path, **timing}
    return {"name": name, "mode": "announce", "interface": "lo", "vips": [vip], "checks": [check]}


def scale_vip(i: int) -> str:
    return f"10.99.{1 + i // 250}.{1 + i % 250}"


def start_scale_backends(ns: str, address: str, count: int) -> subprocess.Popen[bytes]:
    argv = ["ip", "netns", "exec", ns, str(PY), "-m", "bench.backends", address]
    argv += [str(SCALE_BASE_PORT), str(count), str(SCALE_CONTROL_PORT)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=REPO, start_new_session=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("scale backends did not start")
    return proc


class ToggleBackend:
    """``bench.backends toggle`` in the LB namespace: ``stop`` closes its port (a killed
    backend: connection refused), ``start`` reopens it, ``hang``/``unhang`` SIGSTOP/SIGCONT it."""

    def __init__(self, ns: str, address: str, port: int) -> None:
        argv = ["ip", "netns", "exec", ns, str(PY), "-m", "bench.backends", "toggle", address]
        self.proc = subprocess.Popen(
            [*argv, str(port)], stdout=subprocess.PIPE, cwd=REPO, start_new_session=True
        )
        self._expect(b"open")

    def _expect(self, word: bytes) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != word:
            raise RuntimeError(f"toggle backend said {line!r}, expected {word!r}")

    def stop(self) -> None:
        os.kill(self.proc.pid, signal.SIGUSR1)
        self._expect(b"closed")

    def start(self) -> None:
        os.kill(self.proc.pid, signal.SIGUSR2)
        self._expect(b"open")

    def hang(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def unhang(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        self.unhang()
        kill_pids([self.proc.pid])


def run_case(bl: BgpLab, case: Case, trials: int) -> dict[str, list[float]]:
    n = 2 if case.who == "baseline" else 1
    vip = "10.99.0.2" if case.who == "baseline" else "10.99.0.1"
    backend = ToggleBackend(bl.lb_ns[n - 1], bl.lb_v4(n), BACKEND_PORT)
    agent: BenchAgent | None = None
    exa: ExaBGPHealthcheck | None = None
    scale: subprocess.Popen[bytes] | None = None
    probe = FibProbe(bl.router.ns)
    out: dict[str, list[float]] = {
        k: [] for k in ("total", "detect", "overhead", "pipeline", "recover", "flaps")
    }
    try:
        if case.who == "baseline":
            url = f"http://{bl.lb_v4(n)}:{BACKEND_PORT}/"
            exa = ExaBGPHealthcheck(bl, n, [HealthcheckService("hc", vip, url)], TIMING_C)
            exa.start()
        else:
            services = [agent_service("victim", vip, bl.lb_v4(n), BACKEND_PORT, "/", case.timing)]
            if case.services > 1:
                scale = start_scale_backends(bl.lb_ns[n - 1], bl.lb_v4(n), case.services - 1)
                services += [
                    agent_service(
                        f"s{i}",
                        scale_vip(i),
                        bl.lb_v4(n),
                        SCALE_BASE_PORT + i,
                        f"/svc/{i}",
                        DEFAULT,
                    )
                    for i in range(case.services - 1)
                ]
            agent = make_agent(bl, n, services)
            agent.start()
        probe.wait(vip, True, 180)  # 1,000 VIPs take ~65 s to add here
        offset = agent.log_path.stat().st_size if agent else 0
        t = 0
        while t < trials:
            probe.wait(vip, True, 30)
            time.sleep(0.5 + random.uniform(0, case.interval))
            if not probe.present(vip):  # a false failure (flap) withdrew it: not a trial
                out["flaps"].append(time.time())
                continue
            t += 1
            t0 = time.time()
            if case.failure == "killed":
                backend.stop()
            else:
                backend.hang()
            t1 = probe.wait(vip, False, 15)
            time.sleep(0.3 + random.uniform(0, case.interval))
            if case.failure == "killed":
                backend.start()
            else:
                backend.unhang()
            t2 = time.time()
            t3 = probe.wait(vip, True, 15)
            out["total"].append((t1 - t0) * 1000)
            out["recover"].append((t3 - t2) * 1000)
            if agent is not None:
                lines, offset = log_since(agent.log_path, offset)
                down = next(
                    (
                        x
                        for x in lines
                        if x.get("event") == "health_check_changed"
                        and x.get("service") == "victim"
                        and x.get("status") == "down"
                        and ts(x) >= t0
                    ),
                    None,
                )
                if down is not None:
                    td = ts(down)
                    sent = next(
                        (
                            x
                            for x in lines
                            if x.get("event") == "speaker_commands_written"
                            and ts(x) >= td
                            and "withdraw" in str(x.get("first"))
                        ),
                        None,
                    )
                    out["detect"].append((td - t0) * 1000)
                    if sent is not None:
                        out["overhead"].append((ts(sent) - td) * 1000)
                        out["pipeline"].append((t1 - ts(sent)) * 1000)
            if t % 10 == 0:
                s = stats(out["total"])
                print(
                    f"{case.name}: {t}/{trials} p50 {s['p50']:.0f} ms max {s['max']:.0f} ms",
                    flush=True,
                )
    finally:
        probe.close()
        if agent is not None:
            agent.kill()
            kill_pids([p for p in agent.exabgp_pids()])
            shutil.copy(agent.log_path, f"/tmp/bench-agent-{case.name}.log")
            shutil.rmtree(agent.workdir, ignore_errors=True)
        if exa is not None:
            exa.stop()
        if scale is not None:
            kill_pids([scale.pid])
        backend.close()
    return out


def records(case: Case, out: dict[str, list[float]], baseline_p50: float | None) -> list[Record]:
    bench = f"{BENCH}: {case.name}"
    goals = {k: v for k, v in (("p50", case.goal_p50), ("p99", case.goal_p99)) if v}
    compare = case.goal_p50 or case.compare_p50
    base = {"p50": baseline_p50} if baseline_p50 is not None and compare else {}
    recs = timing_records(bench, "stop -> FIB withdrawn", out["total"], COMMAND, goals, base)
    if out["detect"]:
        recs += timing_records(bench, "detection (stop -> check down)", out["detect"], COMMAND)
        recs += timing_records(
            bench,
            "overhead (check down -> API command)",
            out["overhead"],
            COMMAND,
            {"p99": "<= 10"},
        )
        recs += timing_records(bench, "ExaBGP+FRR (API command -> FIB)", out["pipeline"], COMMAND)
    recs += timing_records(bench, "recovery (backend back -> FIB)", out["recover"], COMMAND)
    recs.append(
        Record(bench, "false failures before a kill (trials redone)", "count",
               len(out.get("flaps", [])), None, None, len(out["total"]), COMMAND)
    )  # fmt: skip
    return recs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    random.seed()
    with load_logged("convergence"), bgp_lab(n_lbs=2) as bl:
        baseline_p50: float | None = None
        for name in args.cases.split(","):
            case = CASES[name]
            print(f"== {case.name}: {args.trials} trials", flush=True)
            out = run_case(bl, case, args.trials)
            save_raw(f"convergence-{case.name}", out)
            if case.name == "baseline-killed-aggressive":
                baseline_p50 = stats(out["total"])["p50"]
            elif (case.goal_p50 or case.compare_p50) and baseline_p50 is None:
                baseline_p50 = _saved_baseline_p50()
            save(records(case, out, baseline_p50))
    sys.exit(0)


def _saved_baseline_p50() -> float | None:
    import json

    from .lab import RAW

    raw = RAW / "convergence-baseline-killed-aggressive.json"
    if not raw.exists():
        return None
    return stats(json.loads(raw.read_text())["total"])["p50"]


if __name__ == "__main__":
    main()
