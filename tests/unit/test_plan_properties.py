"""Properties of policy + plan + reconciler over random configs, health, drains and kernels.

Each example runs two passes on the fakes (an old config, some drift, a new config) and checks
after every pass:
- the fake kernel holds exactly the desired objects (minus those a foreign object blocks),
  and a fresh plan against it is empty;
- no foreign object was ever touched;
- no removal that takes a VIP away ran while the speaker still had a route for that VIP;
- every route the speaker has points at a VIP that is really there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgplb.admin import AdminState
from bgplb.bgp.fake import FakeSpeaker
from bgplb.clock import FakeClock
from bgplb.config import Config
from bgplb.dataplane.fake import FakeDataplane
from bgplb.eventlog import EventLog
from bgplb.health import resolve_checks
from bgplb.health.tracker import CheckKey, CheckState
from bgplb.model import (
    AddressSpec,
    DataplaneState,
    IPAddress,
    RemoveAddress,
    RemoveRealServer,
    RemoveVirtualService,
    RouteSet,
    VirtualServiceKey,
    action_vips,
)
from bgplb.plan import in_order, plan
from bgplb.policy import desired_state
from bgplb.reconciler import Reconciler

from .fixtures import (
    announce_service,
    config,
    down,
    ebgp_peer,
    ibgp_peer,
    ipvs_service,
    port,
    real_server,
    starting,
    tcp_check,
    up,
)

NAMES = ("web", "api", "dns", "eth0")  # "eth0" collides with an existing interface
VIPS = ("10.99.0.1", "10.99.0.2", "10.99.0.3", "2001:db8::1", "2001:db8::2")
REAL_SERVERS = ("10.1.0.1", "10.1.0.2", "2001:db8:1::1")
PORTS = ((80, "tcp"), (443, "tcp"), (53, "udp"))


@st.composite
def service(draw: st.DrawFn, name: str, vips: list[str]) -> dict[str, Any]:
    checks = [tcp_check("svc")] if draw(st.booleans()) else []
    extra: dict[str, Any] = {
        "checks": checks,
        "on_down": draw(st.sampled_from(["withdraw", "announce_degraded"])),
        "drain_delay": draw(st.sampled_from([None, 0.0, 30.0])),
    }
    if draw(st.booleans()):
        return announce_service(
            name, vips=vips, interface=draw(st.sampled_from(["lo", "eth0", "bond9"])), **extra
        )
    ports = draw(st.lists(st.sampled_from(PORTS), min_size=1, max_size=2, unique=True))
    addresses = draw(st.lists(st.sampled_from(REAL_SERVERS), max_size=3, unique=True))
    servers = [
        real_server(
            a,
            weight=draw(st.integers(0, 3)),
            port=draw(st.sampled_from([None, 8080])),
            checks=[tcp_check()] if draw(st.booleans()) else [],
        )
        for a in addresses
    ]
    return ipvs_service(
        name,
        vips=vips,
        ports=[
            port(
                p,
                proto,
                scheduler=draw(st.sampled_from(["wlc", "rr"])),
                persistence=draw(st.sampled_from([None, 300])),
            )
            for p, proto in ports
        ],
        real_servers=servers,
        unhealthy_real_server=draw(st.sampled_from(["weight0", "remove"])),
        min_healthy=draw(st.integers(1, 2)),
        **extra,
    )


@st.composite
def configs(draw: st.DrawFn) -> Config:
    names = draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True))
    pool = list(draw(st.permutations(VIPS)))
    services = []
    for name in names:
        n = draw(st.integers(1, 2))
        vips, pool = pool[:n], pool[n:]
        if not vips:
            break
        services.append(draw(service(name, vips)))
    peers = [ebgp_peer(), ibgp_peer(), ebgp_peer("2001:db8:ff::1", next_hop_v4="10.0.0.10")]
    return config(*services, peers=peers)


STATES = st.sampled_from([None, "up", "down", "starting"])


def health_for(draw: st.DrawFn, cfg: Config) -> dict[CheckKey, CheckState]:
    out: dict[CheckKey, CheckState] = {}
    for k in resolve_checks(cfg):
        s = draw(STATES)
        if s is not None:
            out[k] = {"up": up(), "down": down(), "starting": starting()}[s]
    return out


@st.composite
def admins(draw: st.DrawFn, now: float) -> AdminState:
    times = st.sampled_from([now, now - 10.0, -math.inf])
    drained = draw(st.lists(st.sampled_from(NAMES), max_size=2, unique=True))
    node = draw(st.one_of(st.none(), times))
    return AdminState(node, MappingProxyType({n: draw(times) for n in drained}))


@dataclass
class Inputs:
    health: dict[CheckKey, CheckState] = field(default_factory=dict)
    admin: AdminState = field(default_factory=AdminState)

    def snapshot(self) -> dict[CheckKey, CheckState]:
        return self.health

    @property
    def state(self) -> AdminState:
        return self.admin


def minus(a: DataplaneState, b: DataplaneState) -> DataplaneState:
    return DataplaneState(
        a.links - b.links,
        a.addresses - b.addresses,
        a.services - b.services,
        a.real_servers - b.real_servers,
    )


def vips_in(routes: RouteSet) -> set[IPAddress]:
    return {r.prefix.network_address for rs in routes.values() for r in rs}


async def check_pass(
    cfg: Config,
    inputs: Inputs,
    rec: Reconciler,
    dp: FakeDataplane,
    sp: FakeSpeaker,
    log: EventLog,
    now: float,
) -> None:
    start = len(log.events)
    before = dict(sp.wanted)
    rec.set_config(cfg)
    await rec.reconcile_once()

    assert dp.violations == []
    # the kernel holds what is desired, minus what foreign objects block; nothing left to do
    desired = desired_state(cfg, inputs.health, inputs.admin, now)
    observed = await dp.observe()
    again = plan(desired, observed, sp.advertised())
    assert again.actions == ()
    assert observed.owned == minus(desired.dataplane, again.skipped)

    # withdraw strictly before any removal that takes a VIP away
    kept = {a.address for a in desired.dataplane.addresses}
    current = vips_in(before)
    for ev in log.events[start:]:
        if ev.source == "speaker" and ev.kind == "set_routes":
            current = vips_in(ev.detail)
        elif isinstance(ev.detail, RemoveAddress):
            assert not (action_vips(ev.detail) & current), (ev, current)
        elif isinstance(ev.detail, RemoveVirtualService | RemoveRealServer):
            gone = action_vips(ev.detail) - kept
            assert not (gone & current), (ev, current)

    # every announced VIP is really there
    present = {a.address for a in observed.owned.addresses} | {
        a.address for a in observed.foreign_addresses
    }
    assert vips_in(sp.wanted) <= present


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_two_passes_with_drift_keep_every_invariant(data: st.DataObject) -> None:
    now = 1000.0
    cfg1 = data.draw(configs(), "cfg1")
    cfg2 = data.draw(configs(), "cfg2")
    in1 = Inputs(health_for(data.draw, cfg1), data.draw(admins(now), "admin1"))
    in2 = Inputs(health_for(data.draw, cfg2), data.draw(admins(now), "admin2"))
    foreign_link = data.draw(st.sampled_from([None, *NAMES[:3]]), "foreign_link")
    foreign_vip = data.draw(st.sampled_from([None, *VIPS]), "foreign_vip")
    foreign_vs = data.draw(st.sampled_from([None, *VIPS]), "foreign_vs")
    drift = data.draw(st.lists(st.integers(0, 50), max_size=3), "drift")

    async def scenario() -> None:
        clock = FakeClock(start=now)
        log = EventLog(clock=clock)
        dp = FakeDataplane(log, clock)
        sp = FakeSpeaker(log)
        if foreign_link:
            dp.add_foreign_link(foreign_link)
        if foreign_vip:
            dp.add_foreign_address(AddressSpec("lo", ipaddress.ip_address(foreign_vip)))
        if foreign_vs:
            dp.add_foreign_service(
                VirtualServiceKey(ipaddress.ip_address(foreign_vs), 80, "tcp")  # type: ignore[arg-type]
            )
        inputs = Inputs(in1.health, in1.admin)
        rec = Reconciler(cfg1, dp, sp, inputs, inputs, clock)
        await sp.start(cfg1, rec.wake)
        await check_pass(cfg1, inputs, rec, dp, sp, log, now)

        owned = dp.owned()
        addresses = in_order(owned.addresses)
        services = in_order(owned.service_keys())
        for i in drift:  # someone deletes some of our objects
            if addresses and i % 2 == 0:
                dp.delete_address(addresses[i % len(addresses)])
            elif services:
                dp.delete_service(services[i % len(services)])

        inputs.health, inputs.admin = in2.health, in2.admin
        await check_pass(cfg2, inputs, rec, dp, sp, log, now)

    asyncio.run(scenario())
