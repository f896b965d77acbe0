"""Desired dataplane states built by hand, and the ordered actions from one state to another."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from bgplb.dataplane.netlink import NetlinkDataplane
from bgplb.model import (
    AddAddress,
    AddRealServer,
    AddressSpec,
    AddVirtualService,
    DataplaneAction,
    DataplaneState,
    EnsureLink,
    ForwardMethod,
    LinkSpec,
    Protocol,
    RealServerKey,
    RealServerSpec,
    RemoveAddress,
    RemoveLink,
    RemoveRealServer,
    RemoveVirtualService,
    UpdateRealServer,
    UpdateVirtualService,
    VirtualServiceKey,
    VirtualServiceSpec,
)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def service_state(
    name: str,
    vips: Sequence[str],
    ports: Sequence[tuple[int, int]],
    backends: Sequence[str],
    *,
    scheduler: str = "rr",
    persistence: int | None = None,
    weights: dict[str, int] | None = None,
    forward: ForwardMethod = ForwardMethod.MASQ,
) -> DataplaneState:
    """One ipvs-mode service: a dummy link ``name``, its VIPs, one virtual service per VIP and
    port, and each backend of the VIP's family as real server on the port's target."""
    weights = weights or {}
    services, real_servers = set(), set()
    for vip in map(ip, vips):
        for port, target in ports:
            key = VirtualServiceKey(vip, port, Protocol.TCP)
            services.add(VirtualServiceSpec(key, scheduler, persistence))
            for backend in map(ip, backends):
                if backend.version == vip.version:
                    rkey = RealServerKey(key, backend, target)
                    weight = weights.get(str(backend), 1)
                    real_servers.add(RealServerSpec(rkey, weight, forward))
    return DataplaneState(
        links=frozenset({LinkSpec(name)}),
        addresses=frozenset(AddressSpec(name, ip(v)) for v in vips),
        services=frozenset(services),
        real_servers=frozenset(real_servers),
    )


def union(*states: DataplaneState) -> DataplaneState:
    return DataplaneState(
        links=frozenset().union(*(s.links for s in states)),
        addresses=frozenset().union(*(s.addresses for s in states)),
        services=frozenset().union(*(s.services for s in states)),
        real_servers=frozenset().union(*(s.real_servers for s in states)),
    )


def actions_to(want: DataplaneState, have: DataplaneState) -> list[DataplaneAction]:
    """Additions (links, addresses, services, real servers), updates, then removals in reverse
    dependency order. Sorted by ``str`` so that IPv4 and IPv6 objects can be mixed."""
    have_vs = {s.key: s for s in have.services}
    have_rs = {r.key: r for r in have.real_servers}
    out: list[DataplaneAction] = []
    out += [EnsureLink(x) for x in sorted(want.links - have.links, key=str)]
    out += [AddAddress(x) for x in sorted(want.addresses - have.addresses, key=str)]
    for vs in sorted(want.services, key=str):
        if vs.key not in have_vs:
            out.append(AddVirtualService(vs))
        elif have_vs[vs.key] != vs:
            out.append(UpdateVirtualService(vs))
    for rs in sorted(want.real_servers, key=str):
        if rs.key not in have_rs:
            out.append(AddRealServer(rs))
        elif have_rs[rs.key] != rs:
            out.append(UpdateRealServer(rs))
    want_rs, want_vs = want.real_server_keys(), want.service_keys()
    out += [RemoveRealServer(k) for k in sorted(have_rs.keys() - want_rs, key=str)]
    out += [RemoveVirtualService(k) for k in sorted(have_vs.keys() - want_vs, key=str)]
    out += [RemoveAddress(x) for x in sorted(have.addresses - want.addresses, key=str)]
    out += [RemoveLink(x) for x in sorted(have.links - want.links, key=str)]
    return out


async def converge(dp: NetlinkDataplane, want: DataplaneState) -> list[DataplaneAction]:
    """Observe, apply what differs, return the actions applied."""
    actions = actions_to(want, (await dp.observe()).owned)
    for action in actions:
        await dp.apply(action)
    return actions
