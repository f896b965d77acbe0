"""Pool mode's forwarding through the real adapter, IPv4 and IPv6 (issue 15 item 3): the node
sends the client's packets to the real servers by direct routing (dr) or encapsulated (tunnel:
IPIP, ip6ip6 for IPv6), and each real server answers the client itself, from the VIP, on a
link that bypasses the node (docs/forwarding.md, "Real servers in pool mode").

node <-> pN (real server N, its own link) and pN <-> client (the bypass): a reply through the
node would not do (a packet from the node's own VIP arriving there is a martian), so a request
answered proves the reply took the bypass. Both real servers must answer some of the requests
(mh hashes the source port too).
"""

from __future__ import annotations

import asyncio
from asyncio.subprocess import PIPE

import pytest
from pyroute2 import AsyncIPRoute

from bgplb.admin import AdminState
from bgplb.config import Config
from bgplb.dataplane.netlink import NetlinkDataplane
from bgplb.plan import plan
from bgplb.policy import desired_state

from .conftest import Topology
from .lab import IFA_F_NODAD

pytestmark = pytest.mark.kernel

VIPS = {4: "10.99.0.8", 6: "fd00:99::8"}
CLIENT = {4: "10.0.100.2", 6: "fd00:100::2"}
PORT = 80
REQUESTS = 16
TUNNEL_MODULES = {4: "ipip", 6: "ip6_tunnel"}
TUNNEL_DEVICE = {4: "tunl0", 6: "ip6tnl0"}  # each namespace's fallback device: decapsulates


def _server(n: int, family: int) -> str:
    return f"10.0.{20 + n}.2" if family == 4 else f"fd00:{20 + n}::2"


def pool_config(forward: str, family: int) -> Config:
    return Config.model_validate(
        {
            "node": {"router_id": "10.0.100.1", "local_as": 65001},
            "peers": [{"address": "10.0.100.2", "asn": 65000}],
            "services": [
                {
                    "name": "pool",
                    "vips": [VIPS[family]],
                    "preserve_connections": True,
                    "ports": [{"port": PORT}],
                    "real_servers": [
                        {"address": _server(n, family), "forward": forward} for n in (1, 2)
                    ],
                }
            ],
        }
    )


async def _real_server(topology: Topology, n: int, forward: str, family: int) -> None:
    """Namespace pN: a link to the node, a bypass link to the client, the VIP on lo (or the
    tunnel's decapsulation), a server on PORT answering with its name."""
    lab, vip = topology.lab, VIPS[family]
    ns = lab.netns(f"p{n}")
    await lab.up(ns)
    await lab.wire(
        topology.node, f"p{n}", [f"10.0.{20 + n}.1/24", f"fd00:{20 + n}::1/64"],
        ns, "eth0", [f"10.0.{20 + n}.2/24", f"fd00:{20 + n}::2/64"],
    )  # fmt: skip
    await lab.wire(
        ns, "byp", [f"10.0.{30 + n}.1/24", f"fd00:{30 + n}::1/64"],
        topology.client, f"b{n}", [f"10.0.{30 + n}.2/24", f"fd00:{30 + n}::2/64"],
    )  # fmt: skip
    sysctls = {"net.ipv4.conf.all.arp_ignore": 1, "net.ipv4.conf.all.arp_announce": 2}
    # the client's packets arrive on eth0 (or the tunnel), its route back is the bypass
    sysctls |= {f"net.ipv4.conf.{d}.rp_filter": 0 for d in ("all", "default", "eth0")}
    await lab.sysctl(ns, sysctls)
    # the replies come from the VIP on b{n}, whose route is the node: no reverse-path filter
    await lab.sysctl(topology.client, {f"net.ipv4.conf.{d}.rp_filter": 0 for d in ("all", f"b{n}")})
    async with AsyncIPRoute(netns=ns) as ipr:
        # replies to the client leave by the bypass, from the VIP
        gw4, gw6 = f"10.0.{30 + n}.2", f"fd00:{30 + n}::2"
        await ipr.route("add", dst=f"{CLIENT[4]}/32", gateway=gw4)
        await ipr.route("add", dst=f"{CLIENT[6]}/128", gateway=gw6)
        flags = {"flags": IFA_F_NODAD} if family == 6 else {}
        await ipr.addr("add", index=1, address=vip, prefixlen=32 if family == 4 else 128, **flags)
        if forward == "tunnel":
            device = TUNNEL_DEVICE[family]
            index = (await ipr.link_lookup(ifname=device))[0]
            await ipr.link("set", index=index, state="up")
    if forward == "tunnel" and family == 4:
        await lab.sysctl(ns, {"net.ipv4.conf.tunl0.rp_filter": 0})
    await lab.http_server(ns, "0.0.0.0" if family == 4 else "::", PORT, f"p{n}")


@pytest.mark.parametrize(
    ("forward", "family"), [("dr", 4), ("dr", 6), ("tunnel", 4), ("tunnel", 6)]
)
async def test_real_servers_answer_the_client_themselves(
    topology: Topology, dataplane: NetlinkDataplane, forward: str, family: int
) -> None:
    if forward == "tunnel":  # before the namespaces: each new one gets the fallback device
        module = TUNNEL_MODULES[family]
        proc = await asyncio.create_subprocess_exec("modprobe", module, stderr=PIPE)
        _, err = await proc.communicate()
        assert proc.returncode == 0, f"modprobe {module}: {err.decode()}"
    for n in (1, 2):
        await _real_server(topology, n, forward, family)
    desired = desired_state(pool_config(forward, family), {}, AdminState(), 2.0)
    for action in plan(desired, await dataplane.observe(), {}).actions:
        await dataplane.apply(action)

    answers = [
        await topology.lab.http_get(topology.client, VIPS[family], PORT) for _ in range(REQUESTS)
    ]
    assert sorted(set(answers)) == ["p1", "p2"], answers
    observed = await dataplane.observe()
    [service] = [s for s in observed.owned.services if str(s.key.vip) == VIPS[family]]
    assert (service.scheduler, service.mh_fallback, service.mh_port) == ("mh", True, True)
    assert {r.forward.value for r in observed.owned.real_servers} == {forward}
