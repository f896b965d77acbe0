"""Ownership: foreign objects are never touched, our leftovers are found again after a restart,
every action is idempotent, and kernel events wake the reconciler."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pyroute2 import AsyncIPRoute, AsyncIPVS, IPVSService

from bgplb.dataplane.base import DataplaneError
from bgplb.dataplane.netlink import NetlinkDataplane
from bgplb.dataplane.ownership import RECORD_NAME
from bgplb.model import (
    AddAddress,
    AddressSpec,
    AddVirtualService,
    DataplaneState,
    EnsureLink,
    LinkSpec,
    Protocol,
    RealServerKey,
    RemoveAddress,
    RemoveLink,
    RemoveRealServer,
    RemoveVirtualService,
    VirtualServiceKey,
    VirtualServiceSpec,
)

from .conftest import Topology
from .foreign import (
    ALL_THERE,
    FOREIGN_VS,
    add_foreign_objects,
    foreign_objects_present,
    kernel_names,
)
from .specs import actions_to, converge, ip, service_state, union

pytestmark = pytest.mark.kernel


async def test_foreign_objects_survive_and_a_restarted_adapter_removes_only_its_leftovers(
    topology: Topology, dataplane: NetlinkDataplane, state_dir: Path
) -> None:
    node = topology.node
    await add_foreign_objects(node)
    alpha = service_state("alpha", ["10.99.0.1"], [(80, 8080)], [topology.node_v4])
    beta = service_state(
        "beta", ["10.99.0.2", "fd00:99::2"], [(80, 8080), (443, 8443)],
        [topology.node_v4, topology.node_v6],
    )  # fmt: skip
    both = union(alpha, beta)

    await converge(dataplane, both)
    observed = await dataplane.observe()
    assert observed.owned == both
    assert {"foreign0", "taken", "lo", "c0"} <= observed.foreign_links
    assert {"alpha", "beta"}.isdisjoint(observed.foreign_links)
    assert {"alpha", "beta", "foreign0", "taken", "lo"} <= observed.interfaces
    assert AddressSpec("foreign0", ip("10.99.0.50")) in observed.foreign_addresses
    assert AddressSpec("lo", ip("10.99.0.51")) in observed.foreign_addresses
    assert observed.foreign_services == {FOREIGN_VS}

    # Claiming foreign objects fails; removing them is a no-op.
    for claim in (
        EnsureLink(LinkSpec("taken")),
        EnsureLink(LinkSpec("lo")),
        AddAddress(AddressSpec("foreign0", ip("10.99.0.50"))),
        AddVirtualService(VirtualServiceSpec(FOREIGN_VS)),
    ):
        with pytest.raises(DataplaneError, match="not ours"):
            await dataplane.apply(claim)
    for removal in (
        RemoveLink(LinkSpec("foreign0")),
        RemoveLink(LinkSpec("taken")),
        RemoveAddress(AddressSpec("foreign0", ip("10.99.0.50"))),
        RemoveAddress(AddressSpec("lo", ip("10.99.0.51"))),
        RemoveVirtualService(FOREIGN_VS),
        RemoveRealServer(RealServerKey(FOREIGN_VS, ip("10.0.100.2"), 80)),
    ):
        await dataplane.apply(removal)
    assert await foreign_objects_present(node) == ALL_THERE

    # Idempotent: every action again changes nothing.
    for action in actions_to(both, union()):
        await dataplane.apply(action)
    assert (await dataplane.observe()).owned == both

    # "Agent restart" after beta left the config: a new adapter finds beta through the record.
    await dataplane.close()
    restarted = NetlinkDataplane(state_dir, netns=node, timeout=20.0)
    try:
        assert (await restarted.observe()).owned == both
        removals = actions_to(alpha, (await restarted.observe()).owned)
        assert {type(a) for a in removals} == {
            RemoveRealServer, RemoveVirtualService, RemoveAddress, RemoveLink
        }  # fmt: skip
        for action in removals:
            await restarted.apply(action)
        for action in removals:  # removing what is gone is fine
            await restarted.apply(action)
        observed = await restarted.observe()
        assert observed.owned == alpha
        assert observed.foreign_services == {FOREIGN_VS}
        assert restarted.record.services == alpha.service_keys()
        assert restarted.record.links == {"alpha"}
        links, addrs = await kernel_names(node)
        assert "beta" not in links
        assert "alpha" in links
        assert {"10.99.0.2", "fd00:99::2"}.isdisjoint(addrs)
        assert await foreign_objects_present(node) == ALL_THERE
    finally:
        await restarted.close()


async def test_tags_identify_our_link_and_vips_when_the_record_is_lost(
    topology: Topology, dataplane: NetlinkDataplane, state_dir: Path
) -> None:
    want = service_state("gamma", ["10.99.0.3", "fd00:99::3"], [(80, 8080)], [topology.node_v4])
    await converge(dataplane, want)
    await dataplane.close()
    (state_dir / RECORD_NAME).unlink()

    amnesiac = NetlinkDataplane(state_dir, netns=topology.node, timeout=20.0)
    try:
        observed = await amnesiac.observe()
        assert observed.owned.links == want.links  # alias bgp-lb
        assert observed.owned.addresses == want.addresses  # IFA_PROTO
        assert observed.owned.services == frozenset()  # IPVS has no tag: now foreign, left alone
        assert observed.foreign_services == want.service_keys()
        for key in want.service_keys():
            await amnesiac.apply(RemoveVirtualService(key))
        assert (await amnesiac.observe()).foreign_services == want.service_keys()
        for action in actions_to(DataplaneState(), observed.owned):
            await amnesiac.apply(action)
        links, _ = await kernel_names(topology.node)
        assert "gamma" not in links
    finally:
        await amnesiac.close()


async def test_drift_wakes_the_reconciler_and_is_repaired(
    topology: Topology, dataplane: NetlinkDataplane
) -> None:
    woken = asyncio.Event()
    await dataplane.start(woken.set)
    want = service_state("delta", ["10.99.0.4", "fd00:99::4"], [(80, 8080)], [topology.node_v4])
    await converge(dataplane, want)
    await asyncio.sleep(0.5)  # let the events of our own changes arrive
    woken.clear()

    async with AsyncIPRoute(netns=topology.node) as ipr:
        index = (await ipr.link_lookup(ifname="delta"))[0]
        await ipr.addr("del", index=index, address="10.99.0.4", prefixlen=32)
    await asyncio.wait_for(woken.wait(), 10)
    observed = await dataplane.observe()
    assert AddressSpec("delta", ip("10.99.0.4")) not in observed.owned.addresses
    assert await converge(dataplane, want) == [AddAddress(AddressSpec("delta", ip("10.99.0.4")))]

    woken.clear()
    async with AsyncIPRoute(netns=topology.node) as ipr:
        await ipr.link("set", index=index, state="down")
    await asyncio.wait_for(woken.wait(), 10)
    assert LinkSpec("delta") not in (await dataplane.observe()).owned.links  # down: not right
    # IPv6 addresses go with the link (keep_addr_on_down=0), IPv4 ones stay
    assert await converge(dataplane, want) == [
        EnsureLink(LinkSpec("delta")),
        AddAddress(AddressSpec("delta", ip("fd00:99::4"))),
    ]
    assert (await dataplane.observe()).owned == want

    ipvs = AsyncIPVS(netns=topology.node)  # IPVS drift has no event: found by the next pass
    await ipvs.setup_endpoint()
    try:
        key = VirtualServiceKey(ip("10.99.0.4"), 80, Protocol.TCP)
        await ipvs.service("del", service=IPVSService(addr="10.99.0.4", port=80, protocol=6))
    finally:
        ipvs.close()
    repaired = await converge(dataplane, want)
    assert [type(a).__name__ for a in repaired] == ["AddVirtualService", "AddRealServer"]
    assert key in (await dataplane.observe()).owned.service_keys()
    assert (await dataplane.observe()).owned == want


async def events_settled(dataplane: NetlinkDataplane, quiet: float = 3.0) -> None:
    """Until no rtnetlink event came for ``quiet`` s (a fixed 0.5 s sleep was too short in a
    loaded TCG guest: a late event of our own changes made a dump the test did not expect)."""
    watcher = dataplane._watcher
    assert watcher is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    last, since = watcher.generation, loop.time()
    while loop.time() - since < quiet:
        assert loop.time() < deadline, "the rtnetlink events never stopped"
        await asyncio.sleep(0.05)
        if watcher.generation != last:
            last, since = watcher.generation, loop.time()


async def test_a_steady_observe_reuses_the_dump_until_an_event_or_our_own_change(
    topology: Topology, dataplane: NetlinkDataplane
) -> None:
    """Links and addresses are dumped again only when something may have changed: an event
    (anyone's change) or one of our own actions; otherwise the last dump stands (dumps.py)."""
    woken = asyncio.Event()
    await dataplane.start(woken.set)
    want = service_state("eps", ["10.99.0.6"], [(80, 8080)], [topology.node_v4])
    await converge(dataplane, want)
    await events_settled(dataplane)  # the events of our own changes (and IPv6 DAD) arrive
    first = await dataplane.observe()
    dumps = dataplane._dumps.dumps
    again = await dataplane.observe()
    assert dataplane._dumps.dumps == dumps  # nothing happened: no dump
    assert again.owned == first.owned == want

    woken.clear()
    async with AsyncIPRoute(netns=topology.node) as ipr:  # someone else's change
        index = (await ipr.link_lookup(ifname="eps"))[0]
        await ipr.addr("add", index=index, address="10.99.0.66", prefixlen=32)
    await asyncio.wait_for(woken.wait(), 10)
    seen = await dataplane.observe()
    assert dataplane._dumps.dumps == dumps + 1
    assert AddressSpec("eps", ip("10.99.0.66")) in seen.foreign_addresses

    await dataplane.apply(RemoveAddress(AddressSpec("eps", ip("10.99.0.6"))))  # ours
    gone = await dataplane.observe()  # before its event is read: dumped all the same
    assert dataplane._dumps.dumps == dumps + 2
    assert AddressSpec("eps", ip("10.99.0.6")) not in gone.owned.addresses


async def test_a_corrupt_record_is_rebuilt_and_matching_ipvs_services_adopted(
    topology: Topology, dataplane: NetlinkDataplane, state_dir: Path
) -> None:
    """Issue 13: a corrupt record no longer turns our IPVS services into conflicts."""
    want = service_state("delta", ["10.99.0.4"], [(80, 8080), (443, 8443)], [topology.node_v4])
    await converge(dataplane, want)
    await dataplane.close()
    (state_dir / RECORD_NAME).write_text("{torn write")
    changed = VirtualServiceKey(ip("10.99.0.4"), 443, Protocol.TCP)
    desired = DataplaneState(  # :443 now wants another scheduler: not exactly ours, not adopted
        want.links,
        want.addresses,
        frozenset(
            VirtualServiceSpec(s.key, "wlc") if s.key == changed else s for s in want.services
        ),
        want.real_servers,
    )

    rebuilt = NetlinkDataplane(state_dir, netns=topology.node, timeout=20.0)
    rebuilt.set_desired_source(lambda: desired)
    try:
        assert rebuilt.record_health.problem is not None
        observed = await rebuilt.observe()
        assert observed.owned.links == want.links
        assert observed.owned.addresses == want.addresses
        assert observed.owned.service_keys() == want.service_keys() - {changed}
        assert {r.key.service for r in observed.owned.real_servers} == observed.owned.service_keys()
        assert observed.foreign_services == {changed}
        assert rebuilt.record.services == want.service_keys() - {changed}
        assert rebuilt.record_health.errors == 1
    finally:
        await rebuilt.close()
