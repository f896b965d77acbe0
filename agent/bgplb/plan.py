"""Pure: the ordered actions that take the kernel from what it has to what is desired.

Additions first (links, addresses, virtual services, real servers), then removals in reverse
dependency order (real servers, virtual services, addresses, links). Never flush-then-add:
an object that is already right is left alone, one that differs is updated in place. Objects
that are neither desired nor owned (foreign) are never touched; a desired object that collides
with a foreign one is skipped and its service gets a conflict.

``Plan.withdraw`` is what the speaker must be given *before* the actions run: the advertised
routes minus those of every VIP that a removal takes away. ``batches`` groups the actions the
way the reconciler sends them; ``describe`` names an action's object for logs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, TypeVar

from .cooperative import Steps, run_to_end
from .model import (
    AddAddress,
    AddRealServer,
    AddressSpec,
    AddVirtualService,
    DataplaneAction,
    DataplaneState,
    EnsureLink,
    IPAddress,
    LinkSpec,
    ObservedDataplane,
    RealServerKey,
    RealServerSpec,
    RemoveAddress,
    RemoveLink,
    RemoveRealServer,
    RemoveVirtualService,
    RouteSet,
    UpdateRealServer,
    UpdateVirtualService,
    VirtualServiceKey,
    action_vips,
)
from .policy import Desired, VipNeed
from .pool import PoolTable, order_repairable
from .routeset import freeze_routes, kept_routes

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    withdraw: RouteSet
    actions: tuple[DataplaneAction, ...]
    conflicts: Mapping[str, str] = field(default_factory=dict)  # service -> what collides
    skipped: DataplaneState = field(default_factory=DataplaneState)  # desired, not to be made
    # pool mode: virtual services re-created because their real servers' order was wrong and
    # nothing was announced for them (pool.py)
    rebuilt: frozenset[VirtualServiceKey] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.actions


def plan(desired: Desired, observed: ObservedDataplane, advertised: RouteSet) -> Plan:
    return run_to_end(plan_steps(desired, observed, advertised))


def plan_steps(desired: Desired, observed: ObservedDataplane, advertised: RouteSet) -> Steps[Plan]:
    """:func:`plan` as steps the event loop can interleave (cooperative.py): 5-19 ms at
    1,000 services in one piece, every pass (bench/RESULTS.md, "Event loop lag")."""
    want = desired.dataplane
    have = observed.owned
    skipped, conflicts = yield from _skipped(desired.vips, want, observed)

    actions: list[DataplaneAction] = []
    actions += [EnsureLink(x) for x in in_order(want.links - have.links - skipped.links)]
    actions += [
        AddAddress(x) for x in in_order(want.addresses - have.addresses - skipped.addresses)
    ]
    yield

    have_vs = {s.key: s for s in have.services}
    rebuild = _rebuild(desired.pools, observed, advertised, have_vs.keys() - skipped.service_keys())
    yield
    for vs in in_order(want.services - skipped.services):
        yield
        old = have_vs.get(vs.key)
        if vs.key in rebuild:
            actions += [RemoveVirtualService(vs.key), AddVirtualService(vs)]
        elif old is None:
            actions.append(AddVirtualService(vs))
        elif old != vs:
            actions.append(UpdateVirtualService(vs))

    have_rs = {r.key: r for r in have.real_servers}
    pooled: dict[VirtualServiceKey, dict[RealServerKey, RealServerSpec]] = {}
    for rs in in_order(want.real_servers - skipped.real_servers):
        yield
        if rs.key.service in desired.pools:
            pooled.setdefault(rs.key.service, {})[rs.key] = rs
            continue
        old_rs = have_rs.get(rs.key)
        if old_rs is None:
            actions.append(AddRealServer(rs))
        elif old_rs != rs:
            actions.append(UpdateRealServer(rs))
    for key in in_order(pooled):
        yield
        current = {} if key in rebuild else have_rs
        actions += _pool_real_servers(desired.pools[key], pooled[key], current)
    yield

    want_rs, want_vs = want.real_server_keys(), want.service_keys()
    actions += [
        RemoveRealServer(k) for k in in_order(have_rs.keys() - want_rs) if k.service not in rebuild
    ]
    actions += [RemoveVirtualService(k) for k in in_order(have_vs.keys() - want_vs)]
    actions += [RemoveAddress(x) for x in in_order(have.addresses - want.addresses)]
    actions += [RemoveLink(x) for x in in_order(have.links - want.links)]
    yield

    gone = vips_taken_away(actions, want)
    if gone:
        withdraw = kept_routes(advertised, lambda _, prefix: prefix.network_address not in gone)
    else:  # nothing taken away (every steady pass): the advertised set as it is
        withdraw = freeze_routes(advertised)
    return Plan(withdraw, tuple(actions), conflicts, skipped, frozenset(rebuild))


def _rebuild(
    pools: Mapping[VirtualServiceKey, PoolTable],
    observed: ObservedDataplane,
    advertised: RouteSet,
    present: Iterable[VirtualServiceKey],
) -> set[VirtualServiceKey]:
    """Pool-mode virtual services whose real servers are in an order that adds cannot fix,
    and whose VIP is announced to no peer: those are re-created (withdraw-before-teardown
    holds: nothing is announced for them). An announced one is left alone (pool.py's view
    reports it)."""
    announced = {r.prefix.network_address for routes in advertised.values() for r in routes}
    return {
        key
        for key in present
        if key in pools
        and key.vip not in announced
        and not order_repairable(pools[key], observed.dest_order.get(key, ()))
    }


def _pool_real_servers(
    table: PoolTable,
    want: Mapping[RealServerKey, RealServerSpec],
    have: Mapping[RealServerKey, RealServerSpec],
) -> list[DataplaneAction]:
    """A pool-mode service's real servers: the missing ones added in reverse canonical order
    (the kernel puts each at the head, so the dump ends in canonical order), each at its
    configured weight (one added at weight 0 gets no Maglev slots); only after every add, the
    unhealthy ones lowered to weight 0 and the other changes."""
    adds: list[DataplaneAction] = []
    after: list[DataplaneAction] = []
    for key in reversed(table.order):
        spec = want.get(key)
        if spec is None:
            continue
        old = have.get(key)
        if old is None:
            intended = replace(spec, weight=table.weight(key))
            adds.append(AddRealServer(intended))
            if intended != spec:
                after.append(UpdateRealServer(spec))
        elif old != spec:
            after.append(UpdateRealServer(spec))
    return adds + after


def order_key(value: object) -> Any:
    """A total order over dataplane objects, IPv4 before IPv6 (``ipaddress`` objects of
    different versions do not compare, so the dataclasses' own ordering can't be used)."""
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return (1, value.version, int(value))
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return (1, value.version, int(value.network_address), value.prefixlen)
    if is_dataclass(value) and not isinstance(value, type):
        return (1, tuple(order_key(getattr(value, f.name)) for f in fields(value)))
    if value is None:
        return (0,)
    return (1, value)


def in_order(items: Iterable[T]) -> list[T]:
    return sorted(items, key=order_key)


def vips_taken_away(
    actions: Iterable[DataplaneAction], want: DataplaneState
) -> frozenset[IPAddress]:
    """VIPs whose routes must be withdrawn before ``actions`` run.

    A removed address always counts. Removing a virtual service or real server counts only
    when its VIP is no longer desired at all: dropping one real server (or one port) of a
    VIP that stays announced must not withdraw and re-announce it, which would rehash the
    flows of every other node.
    """
    kept = {a.address for a in want.addresses}
    gone: set[IPAddress] = set()
    for action in actions:
        match action:
            case RemoveAddress(address=a):
                gone.add(a.address)
            case RemoveVirtualService() | RemoveRealServer():
                gone.update(v for v in action_vips(action) if v not in kept)
            case _:
                pass
    return frozenset(gone)


def _skipped(
    needs: Iterable[VipNeed], want: DataplaneState, observed: ObservedDataplane
) -> Steps[tuple[DataplaneState, Mapping[str, str]]]:
    """Desired objects the plan must not create, and the conflict (if any) per service."""
    have = observed.owned
    have_vs = have.service_keys()
    foreign_ips = {a.address: a.ifname for a in observed.foreign_addresses}
    links: set[LinkSpec] = set()
    addresses: set[AddressSpec] = set()
    vs_keys: set[VirtualServiceKey] = set()
    conflicts: dict[str, str] = {}
    for need in needs:
        yield
        if need.address in have.addresses:
            problem = ""
        elif need.shared and need.address in observed.foreign_addresses:
            addresses.add(need.address)  # already there, put by someone else: fine
            continue
        elif need.shared and need.address.ifname not in observed.interfaces:
            problem = f"interface {need.address.ifname} does not exist"
        elif need.vip in foreign_ips:
            problem = f"address {need.vip} is already on {foreign_ips[need.vip]} (not ours)"
        else:
            problem = ""
        link = need.link
        if link is not None and link not in have.links and link.name in observed.foreign_links:
            problem = f"link {link.name} exists and is not ours"
            links.add(link)
        clash = in_order(
            k for k in need.virtual_services - have_vs if k in observed.foreign_services
        )
        if clash and not problem:
            problem = f"IPVS service {clash[0]} exists and is not ours"
        if not problem:
            continue
        conflicts.setdefault(need.service, problem)
        if need.address not in have.addresses:
            addresses.add(need.address)
        vs_keys.update(need.virtual_services - have_vs)
    yield
    skipped = DataplaneState(
        links=frozenset(links),
        addresses=frozenset(addresses),
        services=frozenset(s for s in want.services if s.key in vs_keys),
        real_servers=frozenset(r for r in want.real_servers if r.key.service in vs_keys),
    )
    return skipped, conflicts


def batches(actions: tuple[DataplaneAction, ...], size: int) -> list[tuple[DataplaneAction, ...]]:
    """The actions in order; runs of AddAddress in groups of up to ``size`` (sent at once:
    independent of each other, and one netlink round trip each on a loop busy with 1,000
    health checks took ~2.6 ms, bench/scale.py); every other action alone."""
    out: list[tuple[DataplaneAction, ...]] = []
    run: list[DataplaneAction] = []
    for action in actions:
        if isinstance(action, AddAddress) and len(run) < size:
            run.append(action)
            continue
        if run:
            out.append(tuple(run))
            run = []
        if isinstance(action, AddAddress):
            run.append(action)
        else:
            out.append((action,))
    if run:
        out.append(tuple(run))
    return out


def describe(action: DataplaneAction) -> str:
    """The object an action is about, as people write it (``tcp:10.0.0.1:80``, ``web``)."""
    match action:
        case EnsureLink(link=x) | RemoveLink(link=x):
            return x.name
        case AddAddress(address=a) | RemoveAddress(address=a):
            return f"{a.address}/{a.prefixlen} dev {a.ifname}"
        case AddVirtualService(service=v) | UpdateVirtualService(service=v):
            return str(v.key)
        case RemoveVirtualService(key=k):
            return str(k)
        case AddRealServer(real_server=r) | UpdateRealServer(real_server=r):
            return f"{r.key.service} -> {r.key} weight {r.weight} {r.forward}"
        case RemoveRealServer(key=rk):
            return f"{rk.service} -> {rk}"
    return repr(action)  # pragma: no cover
