"""Objects someone else made in the node namespace: the agent must never touch them."""

from __future__ import annotations

import socket

from pyroute2 import AsyncIPRoute, AsyncIPVS, IPVSDest, IPVSService

from bgplb.model import Protocol, VirtualServiceKey

from .specs import ip

FOREIGN_VS = VirtualServiceKey(ip("10.99.0.60"), 80, Protocol.TCP)


async def add_foreign_objects(node: str) -> None:
    """What an operator (or another tool) made: never ours."""
    async with AsyncIPRoute(netns=node) as ipr:
        await ipr.link("add", ifname="foreign0", kind="dummy")
        await ipr.link("add", ifname="taken", kind="dummy")  # a name one of our services wants
        index = (await ipr.link_lookup(ifname="foreign0"))[0]
        await ipr.link("set", index=index, state="up")
        await ipr.addr("add", index=index, address="10.99.0.50", prefixlen=32)
        await ipr.addr("add", index=1, address="10.99.0.51", prefixlen=32)
    ipvs = AsyncIPVS(netns=node)
    await ipvs.setup_endpoint()
    try:
        svc = IPVSService(addr="10.99.0.60", port=80, protocol=socket.IPPROTO_TCP)
        await ipvs.service("add", service=svc)
        await ipvs.dest("add", service=svc, dest=IPVSDest(addr="10.0.100.2", port=80, fwd_method=0))
    finally:
        ipvs.close()


async def foreign_objects_present(node: str) -> dict[str, bool]:
    async with AsyncIPRoute(netns=node) as ipr:
        links = {m.get_attr("IFLA_IFNAME") async for m in await ipr.link("dump")}
        addrs = {m.get_attr("IFA_LOCAL") async for m in await ipr.addr("dump")}
    ipvs = AsyncIPVS(netns=node)
    await ipvs.setup_endpoint()
    try:
        services = [IPVSService.from_message(m) for m in await ipvs.service("dump")]
        vs = [s for s in services if s.get("addr") == "10.99.0.60"]
        dests = await ipvs.dest("dump", service=vs[0]) if vs else []
    finally:
        ipvs.close()
    return {
        "foreign0": "foreign0" in links,
        "taken": "taken" in links,
        "10.99.0.50": "10.99.0.50" in addrs,
        "10.99.0.51": "10.99.0.51" in addrs,
        "ipvs service": bool(vs),
        "ipvs dest": len(dests) == 1,
    }


async def kernel_names(node: str) -> tuple[set[str], set[str]]:
    async with AsyncIPRoute(netns=node) as ipr:
        links = {m.get_attr("IFLA_IFNAME") async for m in await ipr.link("dump")}
        addrs = {
            m.get_attr("IFA_LOCAL") or m.get_attr("IFA_ADDRESS")
            async for m in await ipr.addr("dump")
        }
    return links, addrs


ALL_THERE = dict.fromkeys(
    ["foreign0", "taken", "10.99.0.50", "10.99.0.51", "ipvs service", "ipvs dest"], True
)
