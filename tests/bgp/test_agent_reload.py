"""The whole agent against FRR: a reload that changes only a healthy service's check timing
never withdraws it (issue 13, item 1). The router is watched three ways: its FIB sampled every
few ms, its kernel's route events (a flap shorter than a sample cannot hide) and bgpd's count
of UPDATEs received from the LB (bgpd coalesces a withdraw + re-announce within its work queue,
the UPDATEs still arrive)."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
import time

import pytest

from tests.harness.agent_proc import AgentFactory, RouteMonitor
from tests.harness.frr import BgpLab, wait_until

pytestmark = pytest.mark.bgp

VIP = "10.99.0.1/32"
SAMPLE_EVERY = 0.005  # seconds between FIB samples (plus the lookup itself)


# Runs inside the router's namespace with a real-time priority, so that a loaded host (2 cores,
# other suites) cannot stretch the sampling: one RTM_GETROUTE lookup, one line per sample.
SAMPLER = r"""
import os, sys, time
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
except OSError:
    pass
address, via, every = sys.argv[1], sys.argv[2], float(sys.argv[3])
with IPRoute() as ipr:
    while True:
        try:
            there = any(r.get("gateway") == via for r in ipr.route("get", dst=address))
        except NetlinkError:  # unreachable: no route at all
            there = False
        print(f"{time.monotonic()} {int(there)}", flush=True)
        time.sleep(every)
"""


class FibSampler:
    """Samples whether the router's FIB routes ``address`` via ``via``, every few ms, from a
    child process (real-time priority) in the router's namespace."""

    def __init__(self, ns: str, address: str, via: str) -> None:
        self.argv = ["ip", "netns", "exec", ns, sys.executable, "-c", SAMPLER]
        self.argv += [address, via, str(SAMPLE_EVERY)]
        self.proc: subprocess.Popen[str] | None = None
        self.samples: list[tuple[float, bool]] = []

    def __enter__(self) -> FibSampler:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # the first sample: it runs
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        for line in out.splitlines():
            t, there = line.split()
            self.samples.append((float(t), there == "1"))

    def max_gap(self) -> float:
        times = [t for t, _ in self.samples]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def _updates_received(bl: BgpLab, address: str) -> int:
    info = bl.router.vtysh_json(f"show bgp neighbors {address} json").get(address, {})
    assert isinstance(info, dict)
    stats = info.get("messageStats", {})
    assert isinstance(stats, dict)
    return int(stats["updatesRecv"])


async def test_sighup_with_only_check_timing_changed_never_withdraws(
    bgp_lab_factory, agent_factory: AgentFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    lb = bl.lb_v4(1)
    agent, _ = agent_factory(bl, 1)
    await wait_until(lambda: bl.router.fib(VIP) == [lb], 20)
    # Settled: bgpd's UPDATE counter unchanged for 3 s. (The late UPDATE once seen here was
    # ExaBGP answering the ROUTE-REFRESH bgpd sent when its route-map delay timer fired
    # after start-up; the harness's routers now apply route-maps at once, see frr.py.)
    updates_before = _updates_received(bl, lb)
    async with asyncio.timeout(30):
        while True:
            await asyncio.sleep(3.0)
            now = _updates_received(bl, lb)
            if now == updates_before:
                break
            updates_before = now

    check = agent.config["services"][0]["checks"][0]
    check.update({"interval": 0.3, "timeout": 0.25, "fast_interval": 0.1, "rise": 3, "fall": 2})
    agent.write_config()
    sampler = FibSampler(bl.router.ns, VIP.split("/")[0], lb)
    with RouteMonitor(bl.router.ns) as monitor, sampler:
        t0 = time.time()
        await asyncio.sleep(0.1)
        agent.signal(signal.SIGHUP)
        await wait_until(lambda: len(agent.events("config_reloaded")) == 1, 10, interval=0.2)
        await asyncio.sleep(3.0)  # the new timing runs: several probes at 0.3 s
    deleted = monitor.deleted_at(VIP, t0)
    missing = [t for t, there in sampler.samples if not there]
    print(
        f"reload: {len(sampler.samples)} FIB samples, max gap {sampler.max_gap() * 1000:.1f} ms, "
        f"{len(missing)} without the VIP; UPDATEs received "
        f"{_updates_received(bl, lb) - updates_before}"
    )
    assert len(sampler.samples) > 100
    assert sampler.max_gap() < 0.1, "the sampler was starved: the test proves nothing"
    assert not missing, "the router lost the VIP during the reload"
    assert deleted is None, "the router's kernel deleted the VIP route during the reload"
    assert _updates_received(bl, lb) == updates_before, "the LB sent UPDATEs (a withdraw)"
    assert bl.router.fib(VIP) == [lb]
    assert agent.events("config_reloaded")[0]["changed_services"] in (["web"], "['web']")
    status = agent.status()
    assert status["last_reload"]["ok"] is True
    web = next(s for s in status["services"] if s["name"] == "web")
    assert web["decision"] == "announce"
    assert agent.errors() == []


async def test_reload_probe_refuses_a_broken_target_and_commits_a_good_one(
    bgp_lab_factory, agent_factory: AgentFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    lb = bl.lb_v4(1)
    agent, _ = agent_factory(bl, 1)
    await wait_until(lambda: bl.router.fib(VIP) == [lb], 20)
    check = agent.config["services"][0]["checks"][0]
    check["port"] = 8081  # nothing listens there: a typo
    agent.write_config()
    res = await asyncio.to_thread(agent.cli, "reload", "--probe", check=False)
    print(f"reload --probe (broken): exit {res.returncode}: {res.stderr.strip()}")
    assert res.returncode == 2
    assert "check web/http failed:" in res.stderr
    status = agent.status()
    assert status["last_reload"]["ok"] is False
    checks = next(s for s in status["services"] if s["name"] == "web")["checks"]
    assert checks[0]["status"] == "up"
    await asyncio.sleep(2.0)  # the old check goes on: nothing switched
    assert bl.router.fib(VIP) == [lb]
    assert [e["event"] for e in agent.errors()] == ["config_reload_failed"]
    metrics = agent.get("/metrics")
    assert "bgplb_config_reload_success 0.0" in metrics

    check["port"] = 8080
    check["path"] = "/index.html"  # a changed target that works
    agent.write_config()
    res = await asyncio.to_thread(agent.cli, "reload", "--probe", check=False)
    assert res.returncode == 0, res.stderr
    assert "1 changed check(s) probed" in res.stdout
    assert agent.status()["last_reload"]["ok"] is True
    assert bl.router.fib(VIP) == [lb]
