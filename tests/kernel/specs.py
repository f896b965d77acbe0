"""Desired dataplane states built by hand; the planner (``bgplb.plan``) orders the actions."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from bgplb.dataplane.netlink import NetlinkDataplane
from bgplb.model import (
    AddressSpec,
    DataplaneAction,
    DataplaneState,
    ForwardMethod,
    LinkSpec,
    ObservedDataplane,
    Protocol,
    RealServerKey,
    RealServerSpec,
    VirtualServiceKey,
    VirtualServiceSpec,
)
from bgplb.plan import plan
from bgplb.policy import Desired


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
    """The real planner's ordered actions from ``have`` (all ours, nothing foreign) to ``want``."""
    desired = Desired(dataplane=want, services={}, routes={})
    return list(plan(desired, ObservedDataplane(owned=have), {}).actions)


async def converge(dp: NetlinkDataplane, want: DataplaneState) -> list[DataplaneAction]:
    """Observe, apply what differs, return the actions applied."""
    actions = actions_to(want, (await dp.observe()).owned)
    for action in actions:
        await dp.apply(action)
    return actions
