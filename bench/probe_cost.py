"""Micro-benchmark: CPU of the agent's probe path alone, per probe.

``python -m bench.probe_cost [--checks 1000] [--window 20] [--rounds 3] [--profile]``

What runs: the agent's ``HealthRunner`` with ``RealProber`` and the agent's metrics hook, N
plain http checks at the default timing (1 s) against ``bench.backends`` on 127.0.0.1 (its own
process, not counted), no ExaBGP, no reconciler. Prints, per round, this process's CPU over
the window (% of one core; user and system time per probe) after a 5 s warm-up. Not a record
in results.json: it is the tool behind the per-probe figures in bench/NOTES.md, made to
compare two versions in the same run (the host is noisy, so alternate them), e.g.
``PYTHONPATH=/tmp/old/agent python -m bench.probe_cost`` against the working tree.
``--profile`` adds a cProfile of the last window (slows it; for where, not how much).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ipaddress
import pstats
import resource
import subprocess
import sys
import time

from bgplb.clock import SystemClock
from bgplb.config import HttpCheck
from bgplb.health.runner import HealthRunner
from bgplb.health.targets import ResolvedCheck
from bgplb.health.tracker import CheckKey
from bgplb.metrics import Metrics
from bgplb.model import CheckStatus

BASE_PORT = 21000
CONTROL_PORT = 20999
WARMUP = 5.0


async def measure(checks: int, window: float, rounds: int, profile: bool) -> None:
    runner = HealthRunner(SystemClock(), lambda: None)
    runner.on_result = Metrics().record_check
    address = ipaddress.ip_address("127.0.0.1")
    specs = {}
    for i in range(checks):
        key = CheckKey(f"s{i}", None, "http")
        check = HttpCheck(type="http", path=f"/svc/{i}")
        specs[key] = ResolvedCheck(key, check, address, BASE_PORT + i)
    runner.configure_checks(specs)
    task = asyncio.create_task(runner.run())
    await asyncio.sleep(WARMUP)
    try:
        for n in range(rounds):
            profiler = cProfile.Profile() if profile and n == rounds - 1 else None
            before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            if profiler:
                profiler.enable()
            await asyncio.sleep(window)
            if profiler:
                profiler.disable()
            after, elapsed = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - started
            user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
            up = sum(s.status is CheckStatus.UP for s in runner.snapshot().values())
            probes = checks * elapsed  # one per check and second
            print(
                f"round {n + 1}: {100 * (user + system) / elapsed:.2f} % of a core "
                f"(user {1e6 * user / probes:.1f} us + system {1e6 * system / probes:.1f} us "
                f"per probe), {up}/{checks} checks up",
                flush=True,
            )
            if profiler:
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checks", type=int, default=1000)
    ap.add_argument("--window", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    ports = [str(BASE_PORT), str(args.checks), str(CONTROL_PORT)]
    backends = subprocess.Popen([sys.executable, "-m", "bench.backends", "127.0.0.1", *ports])
    try:
        time.sleep(2.0)  # the backends listen on all their ports
        if backends.poll() is not None:
            sys.exit(f"bench.backends exited with {backends.returncode}")
        print(f"{args.checks} http checks at 1 s, {args.window:g} s windows", flush=True)
        asyncio.run(measure(args.checks, args.window, args.rounds, args.profile))
    finally:
        backends.terminate()
        backends.wait(5)


if __name__ == "__main__":
    main()
