"""What the Go bgp-lb leaves on a node (issue 16 item 4), made the way it makes it (an
untagged dummy named after the service, left down; the VIP /32 on it without IFA_PROTO; an
`rr` IPVS service on the VIP with `routerID:targetLocalPort`, masq, weight 0): a first start
from the Go command line (`adopt_first_start`) adopts all of it and converges without a
conflict; `bgp-lb run` (no adoption on a first start) leaves it foreign."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pyroute2 import AsyncIPRoute, AsyncIPVS, IPVSDest, IPVSService

from bgplb.dataplane.netlink import NetlinkDataplane
from bgplb.dataplane.rtnl import LINK_ALIAS
from bgplb.model import AddressSpec, LinkSpec, Protocol, VirtualServiceKey

from .conftest import Topology
from .specs import converge, ip, service_state

pytestmark = pytest.mark.kernel

VIP = "10.99.2.1"
VS = VirtualServiceKey(ip(VIP), 80, Protocol.TCP)


async def leave_go_objects(topology: Topology) -> None:
    async with AsyncIPRoute(netns=topology.node) as ipr:
        await ipr.link("add", ifname="matchbox", kind="dummy")  # never set up, no alias
        index = (await ipr.link_lookup(ifname="matchbox"))[0]
        await ipr.addr("add", index=index, address=VIP, prefixlen=32)
    ipvs = AsyncIPVS(netns=topology.node)
    await ipvs.setup_endpoint()
    try:
        svc = IPVSService(addr=VIP, port=80, protocol=socket.IPPROTO_TCP, sched_name="rr")
        await ipvs.service("add", service=svc)
        dest = IPVSDest(addr=topology.node_v4, port=8080, fwd_method=0, weight=0)
        await ipvs.dest("add", service=svc, dest=dest)
    finally:
        ipvs.close()


async def link_alias(topology: Topology, name: str) -> str | None:
    async with AsyncIPRoute(netns=topology.node) as ipr:
        async for m in await ipr.link("dump"):
            if m.get_attr("IFLA_IFNAME") == name:
                alias = m.get_attr("IFLA_IFALIAS")
                return str(alias) if alias is not None else None
    return None


@pytest.mark.parametrize("adopt", [True, False])
async def test_go_leftovers(topology: Topology, state_dir: Path, adopt: bool) -> None:
    await leave_go_objects(topology)
    want = service_state("matchbox", [VIP], [(80, 8080)], [topology.node_v4])
    dp = NetlinkDataplane(state_dir, netns=topology.node, timeout=20.0, adopt_first_start=adopt)
    dp.set_desired_source(lambda: want)
    try:
        observed = await dp.observe()
        if not adopt:
            assert "matchbox" in observed.foreign_links
            assert VS in observed.foreign_services
            return
        assert AddressSpec("matchbox", ip(VIP)) in observed.owned.addresses
        assert VS in observed.owned.service_keys()
        assert "matchbox" not in observed.foreign_links
        await converge(dp, want)  # tags and raises the link, sets the weight: no conflict
        assert (await dp.observe()).owned == want
        assert await link_alias(topology, "matchbox") == LINK_ALIAS
        assert LinkSpec("matchbox") in want.links
    finally:
        await dp.close()
