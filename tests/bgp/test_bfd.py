"""BFD against FRR (issue 14): the agent runs bfdd + zebra for peers with ``bfd`` set; r1
ties its BGP sessions to BFD (``neighbor ... bfd profile lb``). A frozen node (nft drops
everything both ways) loses its route in r1's FIB within a second; a killed bfdd is
restarted; a SIGKILLed agent takes bfdd with it and its route goes at once (ExaBGP dies with
the agent: TCP FIN); a peer whose BFD never comes Up gets no route."""

# Blocking process/file calls inside async tests are short and local on purpose.

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from typing import Any

import pytest

from tests.harness.agent_proc import (
    AgentFactory,
    AgentProc,
    RouteMonitor,
    namespace_processes,
    peer,
)
from tests.harness.frr import BgpLab, pid_alive, wait_until
from tests.harness.netns import run

pytestmark = pytest.mark.bgp

VIP = "10.99.0.1/32"
BFD = {"interval_ms": 100, "multiplier": 3}


def bfd_peer(bl: BgpLab, n: int = 1, **extra: Any) -> list[dict[str, Any]]:
    return [peer(bl, n, bfd=BFD, **extra)]


def start_agent(agent_factory: AgentFactory, bl: BgpLab) -> AgentProc:
    """lb1's agent with BFD to r1. Its workdir (runtime_dir's parent) may be entered by
    user frr, as /run is on a node."""
    agent, _ = agent_factory(bl, 1, peers=bfd_peer(bl), start=False)
    os.chmod(agent.workdir, 0o711)
    agent.start()
    return agent


def peer_status(agent: AgentProc) -> dict[str, Any]:
    peers = agent.status()["peers"]
    assert isinstance(peers, list)
    assert len(peers) == 1
    out = peers[0]
    assert isinstance(out, dict)
    return out


def freeze(ns: str) -> None:
    """Drop every packet in and out of ``ns``: no FIN, no carrier change (a frozen node)."""
    rules = (
        "table inet bgplb_freeze {\n"
        " chain in { type filter hook input priority -300; policy drop; }\n"
        " chain out { type filter hook output priority -300; policy drop; }\n"
        "}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", ns, "nft", "-f", "-"],
        input=rules,
        text=True,
        check=True,
        timeout=10,
    )


def thaw(ns: str) -> None:
    run("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "bgplb_freeze")


def frr_daemon_pids(ns: str, name: str) -> list[int]:
    """Pids in ``ns`` whose command is FRR's ``name`` daemon."""
    out = []
    for pid in namespace_processes(ns, besides=[]):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0].decode()
        except OSError:
            continue
        if argv0.endswith(f"/frr/{name}"):
            out.append(pid)
    return out


async def up_with_bfd(bl: BgpLab, agent: AgentProc) -> None:
    await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], 20, interval=0.05)
    await wait_until(lambda: bl.router.bfd_peers().get(bl.lb_v4(1)) == "up", 10, interval=0.1)
    await wait_until(lambda: peer_status(agent)["bfd"] == "up", 10, interval=0.1)


async def test_router_sees_bfd_up_and_a_frozen_node_is_gone_within_a_second(
    bgp_lab_factory, agent_factory: AgentFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1, bfd=(100, 3))
    agent = start_agent(agent_factory, bl)
    await up_with_bfd(bl, agent)
    st = peer_status(agent)
    assert (st["state"], st["held"], st["routes_advertised"]) == ("up", "", 1)
    metrics = agent.get("/metrics")
    assert f'bgplb_bfd_session_up{{peer="{bl.r1_v4(1)}"}} 1.0' in metrics
    with RouteMonitor(bl.router.ns) as fib_events:
        t0 = time.time()
        freeze(agent.ns)
        try:
            await wait_until(lambda: bl.router.fib(VIP) == [], 5, interval=0.01)
            await asyncio.sleep(0.2)  # the kernel event reaches the monitor
        finally:
            thaw(agent.ns)
    deleted = fib_events.deleted_at(VIP, t0)
    assert deleted is not None
    print(f"frozen node: VIP out of r1's FIB {(deleted - t0) * 1000:.0f} ms after the freeze")
    assert deleted - t0 <= 1.0
    # thawed: BFD and the session come back, and so does the route
    await up_with_bfd(bl, agent)


async def test_a_killed_bfdd_is_restarted_and_the_route_comes_back(
    bgp_lab_factory, agent_factory: AgentFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1, bfd=(100, 3))
    agent = start_agent(agent_factory, bl)
    await up_with_bfd(bl, agent)
    [old] = frr_daemon_pids(agent.ns, "bfdd")
    os.kill(old, signal.SIGKILL)
    await wait_until(lambda: frr_daemon_pids(agent.ns, "bfdd") not in ([], [old]), 15, 0.05)
    await up_with_bfd(bl, agent)
    assert agent.running()
    assert "bgplb_bfd_daemon_restarts_total 1.0" in agent.get("/metrics")
    assert [e["daemon"] for e in agent.events("frr_daemon_exited")] == ["bfdd"]


async def test_agent_sigkilled_withdraws_at_once_and_bfdd_dies_with_it(
    bgp_lab_factory, agent_factory: AgentFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1, bfd=(100, 3))
    agent, backend = agent_factory(bl, 1, peers=bfd_peer(bl), start=False)
    os.chmod(agent.workdir, 0o711)
    agent.start()
    await up_with_bfd(bl, agent)
    daemons = frr_daemon_pids(agent.ns, "bfdd") + frr_daemon_pids(agent.ns, "zebra")
    assert len(daemons) == 2
    with RouteMonitor(bl.router.ns) as fib_events:
        t0 = time.time()
        agent.kill()
        await wait_until(lambda: bl.router.fib(VIP) == [], 2, interval=0.005)
        await asyncio.sleep(0.2)
    deleted = fib_events.deleted_at(VIP, t0)
    assert deleted is not None
    print(f"agent SIGKILL: VIP out of r1's FIB after {(deleted - t0) * 1000:.0f} ms")
    assert deleted - t0 <= 0.150
    await wait_until(lambda: not any(pid_alive(p) for p in daemons), 5, interval=0.05)
    assert backend.proc is not None
    # the guards go with them (their children gone), and nothing else is left
    await wait_until(
        lambda: namespace_processes(agent.ns, besides=[backend.proc.pid]) == [], 5, 0.05
    )


async def test_a_peer_whose_bfd_never_comes_up_gets_no_route(
    bgp_lab_factory, agent_factory: AgentFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)  # r1 has no BFD: our session never comes Up
    agent = start_agent(agent_factory, bl)
    await wait_until(lambda: peer_status(agent)["state"] == "up", 20, interval=0.1)
    await asyncio.sleep(3)  # checks passed long ago (rise 2 at 0.2 s)
    st = peer_status(agent)
    assert st["bfd"] != "up"
    assert st["held"].startswith("bfd_not_up: bfd session ")
    assert st["routes_advertised"] == 0
    assert bl.router.fib(VIP) == []


async def test_a_reload_retimes_the_session_without_a_flap(
    bgp_lab_factory, agent_factory: AgentFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1, bfd=(100, 3))
    agent = start_agent(agent_factory, bl)
    await up_with_bfd(bl, agent)
    flaps = bl.router.peer_flaps(bl.lb_v4(1))

    def remote_rx() -> int:
        out = bl.router.vtysh_json_list("show bfd peers json")
        [p] = [p for p in out if p.get("peer") == bl.lb_v4(1)]
        return int(p["remote-receive-interval"])

    assert remote_rx() == 100
    agent.config["peers"][0]["bfd"] = {"interval_ms": 200, "multiplier": 3}
    agent.write_config()
    agent.signal(signal.SIGHUP)
    await wait_until(lambda: len(agent.events("config_reloaded")) == 1, 15, interval=0.2)
    await wait_until(lambda: remote_rx() == 200, 10, interval=0.2)
    assert bl.router.bfd_peers()[bl.lb_v4(1)] == "up"
    assert bl.router.peer_flaps(bl.lb_v4(1)) == flaps  # BGP not reset
    assert bl.router.fib(VIP) == [bl.lb_v4(1)]
    assert agent.events("bfd_reconfigured")
    assert not agent.events("bfd_reconfigure_failed")


async def test_ipv6_sessions_come_up_too(bgp_lab_factory, agent_factory: AgentFactory) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1, bfd=(100, 3))
    peers = [peer(bl, 1, bfd=BFD), peer(bl, 1, v6=True, bfd=BFD, next_hop_v4=bl.lb_v4(1))]
    agent, _ = agent_factory(bl, 1, peers=peers, start=False)
    os.chmod(agent.workdir, 0o711)
    agent.start()

    def both_up() -> bool:
        seen = bl.router.bfd_peers()
        return seen.get(bl.lb_v4(1)) == "up" and seen.get(bl.lb_v6(1)) == "up"

    await wait_until(both_up, 20, interval=0.2)
    await wait_until(
        lambda: [p["bfd"] for p in agent.status()["peers"]] == ["up", "up"], 10, interval=0.2
    )
    await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], 10, interval=0.1)
