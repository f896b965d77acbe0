"""Benchmark 3: 1, 100, 1,000 services on one node, each with its own VIP and its own HTTP
check (distinct port and path, interval 1 s) against one multi-port backend that counts the
probes; the ExaBGP healthcheck baseline at 20 services in the same run.

``python -m bench.scale [--sizes 1,100,1000] [--window 60] [--baseline 20]`` (root).
Figures: start -> every route in r1's kernel FIB, CPU (utime+stime of agent + ExaBGP + all
children, plus reaped children's cutime+cstime, as the baseline was counted) over the window,
RSS (sum of VmRSS of the tree), /metrics scrape time (curl time_total, 20 scrapes) and the
probes the backends received in the window.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import time

from tests.harness.agent_proc import API_PORT
from tests.harness.frr import BgpLab
from tests.harness.netns import kill_pids

from .baseline import TIMING_B, ExaBGPHealthcheck, HealthcheckService
from .convergence import (
    DEFAULT,
    SCALE_BASE_PORT,
    SCALE_CONTROL_PORT,
    agent_service,
    scale_vip,
    start_scale_backends,
)
from .lab import Record, bgp_lab, cpu_percent, load_logged, make_agent, rss_kib, save, save_raw

BENCH = "3 scale"
COMMAND = "make bench (python -m bench.scale)"
SETTLE = 10.0


def counts(ns: str, address: str) -> dict[str, int]:
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "curl",
            "-sf",
            "--max-time",
            "5",
            f"http://{address}:{SCALE_CONTROL_PORT}/counts",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    return {k: int(v) for k, v in json.loads(out).items()}


def scrape_ms(ns: str, n: int = 20) -> list[float]:
    times = []
    for _ in range(n):
        out = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns,
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{time_total}",
                "--max-time",
                "10",
                f"http://127.0.0.1:{API_PORT}/metrics",
            ],
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        ).stdout
        times.append(float(out) * 1000)
    return times


def wait_fib(bl: BgpLab, n: int, started: float, within: float) -> float | None:
    """Seconds from ``started`` until r1's FIB has ``n`` BGP routes; None if not ``within``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if bl.router.fib_count() >= n:
            return time.time() - started
        time.sleep(0.02)
    print(f"only {bl.router.fib_count()} of {n} routes in r1's FIB after {within:g} s", flush=True)
    return None


def probe_share(
    before: dict[str, int], after: dict[str, int], n: int, window: float
) -> tuple[float, float]:
    """(probes received / expected, share of services with >= 95 % of their probes)."""
    expected = window / 1.0
    deltas = [after.get(str(i), 0) - before.get(str(i), 0) for i in range(n)]
    return sum(deltas) / (n * expected), sum(d >= 0.95 * expected for d in deltas) / n


def measure_agent(bl: BgpLab, n: int, window: float) -> dict[str, object]:
    ns, address = bl.lb_ns[0], bl.lb_v4(1)
    backends = start_scale_backends(ns, address, n)
    services = [
        agent_service(f"s{i}", scale_vip(i), address, SCALE_BASE_PORT + i, f"/svc/{i}", DEFAULT)
        for i in range(n)
    ]
    agent = make_agent(bl, 1, services)
    try:
        started = time.time()
        agent.start()
        to_fib = wait_fib(bl, n, started, 120)
        figures = measure_window(bl, ns, address, agent.pid, n, window, to_fib)
        return {**figures, "scrape_ms": scrape_ms(ns)}
    finally:
        agent.kill()
        kill_pids(list(agent.exabgp_pids()))
        shutil.copy(agent.log_path, f"/tmp/bench-agent-scale-{n}.log")
        shutil.rmtree(agent.workdir, ignore_errors=True)
        kill_pids([backends.pid])


def measure_window(
    bl: BgpLab, ns: str, address: str, pid: int, n: int, window: float, to_fib: float | None
) -> dict[str, object]:
    """After SETTLE: CPU and probes received over ``window`` s, then RSS, of ``pid``'s tree."""
    time.sleep(SETTLE)
    c0 = counts(ns, address)
    own, total = cpu_percent([pid], window)
    c1 = counts(ns, address)
    rss = rss_kib([pid])
    share, full = probe_share(c0, c1, n, window)
    return {
        "services": n,
        "to_fib_s": to_fib,
        "fib_routes": bl.router.fib_count(),
        "cpu_own": own,
        "cpu_total": total,
        "rss_kib": rss,
        "probe_share": share,
        "services_95": full,
    }


def measure_baseline(bl: BgpLab, n: int, window: float) -> dict[str, object]:
    ns, address = bl.lb_ns[1], bl.lb_v4(2)
    backends = start_scale_backends(ns, address, n)
    services = [
        HealthcheckService(
            f"hc{i}", f"10.99.200.{1 + i}", f"http://{address}:{SCALE_BASE_PORT + i}/svc/{i}"
        )
        for i in range(n)
    ]
    exa = ExaBGPHealthcheck(bl, 2, services, TIMING_B)
    try:
        started = time.time()
        exa.start()
        to_fib = wait_fib(bl, n, started, 120)
        assert exa.proc is not None
        return measure_window(bl, ns, address, exa.proc.pid, n, window, to_fib)
    finally:
        exa.stop()
        kill_pids([backends.pid])


def records(
    r: dict[str, object], base: dict[str, object] | None, window: float, who: str = "bgp-lb"
) -> list[Record]:
    n = int(r["services"])  # type: ignore[call-overload]
    big = n == 1000
    bench = f"{BENCH}: {who}, {n} services"
    b = base or {}

    def rec(metric: str, unit: str, key: str, goal: str | None, scale: float = 1.0) -> Record:
        value = None if r[key] is None else float(r[key]) * scale  # type: ignore[arg-type]
        bv = b.get(key)
        return Record(
            bench,
            metric,
            unit,
            value,
            goal if big else None,
            None if bv is None else float(bv) * scale,  # type: ignore[arg-type]
            1,
            COMMAND,
        )

    scrapes = sorted(r["scrape_ms"])  # type: ignore[call-overload]
    return [
        rec("start -> all routes in FIB (empty: not within 120 s)", "s", "to_fib_s", "<= 5"),
        rec("routes in r1's FIB after the window", "count", "fib_routes", None),
        rec(
            f"CPU agent+ExaBGP+children incl. reaped ({window:g} s)",
            "% of a core",
            "cpu_total",
            "<= 15",
        ),
        rec("CPU utime+stime only (no reaped children)", "% of a core", "cpu_own", None),
        rec("RSS (sum of the process tree)", "MiB", "rss_kib", "<= 200 MB", 1 / 1024),
        rec("probes received / expected", "%", "probe_share", ">= 95", 100),
        rec("services with >= 95 % of their probes", "%", "services_95", None, 100),
        Record(
            bench,
            "/metrics scrape:p50",
            "ms",
            statistics.median(scrapes),
            None,
            None,
            len(scrapes),
            COMMAND,
        ),
        Record(
            bench,
            "/metrics scrape:max",
            "ms",
            scrapes[-1],
            "<= 250" if big else None,
            None,
            len(scrapes),
            COMMAND,
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,100,1000")
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--baseline", type=int, default=20)
    args = ap.parse_args()
    with load_logged("scale"), bgp_lab(n_lbs=2) as bl:
        base = None
        if args.baseline:
            print(f"== baseline: ExaBGP healthcheck x {args.baseline}", flush=True)
            base = measure_baseline(bl, args.baseline, args.window)
            save_raw(f"scale-baseline-{args.baseline}", base)
            print(base, flush=True)
            brec = records({**base, "scrape_ms": [0.0]}, None, args.window, "ExaBGP healthcheck")
            save([x for x in brec if "scrape" not in x.metric])
        for n in (int(x) for x in args.sizes.split(",")):
            print(f"== agent: {n} services", flush=True)
            r = measure_agent(bl, n, args.window)
            save_raw(f"scale-agent-{n}", r)
            print({k: v for k, v in r.items() if k != "scrape_ms"}, flush=True)
            save(records(r, base, args.window))


if __name__ == "__main__":
    main()
