"""UCMP and large communities against FRR 8.4 (issue 14, items 3-5): two real agents (lb1,
lb2) announce the same VIPs (v4 and v6, announce mode) with ``link_bandwidth`` from their
configured capacity, 2 and 1. r1 has no link-bandwidth knob at all: its kernel FIB must hold
the VIPs with weighted next hops in the 2:1 ratio (FRR: weight = 100 x bw / total, so 66/33),
its RIB must show the link-bandwidth community (lb2 runs a 4-byte AS: AS_TRANS, 23456) and
the large community of ``attributes.healthy``. A reload that raises lb1's capacity to 4 moves
the FIB to 80/20; one that removes ``link_bandwidth`` from lb2 falls back to plain ECMP (the
risk docs/bgp.md describes)."""

from __future__ import annotations

import json
import signal
from typing import Any

import pytest

from tests.harness.agent_proc import AgentFactory, AgentProc, peer, service
from tests.harness.frr import BgpLab, Router, wait_until
from tests.harness.netns import run

pytestmark = pytest.mark.bgp

VIP4, VIP6 = "10.99.0.1", "fd00:99::1"
FOUR_BYTE_AS = 4200000001


def weights(router: Router, prefix: str) -> dict[str, int]:
    """Next hop -> kernel weight of ``prefix`` in the router's FIB (1 for a single path)."""
    family = "-6" if ":" in prefix else "-4"
    out = json.loads(
        run("ip", family, "-n", router.ns, "-j", "route", "show", prefix, "proto", "bgp") or "[]"
    )
    hops: dict[str, int] = {}
    for r in out:
        if "gateway" in r:
            hops[r["gateway"]] = 1
        for n in r.get("nexthops", []):
            if "gateway" in n:
                hops[n["gateway"]] = int(n.get("weight", 1))
    return hops


def path_of(router: Router, prefix: str, peer_address: str) -> dict[str, Any]:
    family = "ipv6" if ":" in prefix else "ipv4"
    data = router.vtysh_json(f"show bgp {family} unicast {prefix} json")
    paths = data.get("paths", [])
    assert isinstance(paths, list)
    for p in paths:
        if p.get("peer", {}).get("peerId") == peer_address:
            return dict(p)
    raise AssertionError(f"no path from {peer_address} for {prefix}: {paths}")


def ucmp_service(bl: BgpLab, n: int, lb: Any) -> dict[str, Any]:
    extra: dict[str, Any] = {
        "attributes": {"healthy": {"large_communities": [f"65001:{n}:4294967295"]}}
    }
    if lb is not None:
        extra["link_bandwidth"] = lb
    return service("web", [VIP4, VIP6], bl.lb_v4(n), **extra)


async def reload(agent: AgentProc, n_reloads: int) -> None:
    agent.write_config()
    agent.signal(signal.SIGHUP)
    await wait_until(lambda: len(agent.events("config_reloaded")) == n_reloads, 20, interval=0.2)


async def test_weighted_next_hops_follow_the_capacity_v4_and_v6(
    bgp_lab_factory, agent_factory: AgentFactory
) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=2)
    r1 = bl.router
    lb1, lb2 = bl.lb_v4(1), bl.lb_v4(2)
    nh6 = {1: bl.lb_v6(1), 2: bl.lb_v6(2)}
    agents = {}
    for n, capacity in ((1, 2), (2, 1)):
        lb = {"capacity": capacity, "hold_down": 0}
        node: dict[str, Any] = {"local_as": FOUR_BYTE_AS} if n == 2 else {}
        agents[n], _ = agent_factory(
            bl,
            n,
            peers=[peer(bl, n, next_hop_v6=nh6[n])],
            services=[ucmp_service(bl, n, lb)],
            **node,
        )

    want4 = {lb1: 66, lb2: 33}
    want6 = {nh6[1]: 66, nh6[2]: 33}
    await wait_until(lambda: weights(r1, VIP4) == want4 and weights(r1, VIP6) == want6, 45)
    print(f"2:1 -> FIB v4 {weights(r1, VIP4)} v6 {weights(r1, VIP6)}")

    for prefix in (f"{VIP4}/32", f"{VIP6}/128"):
        p1, p2 = path_of(r1, prefix, lb1), path_of(r1, prefix, lb2)
        print(prefix, p1["extendedCommunity"]["string"], p2["extendedCommunity"]["string"])
        assert p1["extendedCommunity"]["string"] == f"LB:{bl.lb_as}:250000 (2.000 Mbps)"
        assert p2["extendedCommunity"]["string"] == "LB:23456:125000 (1.000 Mbps)"  # AS_TRANS
        assert p1["largeCommunity"]["string"] == "65001:1:4294967295"
        assert p2["largeCommunity"]["string"] == "65001:2:4294967295"
        assert p1.get("multipath")
        assert p2.get("multipath")

    # lb1's capacity doubles: the routers follow (4:1 -> 80/20)
    agents[1].config["services"][0]["link_bandwidth"]["capacity"] = 4
    await reload(agents[1], 1)
    await wait_until(
        lambda: (
            weights(r1, VIP4) == {lb1: 80, lb2: 20}
            and weights(r1, VIP6) == {nh6[1]: 80, nh6[2]: 20}
        ),
        20,
    )
    print(f"4:1 -> FIB v4 {weights(r1, VIP4)} v6 {weights(r1, VIP6)}")

    # one node without the community: FRR falls back to plain ECMP for the whole set
    agents[2].config["services"][0].pop("link_bandwidth")
    await reload(agents[2], 1)
    await wait_until(lambda: weights(r1, VIP4) == {lb1: 1, lb2: 1}, 20)
    print(f"lb2 without link_bandwidth -> FIB v4 {weights(r1, VIP4)}")
    assert "extendedCommunity" not in path_of(r1, f"{VIP4}/32", lb2)
