"""Fixtures for tests that need a kernel with dummy links and IPVS (``make test-kernel``).

Every test gets its own namespaces: ``node`` (where the dataplane/agent works), ``client``
(behind a veth, routes via the node) and, on request, real-server namespaces whose return
path goes through the node (as masquerading needs). They are always deleted afterwards.
On a kernel without dummy/IPVS (the host) every test here is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bgplb.dataplane.netlink import NetlinkDataplane

from .lab import Lab, kernel_unavailable_reason

NODE_SYSCTLS = {
    "net.ipv4.ip_forward": 1,
    "net.ipv6.conf.all.forwarding": 1,
    "net.ipv4.vs.expire_nodest_conn": 1,
    "net.ipv4.vs.expire_quiescent_template": 1,
}


@dataclass
class Topology:
    """node <-veth-> client (10.0.100.0/24, fd00:100::/64); node <-veth-> rsN (10.0.N.0/24)."""

    lab: Lab
    node: str
    client: str
    node_v4: str = "10.0.100.1"
    node_v6: str = "fd00:100::1"
    real_servers: list[str] = field(default_factory=list)  # addresses, in creation order

    async def add_real_server(self) -> tuple[str, str]:
        """A namespace with one address whose default route is the node; (ns, address)."""
        n = len(self.real_servers) + 1
        ns = self.lab.netns(f"rs{n}")
        await self.lab.up(ns)
        await self.lab.wire(self.node, f"r{n}", [f"10.0.{n}.1/24"], ns, "eth0", [f"10.0.{n}.2/24"])
        await self.lab.default_route(ns, f"10.0.{n}.1")
        self.real_servers.append(f"10.0.{n}.2")
        return ns, f"10.0.{n}.2"


@pytest.fixture(autouse=True)
def _needs_dataplane_kernel() -> None:
    reason = kernel_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
async def lab() -> AsyncIterator[Lab]:
    lab = Lab()
    try:
        yield lab
    finally:
        await lab.close()


@pytest.fixture
async def topology(lab: Lab) -> Topology:
    node, client = lab.netns("node"), lab.netns("client")
    await lab.up(node)
    await lab.up(client)
    await lab.sysctl(node, NODE_SYSCTLS)
    await lab.wire(
        node, "c0", ["10.0.100.1/24", "fd00:100::1/64"],
        client, "eth0", ["10.0.100.2/24", "fd00:100::2/64"],
    )  # fmt: skip
    await lab.default_route(client, "10.0.100.1", "fd00:100::1")
    return Topology(lab=lab, node=node, client=client)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def dataplane(topology: Topology, state_dir: Path) -> AsyncIterator[NetlinkDataplane]:
    dp = NetlinkDataplane(state_dir, netns=topology.node, timeout=20.0)
    try:
        yield dp
    finally:
        await dp.close()
