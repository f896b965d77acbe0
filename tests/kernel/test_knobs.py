"""Kernel knobs against a real kernel: IPVS timeouts (SET/GET_CONFIG), the pool-mode sysctls
and the IPVS sync daemons (NEW/GET/DEL_DAEMON) in a namespace, and one connection entry
synced from one node's master to another node's backup."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bgplb.config import Config
from bgplb.dataplane.ipvsknobs import NetlinkIpvsKnobs
from bgplb.dataplane.knobs import (
    AMEMTHRESH,
    CONNTRACK,
    DROP_ENTRY,
    SLOPPY_SCTP,
    SLOPPY_TCP,
    IpvsTimeouts,
    SyncRole,
)
from bgplb.dataplane.netlink import NetlinkDataplane
from bgplb.dataplane.sysctl import ProcSysctls
from bgplb.knobkeeper import KnobKeeper

from .conftest import Topology
from .lab import IO_TIMEOUT, Lab, enter_netns
from .specs import converge, service_state

pytestmark = pytest.mark.kernel

VIP = "10.99.0.1"


def _config(preserve: bool, sync_if: str | None, sync_id: int = 42) -> Config:
    node: dict[str, object] = {"router_id": "10.0.0.10", "local_as": 65001}
    if sync_if is not None:
        node["connection_sync"] = {"interface": sync_if, "sync_id": sync_id}
    return Config.model_validate(
        {
            "node": node,
            "peers": [{"address": "10.0.0.1", "asn": 65000}],
            "services": [
                {
                    "name": "web",
                    "vips": [VIP],
                    "ports": [{"port": 80, "scheduler": "mh"}],
                    "real_servers": [{"address": "10.0.1.2", "forward": "dr"}],
                    "preserve_connections": preserve,
                }
            ],
        }
    )


class Node:
    """The real adapters, in one namespace."""

    def __init__(self, ns: str) -> None:
        self.executor = ThreadPoolExecutor(1, ns, initializer=enter_netns, initargs=(ns,))
        self.sysctls = ProcSysctls(Path("/"), timeout=IO_TIMEOUT, executor=self.executor)
        self.ipvs = NetlinkIpvsKnobs(netns=ns, timeout=IO_TIMEOUT)
        self.keeper = KnobKeeper(self.sysctls, self.ipvs, timeout=3 * IO_TIMEOUT)

    async def conns(self) -> str:
        def read() -> str:  # /proc/net is /proc/self/net: the process's namespace, not ours
            return Path("/proc/thread-self/net/ip_vs_conn").read_text()

        return await asyncio.get_running_loop().run_in_executor(self.executor, read)

    def close(self) -> None:
        self.ipvs.close()
        self.executor.shutdown()


@pytest.fixture
async def pair(lab: Lab) -> tuple[str, str]:
    """Two namespaces joined by a veth ``s0`` (the sync segment), 10.0.200.0/24."""
    a, b = lab.netns("lb1"), lab.netns("lb2")
    for ns in (a, b):
        await lab.up(ns)
    await lab.wire(a, "s0", ["10.0.200.1/24"], b, "s0", ["10.0.200.2/24"])
    return a, b


async def test_the_keeper_sets_timeouts_sysctls_and_daemons_and_undoes_them(
    pair: tuple[str, str],
) -> None:
    node = Node(pair[0])
    try:
        before = await node.ipvs.timeouts()
        originals = {k: await node.sysctls.read(k) for k in (SLOPPY_TCP, CONNTRACK, AMEMTHRESH)}
        await node.keeper.reconcile(_config(True, "s0"))
        states = {s.knob: s for s in node.keeper.states()}
        assert all(s.ok for s in states.values()), states
        assert set(states) == {
            SLOPPY_TCP,
            SLOPPY_SCTP,
            CONNTRACK,
            AMEMTHRESH,
            DROP_ENTRY,
            "ipvs.timeouts",
            "sync.master",
            "sync.backup",
        }
        # read back through the adapters, independently of the keeper
        assert await node.ipvs.timeouts() == IpvsTimeouts(300, 60, 300)
        assert await node.sysctls.read(SLOPPY_TCP) == 1
        assert await node.sysctls.read(SLOPPY_SCTP) == 1
        assert await node.sysctls.read(CONNTRACK) == 0
        assert await node.sysctls.read(AMEMTHRESH) == 32768
        assert await node.sysctls.read(DROP_ENTRY) in (1, 2)
        daemons = {d.role: d for d in await node.ipvs.daemons()}
        assert set(daemons) == {SyncRole.MASTER, SyncRole.BACKUP}
        for d in daemons.values():
            assert (d.interface, d.sync_id, str(d.group), d.port, d.ttl) == (
                "s0",
                42,
                "224.0.0.81",
                8848,
                1,
            )
            assert d.maxlen is not None  # the kernel's choice from the MTU
        # drift: someone stops the backup and changes a sysctl; the next pass repairs both
        assert await node.ipvs.stop_daemon(SyncRole.BACKUP)
        await node.sysctls.write(SLOPPY_TCP, 0)
        await node.keeper.reconcile(_config(True, "s0"))
        assert {d.role for d in await node.ipvs.daemons()} == {SyncRole.MASTER, SyncRole.BACKUP}
        assert await node.sysctls.read(SLOPPY_TCP) == 1
        # other parameters: restarted with them
        await node.keeper.reconcile(_config(True, "s0", sync_id=43))
        assert {d.sync_id for d in await node.ipvs.daemons()} == {43}
        # pool mode and sync removed: daemons stopped, the values found before are back
        await node.keeper.reconcile(_config(False, None))
        assert await node.ipvs.daemons() == ()
        assert await node.ipvs.timeouts() == before
        for key, value in originals.items():
            assert await node.sysctls.read(key) == value
        assert node.keeper.states() == []
    finally:
        node.close()


async def test_a_connection_synced_from_the_master_appears_on_the_backup(
    topology: Topology, dataplane: NetlinkDataplane
) -> None:
    """The topology's node forwards one HTTP request (masq) and syncs its entry over a veth
    to a second node, whose backup daemon creates the entry."""
    lab, node_ns = topology.lab, topology.node
    other = lab.netns("lb2")
    await lab.up(other)
    await lab.wire(node_ns, "s0", ["10.0.200.1/24"], other, "s0", ["10.0.200.2/24"])
    rs_ns, rs = await topology.add_real_server()
    await lab.http_server(rs_ns, rs, 8080, "rs1")
    await converge(dataplane, service_state("web", [VIP], [(80, 8080)], [rs]))
    sync = _config(False, "s0")
    a, b = Node(node_ns), Node(other)
    try:
        await a.keeper.reconcile(sync)
        await b.keeper.reconcile(sync)
        assert all(s.ok for s in [*a.keeper.states(), *b.keeper.states()])
        assert await lab.http_get(topology.client, VIP, 80) == "rs1"
        vip_hex = "".join(f"{int(o):02X}" for o in VIP.split("."))
        assert vip_hex in await a.conns()
        async with asyncio.timeout(60):  # the master flushes every 2 s; TCG is slow
            while vip_hex not in await b.conns():  # noqa: ASYNC110 (a /proc file: no event)
                await asyncio.sleep(0.5)
        await a.keeper.stop()
        await b.keeper.stop()
        assert await a.ipvs.daemons() == ()
    finally:
        a.close()
        b.close()
