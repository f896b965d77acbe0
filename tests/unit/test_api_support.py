"""A fake AgentControl and sample data shared by the API, metrics and client tests."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from bgplb.model import (
    CheckStatus,
    Decision,
    IPVSCounters,
    ObservedDataplane,
    PeerState,
    PeerType,
    Protocol,
    RealServerKey,
    Reason,
    ServiceMode,
    VirtualServiceKey,
)
from bgplb.reconciler import PassResult
from bgplb.status import (
    CheckStatusModel,
    NodeStatus,
    PeerStatusModel,
    PrerequisiteStatus,
    RealServerStatus,
    ReloadResult,
    ServiceStatus,
    StatusResponse,
    TrafficResponse,
    VipTraffic,
)

TOKEN = "tok-9f1c2a7e-secret-value"
MD5_SECRET = "md5-pa55w0rd-xyz"
CHECK_ERROR = "connection refused by 192.0.2.10:8080"

VIP_WEB = ipaddress.ip_address("198.51.100.10")
VIP_DNS = ipaddress.ip_address("2001:db8::53")
VS_WEB = VirtualServiceKey(VIP_WEB, 80, Protocol.TCP)
VS_DNS = VirtualServiceKey(VIP_DNS, 53, Protocol.UDP)
RS_WEB_1 = RealServerKey(VS_WEB, ipaddress.ip_address("192.0.2.10"), 8080)
RS_WEB_2 = RealServerKey(VS_WEB, ipaddress.ip_address("192.0.2.11"), 8080)
RS_DNS_1 = RealServerKey(VS_DNS, ipaddress.ip_address("2001:db8:1::10"), 53)


def observed() -> ObservedDataplane:
    return ObservedDataplane(
        service_counters={
            VS_WEB: IPVSCounters(3, 1, 100, 1000, 900, 64000, 128000),
            VS_DNS: IPVSCounters(0, 5, 40, 40, 40, 2400, 4800),
        },
        real_server_counters={
            RS_WEB_1: IPVSCounters(2, 1, 60, 600, 500, 40000, 80000),
            RS_WEB_2: IPVSCounters(1, 0, 40, 400, 400, 24000, 48000),
            RS_DNS_1: IPVSCounters(0, 5, 40, 40, 40, 2400, 4800),
        },
    )


def sample_status(
    drained: frozenset[str] = frozenset(), node_drained: bool = False, ready: bool = True
) -> StatusResponse:
    web = ServiceStatus(
        name="web",
        mode=ServiceMode.IPVS,
        decision=Decision.WITHDRAW if "web" in drained or node_drained else Decision.ANNOUNCE,
        reason=Reason.DRAINING if "web" in drained else Reason.HEALTHY,
        vips=[VIP_WEB],
        drained="web" in drained,
        checks=[
            CheckStatusModel(
                check="http",
                target=str(RS_WEB_1),
                status=CheckStatus.UP,
                last_ok=True,
                last_latency_seconds=0.003,
                last_time=1.7e9,
                successes=5,
            ),
            CheckStatusModel(
                check="http",
                target=str(RS_WEB_2),
                status=CheckStatus.DOWN,
                last_ok=False,
                last_error=CHECK_ERROR,
                last_time=1.7e9,
                failures=3,
            ),
        ],
        real_servers=[
            RealServerStatus(address=RS_WEB_1.address, port=8080, weight=1, healthy=True),
            RealServerStatus(address=RS_WEB_2.address, port=8080, weight=0, healthy=False),
        ],
        routes={"192.0.2.1": ["198.51.100.10/32"], "192.0.2.2": ["198.51.100.10/32"]},
    )
    dns = ServiceStatus(
        name="dns",
        mode=ServiceMode.ANNOUNCE,
        decision=Decision.WITHDRAW,
        reason=Reason.CHECK_FAILED,
        detail="check udp failed",
        vips=[VIP_DNS],
    )
    return StatusResponse(
        node=NodeStatus(
            router_id=ipaddress.IPv4Address("192.0.2.100"),
            local_as=65001,
            version="0.1.0",
            ready=ready,
            drained=node_drained,
            uptime=12.5,
        ),
        services=[web, dns],
        peers=[
            PeerStatusModel(
                address="192.0.2.1",
                asn=65000,
                type=PeerType.EBGP,
                state=PeerState.UP,
                routes_advertised=1,
            ),
            PeerStatusModel(
                address="192.0.2.2",
                asn=65001,
                type=PeerType.IBGP,
                state=PeerState.DOWN,
                reason="hold timer expired",
            ),
        ],
        prerequisites=[
            PrerequisiteStatus(
                name="ip_vs", ok=False, detail="module missing", fix="modprobe ip_vs"
            ),
        ],
    )


@dataclass
class FakeControl:
    """Records calls; ``services`` are the known names; ``hang`` makes actions block."""

    services: frozenset[str] = frozenset({"web", "dns"})
    is_ready: bool = True
    hang: bool = False
    reload_result: ReloadResult = field(
        default_factory=lambda: ReloadResult(ok=True, changed_services=["web"])
    )
    fail_status: Exception | None = None
    calls: list[tuple[str, str | None]] = field(default_factory=list)
    drained: set[str] = field(default_factory=set)
    node_drained: bool = False
    # the traffic endpoint: web's inbound packets at the agent time ``now`` (tests move both)
    now: float = 100.0
    web_packets: int = 1000
    traffic_error: Exception | None = None
    traffic_hook: Callable[[str], None] | None = None  # called before each answer

    def ready(self) -> bool:
        return self.is_ready

    def status(self) -> StatusResponse:
        if self.fail_status is not None:
            raise self.fail_status
        return sample_status(frozenset(self.drained), self.node_drained, self.is_ready)

    async def status_json(self) -> str:
        return self.status().model_dump_json()

    async def _act(self, action: str, service: str | None) -> None:
        if service is not None and service not in self.services:
            raise KeyError(service)
        if self.hang:
            await asyncio.Event().wait()
        self.calls.append((action, service))

    async def drain(self, service: str | None) -> None:
        await self._act("drain", service)
        if service is None:
            self.node_drained = True
        else:
            self.drained.add(service)

    async def undrain(self, service: str | None) -> None:
        await self._act("undrain", service)
        if service is None:
            self.node_drained = False
        else:
            self.drained.discard(service)

    async def traffic(self, service: str) -> TrafficResponse:
        if service not in self.services:
            raise KeyError(service)
        if self.hang:
            await asyncio.Event().wait()
        if self.traffic_error is not None:
            raise self.traffic_error
        if self.traffic_hook is not None:
            self.traffic_hook(service)
        self.calls.append(("traffic", service))
        if service == "dns":
            return TrafficResponse(
                service="dns", mode=ServiceMode.ANNOUNCE, ipvs=False, monotonic=self.now
            )
        vip = VipTraffic(
            vip=VIP_WEB, packets_in=self.web_packets, packets_in_per_second=7, virtual_services=1
        )
        return TrafficResponse(
            service=service, mode=ServiceMode.IPVS, ipvs=True, monotonic=self.now, vips=[vip]
        )

    async def reload(self, probe: bool = False) -> ReloadResult:
        await self._act("reload", None)
        if probe:
            self.calls[-1] = ("reload", "probe")
        return self.reload_result


def a_pass(duration: float, errors: tuple[str, ...] = ()) -> PassResult:
    """A reconcile pass result with just what Metrics reads."""
    return PassResult(
        decisions={}, observed=observed(), routes={}, actions=(), errors=errors, duration=duration
    )
