"""Per-peer advertisement against FRR (issue 14, item 2): the real agent on lb1 with sessions
to two routers, r1 and r2. ``web`` lists r1 only, ``both`` goes to every peer. r2's RIB never
has a path for web; a refused reload (unknown peer) changes nothing; a SIGHUP reload that moves
web to r2 withdraws it from r1 and announces it to r2, and ``both`` stays in both routers'
FIBs with no UPDATE at either router other than web's (bgpd's UPDATE counters, as in
test_agent_reload.py: one UPDATE each, the withdraw and the announce)."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.harness.agent_proc import AgentFactory, RouteMonitor, peer, service
from tests.harness.frr import BgpLab, Router, wait_until

pytestmark = pytest.mark.bgp

WEB, BOTH = "10.99.0.1/32", "10.99.0.2/32"


def rib_paths(router: Router, prefix: str) -> int:
    """How many paths bgpd's RIB holds for ``prefix`` (FIB aside: what BGP received)."""
    data = router.vtysh_json(f"show bgp ipv4 unicast {prefix} json")
    paths = data.get("paths", [])
    assert isinstance(paths, list)
    return len(paths)


def updates_received(router: Router, address: str) -> int:
    info = router.vtysh_json(f"show bgp neighbors {address} json").get(address, {})
    assert isinstance(info, dict)
    stats = info.get("messageStats", {})
    assert isinstance(stats, dict)
    return int(stats["updatesRecv"])


async def settled(counters: dict[str, tuple[Router, str]]) -> dict[str, int]:
    """UPDATE counters once none of them moved for 3 s (start-up traffic is over)."""
    before = {k: updates_received(r, a) for k, (r, a) in counters.items()}
    async with asyncio.timeout(40):
        while True:
            await asyncio.sleep(3.0)
            now = {k: updates_received(r, a) for k, (r, a) in counters.items()}
            if now == before:
                return now
            before = now


async def test_a_vip_goes_to_its_peer_only_and_a_reload_moves_it_without_a_flap(
    bgp_lab_factory, agent_factory: AgentFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1, routers=2)
    assert bl.r2 is not None
    r1, r2 = bl.router, bl.r2
    lb, lb2 = bl.lb_v4(1), bl.lb_v4_r2(1)
    peers = [
        peer(bl, 1, name="r1"),
        {
            "name": "r2",
            "address": bl.r2_v4(1),
            "asn": r2.asn,
            "local_address": lb2,
            "hold_time": 3,
        },
    ]
    services = [
        service("web", [WEB.split("/")[0]], lb, peers=["r1"]),
        service("both", [BOTH.split("/")[0]], lb),
    ]
    agent, _ = agent_factory(bl, 1, peers=peers, services=services)
    await wait_until(
        lambda: r1.fib(WEB) == [lb] and r1.fib(BOTH) == [lb] and r2.fib(BOTH) == [lb2], 30
    )
    counters = {"r1": (r1, lb), "r2": (r2, lb2)}
    before = await settled(counters)
    # web was never sent to r2: no path in its RIB (not just filtered out of the FIB)
    assert rib_paths(r2, WEB) == 0
    assert r2.fib(WEB) == []
    assert rib_paths(r1, WEB) == 1
    web = next(s for s in agent.status()["services"] if s["name"] == "web")
    assert (web["peers"], list(web["routes"])) == ([bl.r1_v4(1)], [bl.r1_v4(1)])

    # a reload naming an unknown peer: refused with exit 2, nothing sent
    agent.config["services"][0]["peers"] = ["r3"]
    agent.write_config()
    res = await asyncio.to_thread(agent.cli, "reload", check=False)
    print(f"reload (unknown peer): exit {res.returncode}: {res.stderr.strip()}")
    assert res.returncode == 2
    assert "services[0].peers[0]: unknown peer 'r3' (peer names: 'r1', 'r2')" in res.stderr
    assert agent.status()["last_reload"]["ok"] is False

    # the move, by SIGHUP
    agent.config["services"][0]["peers"] = ["r2"]
    agent.write_config()
    with RouteMonitor(r1.ns) as mon1, RouteMonitor(r2.ns) as mon2:
        t0 = time.time()
        agent.signal(signal.SIGHUP)
        await wait_until(lambda: len(agent.events("config_reloaded")) == 1, 15, interval=0.2)
        await wait_until(lambda: r1.fib(WEB) == [] and r2.fib(WEB) == [lb2], 15, interval=0.05)
        after = await settled(counters)
    moved = {k: after[k] - before[k] for k in counters}
    print(f"move web r1 -> r2: UPDATEs received {moved}")
    assert rib_paths(r1, WEB) == 0
    assert rib_paths(r2, WEB) == 1
    assert r1.fib(BOTH) == [lb]
    assert r2.fib(BOTH) == [lb2]
    assert mon1.deleted_at(BOTH, t0) is None, "r1's kernel deleted the route of 'both'"
    assert mon2.deleted_at(BOTH, t0) is None, "r2's kernel deleted the route of 'both'"
    # one UPDATE per router: web's withdraw at r1, web's announce at r2; none for 'both'
    assert moved == {"r1": 1, "r2": 1}
    assert mon1.deleted_at(WEB, t0) is not None
    status = agent.status()
    assert status["last_reload"]["ok"] is True
    web = next(s for s in status["services"] if s["name"] == "web")
    assert (web["peers"], list(web["routes"])) == ([bl.r2_v4(1)], [bl.r2_v4(1)])
    both = next(s for s in status["services"] if s["name"] == "both")
    assert sorted(both["routes"]) == sorted([bl.r1_v4(1), bl.r2_v4(1)])
    assert [e["event"] for e in agent.errors()] == ["config_reload_failed"]
