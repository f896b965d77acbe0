"""Builders for config objects and health snapshots, for any unit test.

    cfg = config(ipvs_service("web", vips=("10.99.0.1",), ports=(80,)), peers=(ebgp_peer(),))
    snap = snapshot({key("web", "http"): up()})

Everything goes through the pydantic models (``model_validate``), so the objects are exactly
what the agent gets from a file (minus the cross-file checks of ``check_config``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bgplb.admin import AdminStore
from bgplb.bgp.fake import FakeSpeaker
from bgplb.clock import FakeClock
from bgplb.config import Config, PeerConfig, ServiceConfig
from bgplb.dataplane.fake import FakeDataplane
from bgplb.eventlog import Event, EventLog
from bgplb.health.tracker import CheckKey, CheckResult, CheckState
from bgplb.model import CheckStatus
from bgplb.reconciler import PassResult, Reconciler

LOCAL_AS = 65001
ROUTER_ID = "10.0.0.10"
BACKEND_V6 = "fd00::10"
EBGP_PEER = "10.0.0.1"
IBGP_PEER = "10.0.0.2"


def node(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "router_id": ROUTER_ID,
        "local_as": LOCAL_AS,
        "backend_v6": BACKEND_V6,
        "drain_delay": 5.0,
        "resync_interval": 10.0,
    }
    base.update(overrides)
    return base


def ebgp_peer(address: str = EBGP_PEER, asn: int = 65000, **kw: Any) -> dict[str, Any]:
    return {"address": address, "asn": asn, **kw}


def ibgp_peer(address: str = IBGP_PEER, asn: int = LOCAL_AS, **kw: Any) -> dict[str, Any]:
    return {"address": address, "asn": asn, **kw}


def tcp_check(name: str | None = None, **kw: Any) -> dict[str, Any]:
    check: dict[str, Any] = {"type": "tcp", **kw}
    if name is not None:
        check["name"] = name
    return check


def http_check(name: str | None = None, **kw: Any) -> dict[str, Any]:
    check: dict[str, Any] = {"type": "http", **kw}
    if name is not None:
        check["name"] = name
    return check


def port(number: int, protocol: str = "tcp", **kw: Any) -> dict[str, Any]:
    return {"port": number, "protocol": protocol, **kw}


def real_server(address: str, **kw: Any) -> dict[str, Any]:
    return {"address": address, **kw}


def ipvs_service(
    name: str = "web",
    vips: Iterable[str] = ("10.99.0.1",),
    ports: Iterable[int | dict[str, Any]] = (80,),
    **kw: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "mode": "ipvs",
        "vips": list(vips),
        "ports": [p if isinstance(p, dict) else port(p) for p in ports],
        **kw,
    }


def announce_service(
    name: str = "dns", vips: Iterable[str] = ("10.99.1.1",), interface: str = "lo", **kw: Any
) -> dict[str, Any]:
    return {"name": name, "mode": "announce", "vips": list(vips), "interface": interface, **kw}


def config(
    *services: dict[str, Any],
    peers: Iterable[dict[str, Any]] | None = None,
    **node_overrides: Any,
) -> Config:
    """A validated Config. Default peers: one eBGP peer."""
    return Config.model_validate(
        {
            "node": node(**node_overrides),
            "peers": list(peers) if peers is not None else [ebgp_peer()],
            "services": list(services),
        }
    )


def service(cfg: Config, name: str) -> ServiceConfig:
    svc = cfg.service(name)
    assert svc is not None, name
    return svc


def peer(cfg: Config, address: str) -> PeerConfig:
    return next(p for p in cfg.peers if p.key == address)


# --------------------------------------------------------------------------- health


def key(service: str, check: str, target: str | None = None) -> CheckKey:
    return CheckKey(service, target, check)


def up(changed_at: float = 0.0) -> CheckState:
    return CheckState(CheckStatus.UP, CheckResult(True, changed_at, 0.001), changed_at, 3, 0)


def down(changed_at: float = 0.0) -> CheckState:
    """DOWN after having been UP."""
    return CheckState(
        CheckStatus.DOWN, CheckResult(False, changed_at, 0.001, "refused"), changed_at, 0, 2
    )


def starting() -> CheckState:
    """DOWN and never UP yet."""
    return CheckState(CheckStatus.DOWN, None, None, 0, 0)


def snapshot(states: Mapping[CheckKey, CheckState] | None = None) -> dict[CheckKey, CheckState]:
    return dict(states or {})


class StaticHealth:
    """A HealthSource whose snapshot the test sets."""

    def __init__(self, states: Mapping[CheckKey, CheckState] | None = None) -> None:
        self.states: dict[CheckKey, CheckState] = dict(states or {})

    def snapshot(self) -> Mapping[CheckKey, CheckState]:
        return dict(self.states)

    def set(self, k: CheckKey, state: CheckState) -> None:
        self.states[k] = state


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


# --------------------------------------------------------------------------- reconciler rig

WEB_VIP = "10.99.0.1"
API_VIP = "10.99.0.2"


def web_and_api(**node_overrides: Any) -> Config:
    """web (one tcp check, port 80) and api (port 443), default backends, one eBGP peer."""
    return config(
        ipvs_service("web", vips=(WEB_VIP,), checks=[tcp_check()]),
        ipvs_service("api", vips=(API_VIP,), ports=(443,)),
        **node_overrides,
    )


class Rig:
    def __init__(self, cfg: Config, state_dir: Path) -> None:
        self.cfg = cfg
        self.clock = FakeClock()
        self.log = EventLog(clock=self.clock)
        self.dp = FakeDataplane(self.log, self.clock)
        self.sp = FakeSpeaker(self.log)
        self.health = StaticHealth()
        self.admin = AdminStore(state_dir, self.clock)
        self.passes: list[PassResult] = []
        self.rec = Reconciler(
            cfg, self.dp, self.sp, self.health, self.admin, self.clock, self.passes.append
        )

    async def start(self) -> PassResult:
        await self.dp.start(self.rec.wake)
        await self.sp.start(self.cfg, self.rec.wake)
        return await self.rec.reconcile_once()

    def speaker_sets(self) -> list[Event]:
        return self.log.of("speaker", "set_routes")

    def dataplane_kinds(self) -> list[str]:
        return [e.kind for e in self.log.of("dataplane")]

    def announced(self, peer: str = EBGP_PEER) -> set[str]:
        return {str(r.prefix.network_address) for r in self.sp.routes_for(peer)}


async def started_rig(state_dir: Path) -> Rig:
    """``web_and_api()`` with web's check up, after its first pass."""
    r = Rig(web_and_api(), state_dir)
    r.health.set(key("web", "tcp"), up())
    await r.start()
    return r
