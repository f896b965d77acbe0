"""What the HTTP API returns, and the ``AgentControl`` Protocol the API drives.

Every response body is one of these frozen pydantic models; the OpenAPI document served at
``/api/v1/openapi.json`` is generated from their JSON schemas (see :mod:`bgplb.api`).
"""

from __future__ import annotations

import ipaddress
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from .bfd.base import BfdState
from .model import (
    CheckStatus,
    Decision,
    IPAddress,
    PeerState,
    PeerType,
    Reason,
    ServiceMode,
)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CheckStatusModel(Frozen):
    """One health check's tracker state."""

    check: str = Field(description="check name (unique within its service or real server)")
    target: str | None = Field(
        default=None, description="real server 'address:port'; null for a service-level check"
    )
    status: CheckStatus
    last_ok: bool | None = Field(default=None, description="result of the last probe")
    last_latency_seconds: float | None = None
    last_error: str | None = None
    last_time: float | None = Field(default=None, description="wall-clock time of the last probe")
    successes: int = Field(default=0, ge=0, description="consecutive successes")
    failures: int = Field(default=0, ge=0, description="consecutive failures")


class RealServerStatus(Frozen):
    address: IPAddress
    port: int = Field(ge=1, le=65535)
    weight: int = Field(ge=0)
    healthy: bool


class PoolTableStatus(Frozen):
    """Pool mode (preserve_connections): one virtual service's Maglev table."""

    vip: IPAddress
    port: int = Field(ge=1, le=65535)
    protocol: str
    order_ok: bool = Field(
        description="the kernel lists the real servers in the config's order; false: drain "
        "the node to let the agent rebuild the table"
    )
    fingerprint: str = Field(description="hash of the table's inputs: equal on every node")


class VipBandwidthStatus(Frozen):
    """UCMP (services[].link_bandwidth): one VIP's capacity and the link-bandwidth community it
    carries, as of the last reconcile pass (docs/bgp.md#ucmp-serviceslink_bandwidth)."""

    vip: IPAddress
    capacity: int = Field(
        ge=0,
        description="healthy capacity now: the sum of the weights of the VIP family's healthy "
        "real servers (or link_bandwidth.capacity), quantized to 5 significant bits",
    )
    announced_capacity: int = Field(
        ge=0,
        description="the capacity announced: differs from 'capacity' while a change waits "
        "for the hold-down; 0: the VIP is withdrawn",
    )
    bytes_per_second: int | None = Field(
        ge=0,
        description="the community's value (announced_capacity x unit, bytes/s), sent with "
        "the VIP's routes ('routes' says to which peers); null: zero capacity, the VIP is "
        "withdrawn",
    )
    change_in_seconds: float | None = Field(
        ge=0,
        description="when the held-down change to 'capacity' is sent (seconds from now); "
        "null: nothing waits",
    )


class ServiceStatus(Frozen):
    name: str
    mode: ServiceMode
    decision: Decision
    reason: Reason
    detail: str = ""
    vips: list[IPAddress] = Field(default_factory=list)
    drained: bool = False
    checks: list[CheckStatusModel] = Field(default_factory=list)
    real_servers: list[RealServerStatus] = Field(default_factory=list)
    routes: dict[str, list[str]] = Field(
        default_factory=dict, description="peer address -> prefixes announced to it"
    )
    peers: list[str] = Field(
        default_factory=list,
        description="the addresses of the peers this service is for (services[].peers; "
        "default every peer); 'routes' says which of them hold its prefixes now",
    )
    inbound_packets_per_second: dict[str, int] = Field(
        default_factory=dict,
        description="VIP -> inbound packets/s summed over its IPVS virtual services, the "
        "kernel's smoothed estimator as of the last observation (every resync_interval); "
        "empty in announce mode. Fresh counters: /api/v1/services/{name}/traffic",
    )
    pool_tables: list[PoolTableStatus] = Field(default_factory=list)
    link_bandwidth: list[VipBandwidthStatus] = Field(
        default_factory=list,
        description="per VIP, with services[].link_bandwidth set (UCMP); empty without it "
        "or before the first reconcile pass",
    )


class PeerStatusModel(Frozen):
    address: str
    name: str | None = Field(default=None, description="peers[].name, if set")
    asn: int = Field(ge=1)
    type: PeerType
    state: PeerState
    reason: str = Field(default="", description="why the session is not up, as reported")
    routes_advertised: int = Field(default=0, ge=0)
    bfd: BfdState | None = Field(
        default=None, description="the BFD session's state (peers with bfd set; else null)"
    )
    bfd_detail: str = Field(default="", description="why BFD is unknown, or bfdd's diagnostic")
    held: str = Field(
        default="",
        description="why this peer gets no route now (bfd_not_up: announced only once its BFD "
        "session is Up)",
    )


class PrerequisiteStatus(Frozen):
    name: str
    ok: bool
    detail: str = ""
    fix: str | None = None


class KernelKnobStatus(Frozen):
    """A kernel knob the config wants (docs/forwarding.md#kernel-knobs)."""

    knob: str = Field(
        description="a sysctl (net.ipv4.vs.sloppy_tcp, ...), ipvs.timeouts, sync.master, "
        "sync.backup or knobs (the whole pass)"
    )
    want: str
    got: str | None = Field(default=None, description="as read back; null: not read")
    ok: bool
    error: str | None = Field(default=None, description="the last failure: file or call, errno")


class GoFlagsStatus(Frozen):
    """The Go bgp-lb's command line the agent was started with (docs/migrating-from-bgp-lb.md):
    every flag's effective value, defaults included. The agent runs the config file as these
    flags adjust it."""

    config: str = Field(description="-config: the config file, as an absolute path")
    network_setup: bool = Field(
        description="-network-setup; false: every service in announce mode, no interface touched"
    )
    ipvs_setup: bool = Field(
        description="-ipvs-setup; false: the dummy link and the VIP, no IPVS virtual service"
    )
    metrics_address: str = Field(description="-metrics-address: the metrics-only listener")
    log_level: str = Field(description="-log-level")


class NodeStatus(Frozen):
    router_id: ipaddress.IPv4Address
    local_as: int = Field(ge=1)
    version: str = Field(description="the agent's version")
    image_version: str = Field(
        default="",
        description="the appliance image's version (IMAGE_VERSION in /etc/os-release); "
        "empty off the image",
    )
    ready: bool
    drained: bool
    uptime: float = Field(ge=0, description="seconds since the agent started")
    admin_persisted: bool = Field(
        default=True,
        description="false: a drain/undrain is in force but not yet written to state_dir",
    )
    drain_reason: str | None = Field(
        default=None,
        description="why the agent drained the node itself (admin.json unreadable): "
        "it stays drained until an operator undrains",
    )
    mutating_api: str | None = Field(
        default=None, description="why drain/undrain/reload are disabled; null: enabled"
    )
    go_flags: GoFlagsStatus | None = Field(
        default=None,
        description="null: started as 'bgp-lb run'; else started with the Go bgp-lb's command "
        "line, with these effective flags (the config runs as they adjust it)",
    )


class ProcessStatus(Frozen):
    """A helper process the agent runs and supervises (ExaBGP; bfdd once BFD exists)."""

    name: str = Field(description="exabgp (later: bfdd)")
    running: bool
    pid: int | None = None
    restarts: int = Field(default=0, ge=0, description="restarts since the agent started")


class StateFileStatus(Frozen):
    """One file the agent keeps or reads (docs/operations.md#state-files)."""

    file: str = Field(description="admin, ownership, exabgp_config or api_token")
    path: str | None = None
    ok: bool
    problem: str | None = Field(default=None, description="what is wrong and what was done")
    errors: int = Field(default=0, ge=0, description="bad reads and failed writes since start")


class ReloadStatus(Frozen):
    """The outcome of the last reload (SIGHUP or API) since the agent started."""

    ok: bool
    at: float = Field(description="wall-clock time the reload finished")
    errors: list[str] = Field(
        default_factory=list, description="why it failed; the previous config stays in force"
    )


class StatusResponse(Frozen):
    node: NodeStatus
    services: list[ServiceStatus] = Field(default_factory=list)
    peers: list[PeerStatusModel] = Field(default_factory=list)
    prerequisites: list[PrerequisiteStatus] = Field(default_factory=list)
    state_files: list[StateFileStatus] = Field(default_factory=list)
    processes: list[ProcessStatus] = Field(
        default_factory=list, description="the helper processes the agent supervises"
    )
    kernel_knobs: list[KernelKnobStatus] = Field(
        default_factory=list,
        description="sysctls, IPVS timeouts and sync daemons the agent keeps (pool mode, "
        "node.ipvs, node.connection_sync)",
    )
    last_reload: ReloadStatus | None = Field(
        default=None, description="the last reload's outcome; null: none since the start"
    )

    def service(self, name: str) -> ServiceStatus | None:
        return next((s for s in self.services if s.name == name), None)


class VipTraffic(Frozen):
    """One VIP's inbound IPVS counters, summed over its virtual services (one per port)."""

    vip: IPAddress
    packets_in: int = Field(ge=0, description="inbound packets since the services were made")
    packets_in_per_second: int = Field(
        ge=0, description="the kernel's estimator: 2 s samples, smoothed (lags by tens of s)"
    )
    virtual_services: int = Field(
        ge=0, description="how many of the VIP's virtual services the kernel has"
    )


class TrafficResponse(Frozen):
    """A service's IPVS counters, read from the kernel when asked (not the last pass's)."""

    service: str
    mode: ServiceMode
    ipvs: bool = Field(description="false: announce mode, the node has no counters for it")
    monotonic: float = Field(
        description="the agent's monotonic clock (seconds) when the counters were read: "
        "divide a packets_in difference by this difference for a rate"
    )
    vips: list[VipTraffic] = Field(default_factory=list)


class ErrorResponse(Frozen):
    error: str
    detail: str | None = None


class ActionResponse(Frozen):
    ok: bool = True
    action: str = Field(description="drain or undrain")
    service: str | None = Field(default=None, description="null for the whole node")
    persisted: bool = Field(
        default=True,
        description="false: in force in memory, not yet written to state_dir (retried)",
    )
    detail: str | None = Field(
        default=None, description="why it is not persisted (e.g. no space left on device)"
    )


class FailedCheck(Frozen):
    """A changed or new check that failed its probe before a ``probe`` reload."""

    check: str = Field(description="service[/real server]/check")
    error: str


class ReloadResult(Frozen):
    ok: bool
    errors: list[str] = Field(default_factory=list)
    changed_services: list[str] = Field(default_factory=list)
    probed_checks: int = Field(
        default=0, ge=0, description="changed or new checks probed before committing (probe)"
    )
    failed_checks: list[FailedCheck] = Field(
        default_factory=list, description="probe reload: the changed checks that failed"
    )


class HealthResponse(Frozen):
    ok: bool


class ReadyResponse(Frozen):
    ready: bool


class AgentControl(Protocol):
    """What the API needs from the agent. Unknown service names raise ``KeyError``."""

    def ready(self) -> bool:
        """True once the first reconcile pass has completed."""

    def status(self) -> StatusResponse: ...

    async def drain(self, service: str | None) -> str | None:
        """Drain one service, or the whole node when ``service`` is None. Never refused for
        a disk problem: returns why the drain is not persisted (None: it is)."""

    async def undrain(self, service: str | None) -> str | None: ...

    async def traffic(self, service: str) -> TrafficResponse:
        """The service's IPVS counters per VIP, read from the kernel now (``KeyError``: no
        such service; ``DataplaneError``/``TimeoutError``: the kernel did not answer)."""

    async def reload(self, probe: bool = False) -> ReloadResult:
        """Reload the config file, all or nothing. ``probe``: first probe the changed and new
        checks once each and refuse (nothing switched) if any of them fails."""
