"""Traffic through the VIP: the dataplane adapter's objects really forward (IPVS masq)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from bgplb.dataplane.netlink import NetlinkDataplane
from bgplb.model import (
    AddressSpec,
    LinkSpec,
    Protocol,
    RealServerKey,
    RealServerSpec,
    UpdateRealServer,
    UpdateVirtualService,
    VirtualServiceKey,
    VirtualServiceSpec,
)

from .conftest import Topology
from .specs import converge, ip, service_state

pytestmark = pytest.mark.kernel

VIP4, VIP6 = "10.99.0.1", "fd00:99::1"


async def test_dual_stack_two_ports_reach_the_nodes_own_backend(
    topology: Topology, dataplane: NetlinkDataplane
) -> None:
    lab, node = topology.lab, topology.node
    for port in (8080, 8081):
        await lab.http_server(node, topology.node_v4, port, f"v4-{port}")
        await lab.http_server(node, topology.node_v6, port, f"v6-{port}")
    want = service_state(
        "web", [VIP4, VIP6], [(80, 8080), (81, 8081)], [topology.node_v4, topology.node_v6]
    )

    actions = await converge(dataplane, want)

    assert len(actions) == 1 + 2 + 4 + 4  # link, 2 VIPs, 4 virtual services, 4 real servers
    assert (await dataplane.observe()).owned == want
    for vip, family in ((VIP4, "v4"), (VIP6, "v6")):
        for port, target in ((80, 8080), (81, 8081)):
            assert await lab.http_get(topology.client, vip, port) == f"{family}-{target}"
    assert await converge(dataplane, want) == []  # nothing left to do


async def test_weight_zero_moves_new_connections_also_with_persistence(
    topology: Topology, dataplane: NetlinkDataplane
) -> None:
    lab = topology.lab
    (ns1, rs1), (ns2, rs2) = await topology.add_real_server(), await topology.add_real_server()
    await lab.http_server(ns1, rs1, 8080, "rs1")
    await lab.http_server(ns2, rs2, 8080, "rs2")
    want = service_state("pool", [VIP4], [(80, 8080)], [rs1, rs2], scheduler="rr")
    await converge(dataplane, want)

    async def fetch(n: int) -> Counter[str]:
        return Counter([await lab.http_get(topology.client, VIP4, 80) for _ in range(n)])

    assert await fetch(6) == {"rs1": 3, "rs2": 3}  # round robin over both, return via the node

    key = VirtualServiceKey(ip(VIP4), 80, Protocol.TCP)
    drained = RealServerSpec(RealServerKey(key, ip(rs1), 8080), weight=0)
    await dataplane.apply(UpdateRealServer(drained))
    assert await fetch(6) == {"rs2": 6}

    # Persistence: one client sticks to one real server ...
    await dataplane.apply(UpdateRealServer(RealServerSpec(drained.key, weight=1)))
    await dataplane.apply(UpdateVirtualService(VirtualServiceSpec(key, "rr", persistence=300)))
    sticky = await fetch(4)
    assert len(sticky) == 1
    (chosen,) = sticky
    # ... until that one gets weight 0: expire_quiescent_template lets new connections move.
    chosen_addr = rs1 if chosen == "rs1" else rs2
    other = "rs2" if chosen == "rs1" else "rs1"
    await dataplane.apply(
        UpdateRealServer(RealServerSpec(RealServerKey(key, ip(chosen_addr), 8080), weight=0))
    )
    assert await fetch(4) == {other: 4}

    observed = await dataplane.observe()
    assert VirtualServiceSpec(key, "rr", 300) in observed.owned.services
    weights = {r.key.address: r.weight for r in observed.owned.real_servers}
    assert weights == {ip(chosen_addr): 0, ip(rs1 if chosen_addr == rs2 else rs2): 1}


async def test_counters_move_and_show_in_observe(
    topology: Topology, dataplane: NetlinkDataplane
) -> None:
    lab = topology.lab
    ns1, rs1 = await topology.add_real_server()
    await lab.http_server(ns1, rs1, 8080, "rs1")
    want = service_state("cnt", [VIP4], [(80, 8080)], [rs1])
    await converge(dataplane, want)
    key = VirtualServiceKey(ip(VIP4), 80, Protocol.TCP)
    rkey = RealServerKey(key, ip(rs1), 8080)

    before = await dataplane.observe()
    assert before.service_counters[key].connections == 0
    for _ in range(3):
        assert await lab.http_get(topology.client, VIP4, 80) == "rs1"
    # The kernel's estimator folds the per-CPU counters into what a dump shows every 2 s.
    for _ in range(30):
        after = await dataplane.observe()
        if after.service_counters[key].connections >= 3:
            break
        await asyncio.sleep(0.5)

    svc, rs = after.service_counters[key], after.real_server_counters[rkey]
    assert svc.connections == 3
    assert rs.connections == 3
    assert svc.packets_in > 3
    assert svc.packets_out > 3
    assert svc.bytes_in > 0
    assert svc.bytes_out > 0
    # closed connections stay in the IPVS table (TIME_WAIT) and count as inactive
    assert rs.active_connections + rs.inactive_connections == 3
    assert svc.inactive_connections == rs.inactive_connections  # the service sums its dests
    assert after.owned == want
    assert AddressSpec("cnt", ip(VIP4)) in after.owned.addresses
    assert LinkSpec("cnt") in after.owned.links


async def test_read_counters_gets_fresh_counters_and_the_inbound_estimator(
    topology: Topology, dataplane: NetlinkDataplane
) -> None:
    """Issue 15 item 5: ``read_counters`` (one IPVS GET per key, on its own socket) sees
    packets the last observation has not, and the kernel's inbound rate estimator."""
    lab = topology.lab
    ns1, rs1 = await topology.add_real_server()
    await lab.http_server(ns1, rs1, 8080, "rs1")
    want = service_state("rate", [VIP4], [(80, 8080)], [rs1])
    await converge(dataplane, want)
    key = VirtualServiceKey(ip(VIP4), 80, Protocol.TCP)
    absent = VirtualServiceKey(ip(VIP4), 81, Protocol.TCP)
    observed = await dataplane.observe()
    assert await dataplane.read_counters([absent]) == {}
    for _ in range(20):
        assert await lab.http_get(topology.client, VIP4, 80) == "rs1"
    rate = 0
    for _ in range(30):  # the per-CPU counters are folded in every 2 s
        fresh = await dataplane.read_counters([key, absent])
        assert set(fresh) == {key}
        rate = max(rate, fresh[key].packets_in_per_second)
        if fresh[key].packets_in >= 20 * 3 and rate > 0:
            break
        await asyncio.sleep(0.5)
    assert fresh[key].packets_in > observed.service_counters[key].packets_in
    assert fresh[key].packets_in >= 20 * 3  # SYN, ACK, request, ... per connection
    assert rate > 0, "the kernel's inbound estimator (IPVS_STATS_ATTR_INPPS) stayed 0"
