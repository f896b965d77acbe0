"""The config schema: frozen pydantic models, one per section, unknown keys rejected.

Field-level rules live here (types, ranges, formats). Rules that relate several fields or
sections are in :mod:`.crosschecks`; both run in :func:`bgplb.config.parse_config`.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..model import ForwardMethod, PeerType, Protocol, RouteAttributes, ServiceMode
from .bandwidth import LinkBandwidthConfig, parse_link_bandwidth
from .base import CHECK_NAME_RE, SCHEDULERS, Strict, check_ifname
from .bfd import BfdConfig
from .fields import (
    GSHUT,
    Community,
    ExtendedCommunity,
    HostHeader,
    IPAddr,
    IPv4Addr,
    IPv6Addr,
    LargeCommunity,
    Vip,
)
from .knobs import ConnectionSyncConfig, IpvsKnobsConfig

__all__ = ["GSHUT", "BfdConfig", "ConnectionSyncConfig", "IpvsKnobsConfig", "Strict"]

# --------------------------------------------------------------------------- node


class LogConfig(Strict):
    format: Literal["json", "text"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class ApiConfig(Strict):
    listen: IPAddr = ipaddress.IPv4Address("127.0.0.1")
    port: int = Field(default=9180, ge=1, le=65535)
    token_file: Path | None = None  # bearer token for mutating endpoints; none = they are disabled
    metrics_listen: IPAddr | None = None  # /metrics on its own listener as well
    metrics_port: int | None = Field(default=None, ge=1, le=65535)


class NodeConfig(Strict):
    router_id: IPv4Addr
    local_as: int = Field(ge=1, le=4294967295)
    backend_v4: IPv4Addr | None = None  # node's own address for the local backend
    backend_v6: IPv6Addr | None = None  # (defaults: v4 = router_id; v6 = required)
    api: ApiConfig = ApiConfig()
    log: LogConfig = LogConfig()
    state_dir: Path = Path("/var/lib/bgp-lb")
    runtime_dir: Path = Path("/run/bgp-lb")
    shutdown_grace: float = Field(default=3.0, ge=0, le=600)
    keep_dataplane_on_exit: bool = False
    resync_interval: float = Field(default=10.0, gt=0, le=3600)
    drain_delay: float = Field(default=5.0, ge=0, le=3600)
    metrics_per_real_server: bool = True
    same_as_fleet: bool = False  # every LB node uses this local_as (makes MED comparable)
    # seconds between two ticks of the event loop lag monitor (bgplb_event_loop_lag_seconds);
    # each tick wakes the loop: ~1 % of a core at 10 ms on a VM, ~17 % under QEMU TCG
    loop_lag_interval: float = Field(default=0.010, ge=0.001, le=10.0)
    ipvs: IpvsKnobsConfig | None = None  # timeouts and memory defense (pool mode: defaults)
    connection_sync: ConnectionSyncConfig | None = None  # IPVS sync daemons (docs/forwarding.md)
    # a fresh state_dir (no admin.json: a new or replaced disk) starts the node drained until
    # an operator undrains; an existing admin.json wins (docs/operations.md)
    start_drained: bool = False

    @property
    def local_backend_v4(self) -> ipaddress.IPv4Address:
        return self.backend_v4 or self.router_id


# --------------------------------------------------------------------------- peers


class PeerConfig(Strict):
    address: IPAddr
    asn: int = Field(ge=1, le=4294967295)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    port: int = Field(default=179, ge=1, le=65535)
    local_address: IPAddr | None = None
    next_hop_v4: IPv4Addr | None = None
    next_hop_v6: IPv6Addr | None = None
    hold_time: int = Field(default=9, ge=0, le=65535)
    md5_password_file: Path | None = None
    passive: bool = False
    multihop: int | None = Field(default=None, ge=1, le=255)
    bfd: BfdConfig | None = None  # opt-in: FRR's bfdd runs a session to this peer

    @property
    def key(self) -> str:
        return str(self.address)

    def peer_type(self, local_as: int) -> PeerType:
        return PeerType.IBGP if self.asn == local_as else PeerType.EBGP

    @field_validator("hold_time")
    @classmethod
    def _rfc4271_hold_time(cls, v: int) -> int:
        if 0 < v < 3:
            raise PydanticCustomError(
                "hold_time", "hold time {value} s: must be 0 or at least 3 (RFC 4271)", {"value": v}
            )
        return v


# --------------------------------------------------------------------------- checks


class CheckBase(Strict):
    """Fields common to every check. They fall in two kinds, split here and nowhere else:
    *timing* fields (:attr:`TIMING_FIELDS`: how often, how long, how many) and everything
    else, the *target* (what is probed and what counts as a pass: see :meth:`probe_identity`).
    A reload that changes only timing keeps a check's state and counters; one that changes the
    target keeps its status but re-verifies it (health/runner.py, docs/config.md)."""

    TIMING_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"interval", "fast_interval", "timeout", "rise", "fall"}
    )

    name: str | None = None  # defaults to the check type; must be unique within its owner
    interval: float = Field(default=1.0, gt=0, le=3600)
    fast_interval: float | None = Field(default=0.25, gt=0, le=3600)  # while a state changes
    timeout: float = Field(default=0.8, gt=0, le=3600)
    rise: int = Field(default=3, ge=1, le=100)
    fall: int = Field(default=2, ge=1, le=100)
    source_address: IPAddr | None = None

    @property
    def label(self) -> str:
        return self.name or self.type  # type: ignore[attr-defined]

    def probe_identity(self) -> dict[str, Any]:
        """What this check probes and how it judges the answer: every field but the timing
        ones (type, address, port, path, host, expected status, body_match, argv, ...)."""
        return self.model_dump(exclude=set(self.TIMING_FIELDS))

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str | None) -> str | None:
        if v is not None and not CHECK_NAME_RE.match(v):
            raise PydanticCustomError(
                "check_name",
                "'{value}' is not a valid check name "
                "(1-64 characters: letters, digits, '_', '.', ':', '-')",
                {"value": v},
            )
        return v


class HttpCheck(CheckBase):
    type: Literal["http", "https"]
    port: int | None = Field(default=None, ge=1, le=65535)  # default: the target port
    address: IPAddr | None = None  # default: the backend/real server address
    path: str = "/"
    expect_status: tuple[Annotated[int, Field(ge=100, le=599)], ...] = ()  # empty = any 2xx
    host: HostHeader | None = None  # the Host header (and TLS server name); see fields.py
    verify_tls: bool = True
    body_match: str | None = None  # regular expression searched in the body
    # hold an idle connection to the target; when it drops, probe at once (health/watch.py)
    watch_connection: bool = False

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() for c in v):
            raise PydanticCustomError(
                "http_path", "'{value}' must start with '/' and contain no spaces", {"value": v}
            )
        return v

    @field_validator("body_match")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise PydanticCustomError(
                    "regex",
                    "'{value}' is not a valid regular expression: {why}",
                    {"value": v, "why": str(e)},
                ) from None
        return v

    @field_validator("watch_connection")
    @classmethod
    def _watchable(cls, v: bool, info: ValidationInfo) -> bool:
        if v and (info.data.get("type") != "http" or info.data.get("body_match") is not None):
            raise PydanticCustomError(
                "watch_connection",
                "watch_connection works with tcp checks and plain http checks "
                "(not https, not with body_match)",
                {},
            )
        return v


class TcpCheck(CheckBase):
    type: Literal["tcp"]
    port: int | None = Field(default=None, ge=1, le=65535)
    address: IPAddr | None = None
    watch_connection: bool = False  # see HttpCheck


class IcmpCheck(CheckBase):
    type: Literal["icmp"]
    addresses: tuple[IPAddr, ...] = Field(min_length=1)
    require: Literal["all", "any"] = "any"  # "any": healthy if one address answers


class ExecCheck(CheckBase):
    type: Literal["exec"]
    argv: tuple[str, ...] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)


Check = Annotated[HttpCheck | TcpCheck | IcmpCheck | ExecCheck, Field(discriminator="type")]


# --------------------------------------------------------------------------- services


class AttributesConfig(Strict):
    communities: tuple[Community, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()
    extended_communities: tuple[ExtendedCommunity, ...] = ()
    as_path_prepend: int = Field(default=0, ge=0, le=16)  # extra copies of our own AS
    med: int | None = Field(default=None, ge=0, le=4294967295)
    local_pref: int | None = Field(default=None, ge=0, le=4294967295)

    def resolve(self, local_as: int) -> RouteAttributes:
        return RouteAttributes(
            communities=self.communities,
            large_communities=self.large_communities,
            extended_communities=self.extended_communities,
            as_path=(local_as,) * (self.as_path_prepend + 1) if self.as_path_prepend else (),
            med=self.med,
            local_pref=self.local_pref,
        )


class StateAttributes(Strict):
    """Route attributes per service state. ``None`` = the per-peer-type defaults."""

    healthy: AttributesConfig = AttributesConfig()
    degraded: AttributesConfig | None = None
    draining: AttributesConfig | None = None


class PortConfig(Strict):
    port: int = Field(ge=1, le=65535)
    target_port: int | None = Field(default=None, ge=1, le=65535)  # default: same as port
    protocol: Protocol = Protocol.TCP
    scheduler: str = "wlc"
    persistence: int | None = Field(default=None, ge=1, le=31536000)  # seconds

    @property
    def target(self) -> int:
        return self.target_port or self.port

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        if v not in SCHEDULERS:
            raise PydanticCustomError(
                "scheduler",
                "unknown IPVS scheduler '{value}' (one of {known})",
                {"value": v, "known": ", ".join(sorted(SCHEDULERS))},
            )
        return v


class RealServerConfig(Strict):
    address: IPAddr
    port: int | None = Field(default=None, ge=1, le=65535)  # default: each port's target port
    weight: int = Field(default=1, ge=0, le=65535)
    forward: ForwardMethod = ForwardMethod.MASQ
    checks: tuple[Check, ...] = ()


class ServiceConfig(Strict):
    name: str
    vips: tuple[Vip, ...] = Field(min_length=1)
    mode: ServiceMode = ServiceMode.IPVS
    interface: str | None = None  # announce mode: the existing interface holding the VIP
    # announce mode: false announces without looking for the VIP on any interface (the Go
    # bgp-lb's -network-setup=false); the operator routes the traffic to the node
    require_vip: bool = True
    ports: tuple[PortConfig, ...] = ()
    real_servers: tuple[RealServerConfig, ...] = ()
    unhealthy_real_server: Literal["weight0", "remove"] = "weight0"
    min_healthy: int = Field(default=1, ge=1)
    checks: tuple[Check, ...] = ()
    on_down: Literal["withdraw", "announce_degraded"] = "withdraw"
    attributes: StateAttributes = StateAttributes()
    drain_delay: float | None = Field(default=None, ge=0, le=3600)  # default: node.drain_delay
    preserve_connections: bool = False  # pool mode (docs/forwarding.md)
    # the names of the peers (peers[].name) this service is announced to; None = every peer
    peers: tuple[str, ...] | None = None
    # UCMP: announce the link-bandwidth community from healthy capacity (config/bandwidth.py)
    link_bandwidth: LinkBandwidthConfig | None = None

    @field_validator("link_bandwidth", mode="before")
    @classmethod
    def _auto(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "auto":
            raise PydanticCustomError(
                "link_bandwidth",
                "'{value}' is not a link_bandwidth setting: 'auto' or a mapping "
                "(capacity, unit, hold_down)",
                {"value": v},
            )
        return parse_link_bandwidth(v)

    @field_validator("peers")
    @classmethod
    def _some_peers(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v == ():
            raise PydanticCustomError(
                "no_peers",
                "an empty list announces the service to no peer: leave peers out to announce "
                "it to every peer",
                {},
            )
        return v

    @field_validator("name", "interface")
    @classmethod
    def _ifname(cls, v: str | None) -> str | None:
        return None if v is None else check_ifname(v)

    @model_validator(mode="after")
    def _pool_scheduler(self) -> ServiceConfig:
        """Pool mode hashes with Maglev: a port whose ``scheduler`` was not set gets ``mh``
        (one that was set to something else is refused by the cross-checks)."""
        if self.preserve_connections and self.ports:
            ports = tuple(
                p if "scheduler" in p.model_fields_set else p.model_copy(update={"scheduler": "mh"})
                for p in self.ports
            )
            object.__setattr__(self, "ports", ports)
        return self


class Config(Strict):
    node: NodeConfig
    peers: tuple[PeerConfig, ...] = Field(min_length=1)
    services: tuple[ServiceConfig, ...] = ()

    def service(self, name: str) -> ServiceConfig | None:
        return next((s for s in self.services if s.name == name), None)

    def service_peers(self, service: ServiceConfig) -> tuple[PeerConfig, ...]:
        """The peers ``service`` is announced to: its ``peers`` by name, else every peer.
        (Unknown names are refused by the cross-checks; here they are skipped.)"""
        if service.peers is None:
            return self.peers
        wanted = set(service.peers)
        return tuple(p for p in self.peers if p.name in wanted)
