"""What ``observe()`` reports (pure): the kernel's objects split into ours and foreign ones."""

from __future__ import annotations

from ..model import (
    AddressSpec,
    DataplaneState,
    LinkSpec,
    ObservedDataplane,
    RealServerKey,
    RealServerSpec,
    VirtualServiceKey,
)
from .ipvs import IpvsSnapshot
from .owned import owns_address, owns_link
from .ownership import OwnershipRecord
from .rtnl import KernelAddress, KernelLink

NO_IPVS = IpvsSnapshot(services={}, real_servers={}, service_counters={}, real_server_counters={})


def observed_dataplane(
    links: list[KernelLink],
    addresses: list[KernelAddress],
    snapshot: IpvsSnapshot,
    record: OwnershipRecord,
) -> ObservedDataplane:
    """Our objects (up links, addresses and IPVS objects that ``record`` or a tag proves
    ours), the foreign ones that may collide with ours, and the counters of ours."""
    owned_links = {x.name for x in links if x.up and owns_link(x, record)}
    owned_addrs = {AddressSpec(a.ifname, a.address) for a in addresses if owns_address(a, record)}
    owned_vs = {k: s for k, s in snapshot.services.items() if k in record.services}
    owned_rs = {
        k: r
        for k, r in snapshot.real_servers.items()
        if k in record.real_servers and k.service in owned_vs
    }
    names = frozenset(x.name for x in links)
    ours_anyhow = {x.name for x in links if owns_link(x, record)}  # owned but down
    return ObservedDataplane(
        owned=DataplaneState(
            links=frozenset(LinkSpec(n) for n in owned_links),
            addresses=frozenset(owned_addrs),
            services=frozenset(owned_vs.values()),
            real_servers=frozenset(owned_rs.values()),
        ),
        foreign_links=names - ours_anyhow,
        foreign_addresses=frozenset(
            AddressSpec(a.ifname, a.address)
            for a in addresses
            if AddressSpec(a.ifname, a.address) not in owned_addrs
        ),
        foreign_services=frozenset(snapshot.services.keys() - owned_vs.keys()),
        interfaces=names,
        service_counters={k: snapshot.service_counters[k] for k in owned_vs},
        real_server_counters={k: snapshot.real_server_counters[k] for k in owned_rs},
        dest_order=_dest_order(owned_rs),
    )


def _dest_order(
    real_servers: dict[RealServerKey, RealServerSpec],
) -> dict[VirtualServiceKey, tuple[RealServerKey, ...]]:
    """Per virtual service, its real servers in the dump's order (dicts keep it)."""
    order: dict[VirtualServiceKey, list[RealServerKey]] = {}
    for key in real_servers:
        order.setdefault(key.service, []).append(key)
    return {k: tuple(v) for k, v in order.items()}
