"""The whole agent (``bgp-lb run``) against FRR: health decides what the router's FIB holds."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.harness.agent_proc import FAST_CHECK, AgentFactory, peer, service
from tests.harness.frr import BgpLab, wait_until

pytestmark = pytest.mark.bgp

VIP = "10.99.0.1/32"


def _web(bl: BgpLab) -> dict[str, object]:
    """``web``: VIP 10.99.0.1, http check of lb1's backend every 0.2 s, rise 2, fall 2."""
    return service("web", ["10.99.0.1"], bl.lb_v4(1), timing=FAST_CHECK)


def _ts(line: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(line["timestamp"]))


async def test_rise_fall_and_return(bgp_lab_factory, agent_factory: AgentFactory) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    agent, backend = agent_factory(bl, 1, services=[_web(bl)])
    took = await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], 15)
    print(f"agent start -> VIP in the router FIB: {took:.2f}s")
    lines = agent.log_lines()
    checks = [x for x in lines if x.get("event") == "health_check_changed"]
    announced = [
        x for x in lines if x.get("event") == "service_decision" and x.get("decision") == "announce"
    ]
    assert announced, "no announce decision logged"
    up = [x for x in checks if x.get("status") == "up"]
    assert up, "no check result logged"
    assert up[0]["successes"] == 2  # rise: 2 good probes
    assert _ts(up[0]) <= _ts(announced[0])
    results = [x for x in lines if x.get("event") == "health_check_result"]
    before = [x for x in results if _ts(x) <= _ts(announced[0])]
    assert [x["ok"] for x in before][-2:] == [True, True]

    backend.stop()
    took = await wait_until(lambda: bl.router.fib(VIP) == [], 5)
    print(f"backend stopped -> VIP gone from the router FIB: {took:.2f}s")
    down = [x for x in agent.events("health_check_changed") if x.get("status") == "down"]
    assert down
    assert down[0]["failures"] == 2  # fall: 2 failed probes
    withdrawn = [
        x
        for x in agent.events("service_decision")
        if x.get("decision") == "withdraw" and x.get("reason") == "check_failed"
    ]
    assert withdrawn
    assert _ts(down[0]) <= _ts(withdrawn[0])

    backend.start()
    took = await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], 5)
    print(f"backend back -> VIP back in the router FIB: {took:.2f}s")
    assert agent.running()
    assert agent.errors() == []
    # announce mode needs neither dummy links nor IPVS (this kernel has neither)
    assert [p for p in agent.status()["prerequisites"] if not p["ok"]] == []


async def test_not_announced_before_rise(bgp_lab_factory, agent_factory: AgentFactory) -> None:  # type: ignore[no-untyped-def]
    """A backend that never answers: the session comes up, the VIP is never announced."""
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    agent, backend = agent_factory(bl, 1, services=[_web(bl)], start=False)
    backend.stop()
    agent.start()
    await wait_until(lambda: _peer_up(agent.status()), 15, interval=0.1)
    await wait_until(lambda: len(agent.events("health_check_failed")) >= 1, 5, interval=0.1)
    status = agent.status()
    web = next(s for s in status["services"] if s["name"] == "web")
    assert web["decision"] == "withdraw"
    assert bl.router.fib(VIP) == []
    pfx = bl.router.vtysh_json(f"show bgp neighbors {bl.lb_v4(1)} json")[bl.lb_v4(1)]
    assert pfx["bgpState"] == "Established"  # type: ignore[index]


def _peer_up(status: dict[str, object]) -> bool:
    peers = status["peers"]
    assert isinstance(peers, list)
    return bool(peers) and all(p["state"] == "up" for p in peers)


async def test_v6_vip_over_v6_and_v4_sessions(bgp_lab_factory, agent_factory: AgentFactory) -> None:  # type: ignore[no-untyped-def]
    """One v6 VIP, two sessions: over v6 (next hop self) and over v4 (explicit v6 next hop)."""
    bl: BgpLab = bgp_lab_factory(n_lbs=1)
    vip6 = "fd00:99::1/128"
    peers = [peer(bl, 1, next_hop_v6=bl.lb_v6(1)), peer(bl, 1, v6=True)]
    agent, backend = agent_factory(
        bl, 1, peers=peers, services=[service("web6", ["fd00:99::1"], bl.lb_v4(1))]
    )
    sessions = {bl.lb_v4(1), bl.lb_v6(1)}  # FRR's peer ids: the v4 and the v6 session
    took = await wait_until(lambda: set(_rib_peers(bl, vip6)) == sessions, 15)
    print(f"v6 VIP over both sessions in the router RIB after {took:.2f}s")
    for path in _rib_peers(bl, vip6).values():
        hops = path["nexthops"]
        assert isinstance(hops, list)
        assert hops[0]["ip"] == bl.lb_v6(1)  # via the node, on either session
        assert path["valid"] is True
    await wait_until(lambda: bl.router.fib(vip6) == [bl.lb_v6(1)], 5)
    web6 = agent.status()["services"][0]
    assert web6["routes"] == {bl.r1_v4(1): [vip6], bl.r1_v6(1): [vip6]}
    backend.stop()
    await wait_until(lambda: _rib_peers(bl, vip6) == {}, 5)
    await wait_until(lambda: bl.router.fib(vip6) == [], 2)


def _rib_peers(bl: BgpLab, prefix: str) -> dict[str, dict[str, object]]:
    """FRR's RIB paths for ``prefix``, by the announcing peer."""
    afi = "ipv6" if ":" in prefix else "ipv4"
    data = bl.router.vtysh_json(f"show bgp {afi} unicast {prefix} json")
    paths = data.get("paths", [])
    assert isinstance(paths, list)
    return {p["peer"]["peerId"]: p for p in paths}
