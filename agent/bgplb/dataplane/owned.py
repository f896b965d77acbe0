"""Ownership rules over what the kernel shows (pure): which links and addresses are ours,
what of the record still exists, and what to adopt when the record was lost."""

from __future__ import annotations

from ..model import AddressSpec, DataplaneState, RealServerKey, VirtualServiceKey
from .ipvs import IpvsSnapshot
from .ownership import OwnershipRecord
from .rtnl import ADDRESS_PROTO, KernelAddress, KernelLink


def owns_link(link: KernelLink, record: OwnershipRecord) -> bool:
    """A dummy link with our alias, or one in the record that nobody re-tagged."""
    if link.kind != "dummy":
        return False
    return link.tagged or (link.name in record.links and link.alias is None)


def owns_address(addr: KernelAddress, record: OwnershipRecord) -> bool:
    """A host address with our protocol tag, or an untagged one in the record (kernels < 6.1)."""
    if not addr.host_route:
        return False
    if addr.proto is not None:
        return addr.proto == ADDRESS_PROTO
    return AddressSpec(addr.ifname, addr.address) in record.addresses


def pruned_record(
    record: OwnershipRecord,
    links: list[KernelLink],
    addresses: list[KernelAddress],
    snapshot: IpvsSnapshot | None,
) -> OwnershipRecord:
    """``record`` without entries whose object is gone (or was taken over by someone else);
    IPVS entries are kept as they are when IPVS could not be read (``snapshot`` None)."""
    kept_links = {x.name for x in links if owns_link(x, record)}
    kept_addrs = {AddressSpec(a.ifname, a.address) for a in addresses if owns_address(a, record)}
    return OwnershipRecord(
        links=record.links & kept_links,
        addresses=record.addresses & kept_addrs,
        services=record.services
        if snapshot is None
        else record.services & snapshot.services.keys(),
        real_servers=(
            record.real_servers
            if snapshot is None
            else record.real_servers & snapshot.real_servers.keys()
        ),
    )


def adoptable(
    desired: DataplaneState,
    links: list[KernelLink],
    addresses: list[KernelAddress],
    snapshot: IpvsSnapshot | None,
    record: OwnershipRecord,
) -> OwnershipRecord:
    """What to take back when there is no record (lost, or a first start: nothing else proves
    these objects ours). An IPVS service the kernel has exactly as desired (scheduler,
    persistence) with exactly the desired real servers, and those real servers; an untagged
    dummy link (no alias) named as a desired link (the Go bgp-lb's dummy, named after the
    service); an untagged address that is desired on a dummy link of ours or adopted (kernels
    < 6.1, the Go bgp-lb's VIP). A service that differs in anything, another kind of link or
    a link with someone else's alias stays foreign: a conflict the operator resolves."""
    services: set[VirtualServiceKey] = set()
    real_servers: set[RealServerKey] = set()
    if snapshot is not None:
        wanted_rs: dict[VirtualServiceKey, set[RealServerKey]] = {}
        for rs in desired.real_servers:
            wanted_rs.setdefault(rs.key.service, set()).add(rs.key)
        for spec in desired.services:
            if spec.key in record.services or snapshot.services.get(spec.key) != spec:
                continue
            have = {k for k in snapshot.real_servers if k.service == spec.key}
            if have == wanted_rs.get(spec.key, set()):
                services.add(spec.key)
                real_servers |= have
    wanted_links = {spec.name for spec in desired.links}
    adopted_links = {
        x.name
        for x in links
        if x.kind == "dummy"
        and x.alias is None
        and x.name in wanted_links
        and x.name not in record.links
    }
    ours = {x.name for x in links if owns_link(x, record)} | adopted_links
    found = (
        AddressSpec(a.ifname, a.address) for a in addresses if a.host_route and a.proto is None
    )
    addrs = {a for a in found if a.ifname in ours and a in desired.addresses}
    return OwnershipRecord(
        links=frozenset(adopted_links),
        addresses=frozenset(addrs - record.addresses),
        services=frozenset(services),
        real_servers=frozenset(real_servers),
    )
