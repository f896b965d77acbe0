"""Ownership rules over what the kernel shows (pure): which links and addresses are ours,
and what of the record still exists."""

from __future__ import annotations

from ..model import AddressSpec
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
