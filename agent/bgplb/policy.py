"""Pure: what the node should have and announce, from config + health + admin state + time.

``desired_state`` never looks at the kernel. The desired dataplane depends only on the config
and on real-server health (weights): a failed service check withdraws the routes but leaves the
VIP and IPVS in place. ``announceable`` then drops the routes whose VIP or IPVS service is not
really there after the plan was applied.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from .admin import AdminState
from .config import (
    Config,
    NodeConfig,
    PeerConfig,
    PortConfig,
    ServiceConfig,
    ServiceState,
    route_attributes,
)
from .cooperative import Steps, run_to_end
from .health.targets import real_server_target
from .health.tracker import CheckKey, HealthSnapshot
from .linkbw import VipKey, vip_communities, with_bandwidth
from .model import (
    AddressSpec,
    DataplaneState,
    Decision,
    ForwardMethod,
    IPAddress,
    IPNetwork,
    LinkSpec,
    ObservedDataplane,
    PeerKey,
    RealServerKey,
    RealServerSpec,
    Reason,
    Route,
    RouteSet,
    ServiceMode,
    VirtualServiceKey,
    VirtualServiceSpec,
)
from .pool import PoolTable
from .routeset import freeze_routes
from .servicehealth import is_up, service_health

CHUNK = 50  # items between two yields of a generator below that walks VIPs or routes


@dataclass(frozen=True)
class ServiceDecision:
    name: str
    decision: Decision
    reason: Reason
    detail: str = ""


@dataclass(frozen=True)
class VipNeed:
    """What one VIP of a service needs in the kernel before its routes may be announced."""

    service: str
    vip: IPAddress
    address: AddressSpec
    link: LinkSpec | None  # our dummy link (ipvs mode)
    virtual_services: frozenset[VirtualServiceKey]
    shared: bool  # announce mode: the address may be configured by someone else


@dataclass(frozen=True)
class Desired:
    dataplane: DataplaneState
    services: Mapping[str, ServiceDecision]
    routes: RouteSet
    vips: tuple[VipNeed, ...] = ()
    next_change: float | None = None  # when a decision flips by itself (a drain delay ends)
    pools: Mapping[VirtualServiceKey, PoolTable] = field(default_factory=dict)  # pool mode


def desired_state(
    config: Config,
    health: HealthSnapshot,
    admin: AdminState,
    now: float,
    capacities: Mapping[VipKey, int] | None = None,
) -> Desired:
    """``capacities``: the link_bandwidth VIPs' capacities after the hold-down (linkbw.py);
    None = those of ``health`` now."""
    return run_to_end(desired_steps(config, health, admin, now, capacities))


def desired_steps(
    config: Config,
    health: HealthSnapshot,
    admin: AdminState,
    now: float,
    capacities: Mapping[VipKey, int] | None = None,
) -> Steps[Desired]:
    """``desired_state`` as a generator that yields after each service (the reconciler runs
    it with ``cooperative.run_cooperatively``: the loop gets a turn every ~2 ms)."""

    links: set[LinkSpec] = set()
    addresses: set[AddressSpec] = set()
    services: set[VirtualServiceSpec] = set()
    real_servers: set[RealServerSpec] = set()
    needs: list[VipNeed] = []
    decisions: dict[str, ServiceDecision] = {}
    routes: dict[PeerKey, set[Route]] = defaultdict(set)
    deadlines: list[float] = []
    pools: dict[VirtualServiceKey, PoolTable] = {}
    for svc in config.services:
        if svc.mode is ServiceMode.IPVS:
            links.add(LinkSpec(svc.name))
        for vip in svc.vips if svc.mode is ServiceMode.IPVS or svc.require_vip else ():
            need = _vip_objects(config.node, svc, vip, health, services, real_servers)
            needs.append(need)
            addresses.add(need.address)
            if svc.preserve_connections:
                pools.update(_pool_tables(svc, vip))
        decision = decide(config.node, svc, health, admin, now)
        community = vip_communities(config, svc, health, capacities)
        if community and not any(community.values()) and announcing(decision.decision):
            decision = ServiceDecision(svc.name, Decision.WITHDRAW, Reason.NO_CAPACITY, "")
        decisions[svc.name] = decision
        since = admin.drained_since(svc.name)
        if decision.decision is Decision.DRAINING and since is not None:
            deadlines.append(since + _drain_delay(config.node, svc))
        state = _ROUTE_STATE.get(decision.decision)
        if state is None:
            continue
        for peer in config.service_peers(svc):  # services[].peers, default every peer
            attrs = route_attributes(svc, state, peer, config.node.local_as)
            for vip in svc.vips:
                ok, next_hop = _next_hop(peer, vip)
                vip_attrs = attrs
                if community:
                    bw = community.get(vip)
                    ok = ok and bw is not None  # no healthy capacity: not announced
                    vip_attrs = with_bandwidth(attrs, bw) if bw is not None else attrs
                if ok:
                    prefix = _host_prefix(vip)
                    routes[peer.key].add(Route(prefix, next_hop, vip_attrs, service=svc.name))
        yield
    return Desired(
        dataplane=DataplaneState(
            frozenset(links), frozenset(addresses), frozenset(services), frozenset(real_servers)
        ),
        services=decisions,
        routes=freeze_routes(routes),
        vips=tuple(needs),
        next_change=min(deadlines, default=None),
        pools=pools,
    )


_ROUTE_STATE: Mapping[Decision, ServiceState] = {
    Decision.ANNOUNCE: "healthy",
    Decision.DEGRADED: "degraded",
    Decision.DRAINING: "draining",
}


def decide(
    node: NodeConfig,
    svc: ServiceConfig,
    states: HealthSnapshot,
    admin: AdminState,
    now: float,
) -> ServiceDecision:
    """Health first, then the drain (which wins: a drained service never announces normally)."""
    reason, detail = service_health(svc, states)
    if reason is Reason.HEALTHY:
        decision = Decision.ANNOUNCE
    elif reason is not Reason.STARTING and svc.on_down == "announce_degraded":
        decision = Decision.DEGRADED
    else:
        decision = Decision.WITHDRAW
    drains = [
        (t, r)
        for t, r in (
            (admin.drained.get(svc.name), Reason.DRAINING),
            (admin.node_drained_at, Reason.NODE_DRAINING),
        )
        if t is not None
    ]
    if drains:
        since, drain_reason = min(drains, key=lambda d: d[0])
        within = now - since < _drain_delay(node, svc)
        # An unhealthy service is not re-announced just because it is being drained.
        drained = Decision.DRAINING if within and decision is not Decision.WITHDRAW else None
        health_note = "" if reason is Reason.HEALTHY else f"{reason}: {detail}".rstrip(": ")
        return ServiceDecision(svc.name, drained or Decision.WITHDRAW, drain_reason, health_note)
    return ServiceDecision(svc.name, decision, reason, detail)


def announceable(
    desired: Desired,
    observed: ObservedDataplane,
    conflicts: Mapping[str, str] | None = None,
) -> tuple[RouteSet, Mapping[str, ServiceDecision]]:
    """Keep only the routes whose VIP (and, ipvs mode, every virtual service) is really there."""
    return run_to_end(announceable_steps(desired, observed, conflicts))


def announceable_steps(
    desired: Desired,
    observed: ObservedDataplane,
    conflicts: Mapping[str, str] | None = None,
) -> Steps[tuple[RouteSet, Mapping[str, ServiceDecision]]]:
    """``announceable`` as a generator that yields every ``CHUNK`` VIPs and routes."""
    conflicts = conflicts or {}
    owned_services = observed.owned.service_keys()
    missing: dict[str, dict[IPAddress, tuple[Reason, str]]] = defaultdict(dict)
    for i, need in enumerate(desired.vips):
        if i % CHUNK == 0:
            yield
        present = need.address in observed.owned.addresses or (
            need.shared and need.address in observed.foreign_addresses
        )
        if need.service in conflicts and not (present and need.virtual_services <= owned_services):
            missing[need.service][need.vip] = (Reason.DATAPLANE_CONFLICT, conflicts[need.service])
        elif not present:
            missing[need.service][need.vip] = (
                Reason.VIP_MISSING,
                f"{need.address.address} is not on {need.address.ifname}",
            )
        else:
            absent = sorted(need.virtual_services - owned_services)
            if absent:
                missing[need.service][need.vip] = (
                    Reason.IPVS_MISSING,
                    f"no IPVS service {absent[0]}",
                )
    kept: dict[PeerKey, list[Route]] = {}
    for peer, rs in desired.routes.items():
        kept[peer] = []
        for i, r in enumerate(rs):
            if i % CHUNK == 0:
                yield
            if r.prefix.network_address not in missing.get(r.service, {}):
                kept[peer].append(r)
    routes = freeze_routes(kept)
    decisions = dict(desired.services)
    vip_count: dict[str, int] = defaultdict(int)
    for need in desired.vips:
        vip_count[need.service] += 1
    for name, bad in missing.items():
        current = decisions.get(name)
        if current is None:
            continue
        reason, detail = next(iter(bad.values()))
        all_gone = len(bad) >= vip_count[name]
        if current.decision is Decision.WITHDRAW and reason is not Reason.DATAPLANE_CONFLICT:
            continue
        decision = Decision.WITHDRAW if all_gone else current.decision
        decisions[name] = replace(current, decision=decision, reason=reason, detail=detail)
    return routes, decisions


# --------------------------------------------------------------------------- helpers


def _drain_delay(node: NodeConfig, svc: ServiceConfig) -> float:
    return svc.drain_delay if svc.drain_delay is not None else node.drain_delay


def _vip_objects(
    node: NodeConfig,
    svc: ServiceConfig,
    vip: IPAddress,
    states: HealthSnapshot,
    services: set[VirtualServiceSpec],
    real_servers: set[RealServerSpec],
) -> VipNeed:
    if svc.mode is ServiceMode.ANNOUNCE:
        address = AddressSpec(svc.interface or "lo", vip)
        return VipNeed(svc.name, vip, address, None, frozenset(), shared=True)
    keys: set[VirtualServiceKey] = set()
    for port in svc.ports:
        key = VirtualServiceKey(vip, port.port, port.protocol)
        keys.add(key)
        pool = svc.preserve_connections
        services.add(
            VirtualServiceSpec(
                key, port.scheduler, port.persistence, mh_fallback=pool, mh_port=pool
            )
        )
        real_servers.update(_real_servers(node, svc, key, port, states))
    return VipNeed(
        svc.name, vip, AddressSpec(svc.name, vip), LinkSpec(svc.name), frozenset(keys), False
    )


def _real_servers(
    node: NodeConfig,
    svc: ServiceConfig,
    key: VirtualServiceKey,
    port: PortConfig,
    states: HealthSnapshot,
) -> Iterable[RealServerSpec]:
    if not svc.real_servers:
        own = node.local_backend_v4 if key.vip.version == 4 else node.backend_v6
        if own is not None:
            yield RealServerSpec(RealServerKey(key, own, port.target), 1, ForwardMethod.MASQ)
        return
    for rs in svc.real_servers:
        if rs.address.version != key.vip.version:
            continue
        rs_states = [
            states.get(CheckKey(svc.name, real_server_target(svc, rs), c.label)) for c in rs.checks
        ]
        healthy = all(is_up(s) for s in rs_states)
        if not healthy and svc.unhealthy_real_server == "remove":
            continue
        weight = rs.weight if healthy else 0
        rs_key = RealServerKey(key, rs.address, rs.port if rs.port is not None else port.target)
        yield RealServerSpec(rs_key, weight, rs.forward)


def _pool_tables(
    svc: ServiceConfig, vip: IPAddress
) -> Iterable[tuple[VirtualServiceKey, PoolTable]]:
    """The canonical order (config order) and intended weights of a pool-mode VIP's services."""
    servers = [rs for rs in svc.real_servers if rs.address.version == vip.version]
    for port in svc.ports:
        key = VirtualServiceKey(vip, port.port, port.protocol)
        order = tuple(
            RealServerKey(key, rs.address, rs.port if rs.port is not None else port.target)
            for rs in servers
        )
        yield key, PoolTable(svc.name, key, order, tuple(rs.weight for rs in servers))


def _next_hop(peer: PeerConfig, vip: IPAddress) -> tuple[bool, IPAddress | None]:
    """(announceable to this peer, next hop: None = self)."""
    explicit = peer.next_hop_v4 if vip.version == 4 else peer.next_hop_v6
    if explicit is not None:
        return True, explicit
    return peer.address.version == vip.version, None


@functools.lru_cache(maxsize=65536)
def _host_prefix(vip: IPAddress) -> IPNetwork:
    """Cached: parsing a network for every VIP of every pass was 3 % of the agent's Python
    CPU at 1,000 services (py-spy, bench/scale.py)."""
    return ipaddress.ip_network(vip)


def announcing(decision: Decision) -> bool:
    """True for the decisions that put routes on the wire (healthy, degraded, draining)."""
    return decision in _ROUTE_STATE


VipOwners = Mapping[IPAddress, tuple[ServiceConfig, ...]]


def vip_owners(config: Config) -> VipOwners:
    """The services of each VIP, in config order (made once per config: see below)."""
    owners: dict[IPAddress, list[ServiceConfig]] = {}
    for svc in config.services:
        for vip in svc.vips:
            owners.setdefault(vip, []).append(svc)
    return {vip: tuple(services) for vip, services in owners.items()}


def prefixes_given_up(
    config: Config,
    service: str,
    health: HealthSnapshot,
    admin: AdminState,
    now: float,
    owners: VipOwners | None = None,
) -> frozenset[IPNetwork]:
    """The prefixes to withdraw at once because ``service`` stopped announcing: its own,
    minus those another announcing service shares. Decides only the services involved (a
    full ``desired_state`` over 1,000 services was most of a withdraw's delay; so was
    looking at every service for a shared VIP: pass ``owners``, made once per config)."""
    if owners is None:
        owners = vip_owners(config)
    svc = next((s for s in config.services if s.name == service), None)
    if svc is None or announcing(decide(config.node, svc, health, admin, now).decision):
        return frozenset()
    gone = set(svc.vips)
    for vip in svc.vips:
        if any(
            other is not svc and announcing(decide(config.node, other, health, admin, now).decision)
            for other in owners.get(vip, ())
        ):
            gone.discard(vip)
    return frozenset(_host_prefix(vip) for vip in gone)
