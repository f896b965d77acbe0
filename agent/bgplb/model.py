"""Domain types shared by the pure core and the adapters.

Everything here is an immutable value: enums for states, frozen dataclasses for objects.
Addresses are :mod:`ipaddress` objects. Nothing here performs I/O.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Protocol(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


class ForwardMethod(enum.StrEnum):
    MASQ = "masq"
    DR = "dr"
    TUNNEL = "tunnel"


class ServiceMode(enum.StrEnum):
    IPVS = "ipvs"
    ANNOUNCE = "announce"


class Decision(enum.StrEnum):
    """What the node does with a service's routes."""

    ANNOUNCE = "announce"  # healthy: normal attributes
    DEGRADED = "degraded"  # unhealthy but on_down=announce_degraded: worse attributes
    DRAINING = "draining"  # admin drain, within the drain delay: draining attributes
    WITHDRAW = "withdraw"  # not announced


class Reason(enum.StrEnum):
    """Why a decision was taken. A bounded set: safe as a metric label."""

    HEALTHY = "healthy"
    STARTING = "starting"  # checks have not yet reached `rise`
    POOL_SETTLING = "pool_settling"  # pool mode: a real-server check has not decided yet
    CHECK_FAILED = "check_failed"  # detail names the check
    BELOW_MIN_HEALTHY = "below_min_healthy"
    DRAINING = "draining"  # service drained by the operator
    NODE_DRAINING = "node_draining"  # whole node drained
    VIP_MISSING = "vip_missing"
    IPVS_MISSING = "ipvs_missing"
    DATAPLANE_CONFLICT = "dataplane_conflict"  # a foreign object holds what we need
    SHUTTING_DOWN = "shutting_down"
    NO_CAPACITY = "no_capacity"  # link_bandwidth: no VIP has healthy capacity (linkbw.py)
    UNCONFIGURED = "unconfigured"


class PeerType(enum.StrEnum):
    EBGP = "ebgp"
    IBGP = "ibgp"


class PeerState(enum.StrEnum):
    IDLE = "idle"
    CONNECTED = "connected"
    UP = "up"
    DOWN = "down"


class CheckStatus(enum.StrEnum):
    UP = "up"
    DOWN = "down"


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True, order=True)
class RouteAttributes:
    """BGP path attributes the agent can set on an announcement."""

    communities: tuple[str, ...] = ()  # "65535:0"
    large_communities: tuple[str, ...] = ()  # "65001:1:2"
    extended_communities: tuple[str, ...] = ()  # "bandwidth:65001:125000000"
    as_path: tuple[int, ...] = ()  # full AS path (own AS first); empty = speaker default
    med: int | None = None
    local_pref: int | None = None  # iBGP only

    def merged(self, other: RouteAttributes) -> RouteAttributes:
        """Attributes of ``self`` overlaid with those explicitly set in ``other``."""
        return RouteAttributes(
            communities=tuple(dict.fromkeys(self.communities + other.communities)),
            large_communities=tuple(
                dict.fromkeys(self.large_communities + other.large_communities)
            ),
            extended_communities=tuple(
                dict.fromkeys(self.extended_communities + other.extended_communities)
            ),
            as_path=other.as_path or self.as_path,
            med=other.med if other.med is not None else self.med,
            local_pref=other.local_pref if other.local_pref is not None else self.local_pref,
        )


@dataclass(frozen=True, order=True)
class Route:
    """One announcement to one peer."""

    prefix: IPNetwork
    next_hop: IPAddress | None  # None = "self" (the session's local address)
    attributes: RouteAttributes = field(default_factory=RouteAttributes)
    service: str = field(default="", compare=False)
    # hashed once: ``ipaddress`` objects hash in Python, and a withdraw at 1,000 services
    # rebuilt route sets hashing each route again (~5 us a route; bench/)
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.prefix, self.next_hop, self.attributes)))

    def __hash__(self) -> int:
        return self._hash


PeerKey = str  # the peer's address as text: the key ExaBGP uses too
RouteSet = Mapping[PeerKey, frozenset[Route]]


@dataclass(frozen=True)
class PeerStatus:
    key: PeerKey
    state: PeerState
    reason: str = ""  # why it is down, as the speaker reported it
    since: float = 0.0


# --------------------------------------------------------------------------- dataplane


@dataclass(frozen=True, order=True)
class LinkSpec:
    """A dummy link the agent creates (ipvs mode). Its name is the service name."""

    name: str


@dataclass(frozen=True, order=True)
class AddressSpec:
    """A VIP on an interface (our dummy link, or an existing one in announce mode)."""

    ifname: str
    address: IPAddress

    @property
    def prefixlen(self) -> int:
        return self.address.max_prefixlen


@dataclass(frozen=True, order=True)
class VirtualServiceKey:
    vip: IPAddress
    port: int
    protocol: Protocol

    def __str__(self) -> str:
        host = f"[{self.vip}]" if self.vip.version == 6 else str(self.vip)
        return f"{self.protocol}:{host}:{self.port}"


@dataclass(frozen=True, order=True)
class VirtualServiceSpec:
    key: VirtualServiceKey
    scheduler: str = "wlc"
    persistence: int | None = None  # seconds; None = no persistence
    # mh scheduler flags (pool mode): IP_VS_SVC_F_SCHED1 (a new flow hashed to a weight-0
    # server falls back to the next one) and IP_VS_SVC_F_SCHED2 (hash the source port too)
    mh_fallback: bool = False
    mh_port: bool = False


@dataclass(frozen=True, order=True)
class RealServerKey:
    service: VirtualServiceKey
    address: IPAddress
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}"


@dataclass(frozen=True, order=True)
class RealServerSpec:
    key: RealServerKey
    weight: int = 1
    forward: ForwardMethod = ForwardMethod.MASQ


@dataclass(frozen=True)
class IPVSCounters:
    active_connections: int = 0
    inactive_connections: int = 0
    connections: int = 0
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    # the kernel's rate estimator (IPVS_STATS_ATTR_INPPS): packets/s, smoothed (ip_vs_est.c:
    # sampled every 2 s, avg += (rate - avg) / 4), so it lags a change by tens of seconds
    packets_in_per_second: int = 0


@dataclass(frozen=True)
class DataplaneState:
    """A set of dataplane objects: what we want, or what the kernel has that we own."""

    links: frozenset[LinkSpec] = frozenset()
    addresses: frozenset[AddressSpec] = frozenset()
    services: frozenset[VirtualServiceSpec] = frozenset()
    real_servers: frozenset[RealServerSpec] = frozenset()

    def service_keys(self) -> frozenset[VirtualServiceKey]:
        return frozenset(s.key for s in self.services)

    def real_server_keys(self) -> frozenset[RealServerKey]:
        return frozenset(r.key for r in self.real_servers)


@dataclass(frozen=True)
class ObservedDataplane:
    """What ``Dataplane.observe()`` returns.

    ``owned`` holds the objects the agent made (as recorded by the adapter); ``foreign`` holds
    the identities of objects that exist but are not ours and would collide with something we
    might want (a link of that name, an address, an IPVS service). The planner never emits an
    action on a foreign object. ``counters`` are read-only statistics for metrics.
    """

    owned: DataplaneState = field(default_factory=DataplaneState)
    foreign_links: frozenset[str] = frozenset()
    foreign_addresses: frozenset[AddressSpec] = frozenset()
    foreign_services: frozenset[VirtualServiceKey] = frozenset()
    interfaces: frozenset[str] = frozenset()  # every link name present (for announce mode)
    service_counters: Mapping[VirtualServiceKey, IPVSCounters] = field(default_factory=dict)
    real_server_counters: Mapping[RealServerKey, IPVSCounters] = field(default_factory=dict)
    # the kernel's dump order of each owned virtual service's real servers (head of
    # svc->destinations first): pool mode's Maglev table depends on it (pool.py)
    dest_order: Mapping[VirtualServiceKey, tuple[RealServerKey, ...]] = field(default_factory=dict)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class EnsureLink:
    link: LinkSpec


@dataclass(frozen=True)
class RemoveLink:
    link: LinkSpec


@dataclass(frozen=True)
class AddAddress:
    address: AddressSpec


@dataclass(frozen=True)
class RemoveAddress:
    address: AddressSpec


@dataclass(frozen=True)
class AddVirtualService:
    service: VirtualServiceSpec


@dataclass(frozen=True)
class UpdateVirtualService:
    service: VirtualServiceSpec


@dataclass(frozen=True)
class RemoveVirtualService:
    key: VirtualServiceKey


@dataclass(frozen=True)
class AddRealServer:
    real_server: RealServerSpec


@dataclass(frozen=True)
class UpdateRealServer:
    real_server: RealServerSpec


@dataclass(frozen=True)
class RemoveRealServer:
    key: RealServerKey


DataplaneAction = (
    EnsureLink
    | RemoveLink
    | AddAddress
    | RemoveAddress
    | AddVirtualService
    | UpdateVirtualService
    | RemoveVirtualService
    | AddRealServer
    | UpdateRealServer
    | RemoveRealServer
)

REMOVALS = (RemoveLink, RemoveAddress, RemoveVirtualService, RemoveRealServer)


def action_vips(action: DataplaneAction) -> frozenset[IPAddress]:
    """The VIPs whose service an action affects (used to order withdraws before removals)."""
    match action:
        case EnsureLink() | RemoveLink():
            return frozenset()
        case AddAddress(address=a) | RemoveAddress(address=a):
            return frozenset({a.address})
        case AddVirtualService(service=s) | UpdateVirtualService(service=s):
            return frozenset({s.key.vip})
        case RemoveVirtualService(key=k):
            return frozenset({k.vip})
        case AddRealServer(real_server=r) | UpdateRealServer(real_server=r):
            return frozenset({r.key.service.vip})
        case RemoveRealServer(key=k):
            return frozenset({k.service.vip})
    raise AssertionError(action)  # pragma: no cover
