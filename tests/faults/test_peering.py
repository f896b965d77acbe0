"""Faults on the BGP path: ExaBGP killed or stopped, the router's bgpd restarted, the link to
the router flapped. Each time the route must come back without restarting the agent."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from typing import Any

import pytest

from tests.harness.agent_proc import AgentFactory, AgentProc
from tests.harness.figures import count
from tests.harness.frr import FRR_BIN, Router, pid_alive, wait_until
from tests.harness.netns import run

from .common import CONVERGE, VIP, one_lb, sampler, settle

pytestmark = pytest.mark.faults


def _more_than(agent: AgentProc, n: int) -> bool:
    return len(agent.exabgp_pids()) > n


async def test_exabgp_sigkill_5_times_route_returns_agent_stays(
    bgp_lab_factory: Any, agent_factory: AgentFactory
) -> None:
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory)
    lb = bl.lb_v4(1)
    took = []
    count("faults_injected", 5)
    for _ in range(5):
        known = agent.exabgp_pids()
        victim = known[-1]
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        await wait_until(lambda: bl.router.fib(VIP) == [], 10, interval=0.01)
        await wait_until(functools.partial(_more_than, agent, len(known)), CONVERGE, 0.05)
        await wait_until(lambda: bl.router.fib(VIP) == [lb], CONVERGE, interval=0.05)
        took.append(time.monotonic() - t0)
        assert not pid_alive(victim)
        assert agent.running()
    print(f"ExaBGP SIGKILL x5 -> route back after (s): {[round(t, 2) for t in took]}")
    assert agent.runs == 1
    assert agent.status()["peers"][0]["state"] == "up"


async def test_exabgp_sigstop_detected_and_restarted(
    bgp_lab_factory: Any, agent_factory: AgentFactory
) -> None:
    """A wedged (SIGSTOPped) ExaBGP is noticed by the agent (ack deadline / heartbeat) and
    replaced; the route comes back without anyone touching the stopped process (defect 6)."""
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory)
    victim = agent.exabgp_pids()[-1]
    os.kill(victim, signal.SIGSTOP)
    try:
        # The router's hold timer (3 s) drops the session; the agent must replace ExaBGP.
        await wait_until(lambda: len(agent.exabgp_pids()) >= 2, 20, interval=0.1)
        took = await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], CONVERGE, 0.05)
        print(f"SIGSTOPped ExaBGP replaced; route back {took:.2f}s after the new one started")
        await wait_until(lambda: not pid_alive(victim), 10, interval=0.1)
        assert agent.running()
        assert agent.runs == 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
            os.kill(victim, signal.SIGCONT)


def _restart_bgpd(router: Router) -> None:
    """SIGTERM the router's bgpd only (zebra keeps running), then start it again with the
    same arguments as ``Router.start``."""
    pid = router.pids["bgpd"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    d = str(router.directory)
    pidfile = router.directory / "bgpd.pid"
    with contextlib.suppress(FileNotFoundError):
        pidfile.unlink()
    argv = ["ip", "netns", "exec", router.ns, str(FRR_BIN / "bgpd"), "-d", "-N", router.ns]
    argv += ["-F", "traditional", "-f", str(router.directory / "frr.conf"), "-i", str(pidfile)]
    argv += ["-z", f"{d}/zserv.api", "--vty_socket", d]
    run(*argv, timeout=30)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            router.pids["bgpd"] = int(pidfile.read_text().strip())
            return
        time.sleep(0.05)
    raise RuntimeError("bgpd did not write its pid file")


async def test_router_bgpd_restart_session_and_route_return(
    bgp_lab_factory: Any, agent_factory: AgentFactory
) -> None:
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory)
    exabgp = list(agent.exabgp_pids())
    t0 = time.monotonic()
    _restart_bgpd(bl.router)
    await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], CONVERGE, interval=0.05)
    print(f"router bgpd restarted -> route back after {time.monotonic() - t0:.2f}s")
    assert agent.running()
    assert agent.runs == 1
    assert agent.exabgp_pids() == exabgp  # ExaBGP reconnected by itself
    await wait_until(lambda: agent.status()["peers"][0]["state"] == "up", 10, interval=0.1)


async def test_link_flap_route_returns(bgp_lab_factory: Any, agent_factory: AgentFactory) -> None:
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory)
    for _ in range(2):
        run("ip", "-n", agent.ns, "link", "set", "eth0", "down")
        await wait_until(lambda: bl.router.fib(VIP) == [], 10, interval=0.02)
        await settle(1.0)
        t0 = time.monotonic()
        run("ip", "-n", agent.ns, "link", "set", "eth0", "up")
        took = await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], CONVERGE, 0.05)
        print(f"link down 1 s, up -> route back after {took:.2f}s ({time.monotonic() - t0:.2f}s)")
        assert agent.running()
    assert agent.runs == 1
    # nothing flaps afterwards
    with sampler(bl) as s:
        await settle(2.0)
        report = s.stop()
    assert not report.fib_absent_intervals, report.summary()
