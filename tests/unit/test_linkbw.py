"""UCMP (services[].link_bandwidth): capacity, quantization, hold-down, zero -> withdraw,
AS_TRANS, the ExaBGP text, the config's errors, and the reconciler with a FakeClock."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path
from typing import Any

import pytest

from bgplb.admin import AdminState
from bgplb.bgp import commands
from bgplb.config import ConfigError, parse_config
from bgplb.config.bandwidth import quantize
from bgplb.linkbw import AS_TRANS, BandwidthHold, bandwidth_community, capacities
from bgplb.model import Decision, Reason, Route
from bgplb.policy import desired_state

from .fixtures import (
    EBGP_PEER,
    Rig,
    announce_service,
    config,
    down,
    ebgp_peer,
    ip,
    ipvs_service,
    key,
    node,
    real_server,
    tcp_check,
    up,
)

NOW = 1000.0
V4 = "10.99.0.1"
V6 = "2001:db8::1"


def servers(*weights: int, prefix: str = "10.1.0.") -> list[dict[str, Any]]:
    return [
        real_server(f"{prefix}{i + 1}", weight=w, checks=[tcp_check()])
        for i, w in enumerate(weights)
    ]


def pool(*weights: int, v6: tuple[int, ...] = (), lb: Any = "auto", **kw: Any) -> dict[str, Any]:
    rs = servers(*weights) + servers(*v6, prefix="2001:db8:1::")
    vips = (V4, V6) if v6 else (V4,)
    return ipvs_service("web", vips=vips, real_servers=rs, link_bandwidth=lb, **kw)


def health(svc: dict[str, Any], healthy: set[str]) -> dict[Any, Any]:
    """Every real server of ``svc`` up if its address is in ``healthy``, else down."""
    out = {}
    for rs in svc["real_servers"]:
        addr = rs["address"]
        target = f"[{addr}]:80" if ":" in addr else f"{addr}:80"
        out[key("web", "tcp", target)] = up() if addr in healthy else down()
    return out


def extended(route: Route) -> tuple[str, ...]:
    return route.attributes.extended_communities


def routes_to_peer(cfg: Any, states: Any, caps: Any = None) -> dict[str, Route]:
    d = desired_state(cfg, states, AdminState(), NOW, caps)
    return {str(r.prefix.network_address): r for r in d.routes.get(EBGP_PEER, frozenset())}


# --------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("capacity", "expected"),
    [(0, 0), (1, 1), (2, 2), (31, 31), (32, 32), (33, 34), (63, 64), (100, 100), (101, 100),
     (103, 104), (1000, 992), (1010, 1024), (65535 * 4, 262144)],
)  # fmt: skip
def test_quantize_keeps_five_significant_bits(capacity: int, expected: int) -> None:
    assert quantize(capacity) == expected
    if capacity:
        assert abs(quantize(capacity) - capacity) / capacity <= 1 / 32


def test_quantize_ignores_a_small_change_of_a_large_capacity() -> None:
    assert quantize(985) == quantize(1000) == quantize(1007) == 992
    assert quantize(4) != quantize(2)


def test_as_trans_for_a_four_byte_local_as() -> None:
    assert bandwidth_community(65001, 125000) == "bandwidth:65001:125000"
    assert bandwidth_community(65535, 1) == "bandwidth:65535:1"
    assert bandwidth_community(65536, 1) == f"bandwidth:{AS_TRANS}:1"
    assert bandwidth_community(4200000000, 250000) == "bandwidth:23456:250000"


def test_rendered_in_exabgps_named_form_and_what_it_packs_to() -> None:
    """ExaBGP packs bandwidth:AS:N as 0x4004 + !Hf (the check in shared/docs: 1 Gbps from
    65001 = 0x4004FDE94CEE6B28)."""
    from exabgp.configuration.static.parser import _extended_community

    community = bandwidth_community(65001, 125_000_000)
    packed = _extended_community(community).pack()
    assert packed.hex().upper() == "4004FDE94CEE6B28"
    assert struct.unpack("!Hf", packed[2:]) == (65001, 125_000_000.0)
    svc = pool(4, 2)
    cfg = config(svc)
    route = routes_to_peer(cfg, health(svc, {"10.1.0.1", "10.1.0.2"}))[V4]
    text = commands.announce(EBGP_PEER, route)
    assert text.endswith("extended-community [bandwidth:65001:750000]")  # 6 x 125000


# --------------------------------------------------------------------------- policy


def test_capacity_is_the_sum_of_healthy_weights_per_family() -> None:
    svc = pool(4, 2, 1, v6=(3, 3))
    cfg = config(svc, peers=[ebgp_peer(next_hop_v6="2001:db8::10")])
    states = health(svc, {"10.1.0.1", "10.1.0.2", "2001:db8:1::1"})
    assert capacities(cfg, states) == {("web", ip(V4)): 6, ("web", ip(V6)): 3}
    routes = routes_to_peer(cfg, states)
    assert extended(routes[V4]) == ("bandwidth:65001:750000",)
    assert extended(routes[V6]) == ("bandwidth:65001:375000",)


def test_a_family_without_healthy_capacity_is_withdrawn_the_other_stays() -> None:
    svc = pool(4, 2, v6=(3,))
    cfg = config(svc, peers=[ebgp_peer(next_hop_v6="2001:db8::10")])
    routes = routes_to_peer(cfg, health(svc, {"10.1.0.1"}))
    assert set(routes) == {V4}  # no v6 server healthy: the v6 VIP is not announced


def test_zero_capacity_withdraws_the_service_with_its_own_reason() -> None:
    """Healthy real servers of weight 0 pass min_healthy=... no: they count for nothing; a
    service whose healthy servers all weigh 0 announces no bandwidth 0 (weight 1 at FRR)."""
    svc = pool(0, 0, min_healthy=1)
    svc["real_servers"].append(real_server("10.1.0.9", weight=5, checks=[tcp_check()]))
    cfg = config(svc)
    states = health(svc, {"10.1.0.1", "10.1.0.2", "10.1.0.9"})
    assert extended(routes_to_peer(cfg, states)[V4]) == ("bandwidth:65001:625000",)
    d = desired_state(cfg, states, AdminState(), NOW, {("web", ip(V4)): 0})
    assert d.routes.get(EBGP_PEER, frozenset()) == frozenset()
    assert d.services["web"].decision is Decision.WITHDRAW
    assert d.services["web"].reason is Reason.NO_CAPACITY


def test_local_backend_and_announce_mode_use_the_configured_capacity() -> None:
    cfg = config(
        ipvs_service("web", vips=(V4,), link_bandwidth={"capacity": 3, "unit": 1000}),
        announce_service("dns", vips=("10.99.1.1",), link_bandwidth="auto"),
        peers=[ebgp_peer()],
        local_as=4200000000,
        backend_v6="2001:db8::10",
    )
    routes = routes_to_peer(cfg, {})
    assert extended(routes[V4]) == ("bandwidth:23456:3000",)
    assert extended(routes["10.99.1.1"]) == ("bandwidth:23456:125000",)


def test_draining_keeps_the_community_next_to_the_drain_attributes() -> None:
    from types import MappingProxyType

    svc = pool(2)
    cfg = config(svc)
    admin = AdminState(None, MappingProxyType({"web": NOW}))
    d = desired_state(cfg, health(svc, {"10.1.0.1"}), admin, NOW)
    (route,) = d.routes[EBGP_PEER]
    assert route.attributes.communities == ("65535:0",)
    assert extended(route) == ("bandwidth:65001:250000",)


def test_without_link_bandwidth_nothing_changes() -> None:
    svc = pool(4, 2, lb=None)
    cfg = config(svc)
    assert capacities(cfg, {}) == {}
    assert extended(routes_to_peer(cfg, health(svc, {"10.1.0.1"}))[V4]) == ()


# --------------------------------------------------------------------------- hold-down


def test_hold_down_bounds_the_changes_to_one_per_period() -> None:
    cfg = config(pool(4, 2, lb={"hold_down": 10}))
    k = ("web", ip(V4))
    hold = BandwidthHold()
    assert hold.update(cfg, {k: 6}, 0.0) == {k: 6}  # the first value: at once
    assert hold.next_change is None
    assert hold.update(cfg, {k: 4}, 1.0) == {k: 4}  # no change for 10 s before: at once
    assert hold.update(cfg, {k: 6}, 2.0) == {k: 4}  # flaps back within the hold: waits
    assert hold.next_change == 11.0
    assert hold.update(cfg, {k: 4}, 3.0) == {k: 4}  # and back: nothing to send
    assert hold.next_change is None
    assert hold.update(cfg, {k: 6}, 5.0) == {k: 4}
    assert hold.update(cfg, {k: 6}, 11.0) == {k: 6}  # due: the value wanted now
    assert hold.next_change is None


def test_the_hold_says_per_vip_what_is_wanted_held_and_due() -> None:
    from bgplb.linkbw import VipBandwidth

    cfg = config(pool(4, 2, v6=(3,), lb={"hold_down": 10}))
    k4, k6 = ("web", ip(V4)), ("web", ip(V6))
    hold = BandwidthHold()
    hold.update(cfg, {k4: 6, k6: 3}, 0.0)
    assert hold.vips == {k4: VipBandwidth(6, 6, None), k6: VipBandwidth(3, 3, None)}
    hold.update(cfg, {k4: 4, k6: 3}, 1.0)
    hold.update(cfg, {k4: 2, k6: 0}, 4.0)  # v4 waits until 11; zero is taken at once
    assert hold.vips == {k4: VipBandwidth(2, 4, 11.0), k6: VipBandwidth(0, 0, None)}
    hold.update(cfg, {k4: 2, k6: 0}, 11.0)
    assert hold.vips[k4] == VipBandwidth(2, 2, None)


def test_zero_and_the_way_back_from_zero_never_wait() -> None:
    cfg = config(pool(4, 2, lb={"hold_down": 10}))
    k = ("web", ip(V4))
    hold = BandwidthHold()
    hold.update(cfg, {k: 6}, 0.0)
    assert hold.update(cfg, {k: 0}, 0.5) == {k: 0}
    assert hold.update(cfg, {k: 2}, 0.6) == {k: 2}
    assert hold.update(cfg, {k: 6}, 0.7) == {k: 2}  # a plain change waits again
    assert hold.next_change == pytest.approx(10.6)


def test_a_vip_that_leaves_is_forgotten() -> None:
    cfg = config(pool(4, lb={"hold_down": 10}))
    k = ("web", ip(V4))
    hold = BandwidthHold()
    hold.update(cfg, {k: 4}, 0.0)
    assert hold.update(cfg, {}, 1.0) == {}
    assert hold.update(cfg, {k: 2}, 2.0) == {k: 2}  # new again: at once


async def test_reconciler_holds_a_flapping_server_then_follows(tmp_path: Path) -> None:
    svc = pool(4, 2, lb={"hold_down": 10})
    r = Rig(config(svc), tmp_path)
    for k, s in health(svc, {"10.1.0.1", "10.1.0.2"}).items():
        r.health.set(k, s)

    def sent() -> tuple[str, ...]:
        (route,) = r.sp.routes_for(EBGP_PEER)
        return extended(route)

    await r.start()
    assert sent() == ("bandwidth:65001:750000",)
    t2 = key("web", "tcp", "10.1.0.2:80")
    r.health.set(t2, down())
    await r.rec.reconcile_once()
    assert sent() == ("bandwidth:65001:500000",)  # the first change: at once
    for _ in range(4):  # the server flaps within the hold-down: the route stays as sent
        await r.clock.advance(1.0)
        r.health.set(t2, up())
        await r.rec.reconcile_once()
        assert sent() == ("bandwidth:65001:500000",)
        r.health.set(t2, down())
        await r.rec.reconcile_once()
        assert sent() == ("bandwidth:65001:500000",)
    r.health.set(t2, up())
    await r.clock.advance(5.9)  # 9.9 s after the change: still held
    await r.rec.reconcile_once()
    assert sent() == ("bandwidth:65001:500000",)
    await r.clock.advance(0.1)  # 10 s after the change: the value wanted now is sent
    await r.rec.reconcile_once()
    assert sent() == ("bandwidth:65001:750000",)


async def test_reconciler_wakes_when_the_hold_down_ends(tmp_path: Path) -> None:
    svc = pool(4, 2, lb={"hold_down": 10})
    r = Rig(config(svc), tmp_path)
    for k, s in health(svc, {"10.1.0.1", "10.1.0.2"}).items():
        r.health.set(k, s)
    await r.start()
    t2 = key("web", "tcp", "10.1.0.2:80")
    r.health.set(t2, down())
    await r.rec.reconcile_once()
    r.health.set(t2, up())
    await r.rec.reconcile_once()
    assert r.rec._next_change == pytest.approx(r.clock.now() + 10)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("svc", "path", "why"),
    [
        (pool(4, lb="on"), "services[0].link_bandwidth", "not a link_bandwidth setting"),
        (pool(4, lb={"capacity": 2}), "services[0].link_bandwidth.capacity", "without real"),
        (pool(4, lb={"unit": 2**31}), "services[0].link_bandwidth.unit", "more than"),
        (pool(4, lb={"hold_down": -1}), "services[0].link_bandwidth.hold_down", ""),
        (pool(4, lb={"speed": 1}), "services[0].link_bandwidth.speed", ""),
        (
            pool(4, attributes={"healthy": {"extended_communities": ["bandwidth:1:2"]}}),
            "services[0].attributes.healthy.extended_communities[0]",
            "two",
        ),
    ],
)
def test_config_errors_name_the_field(svc: dict[str, Any], path: str, why: str) -> None:
    data = {"node": node(), "peers": [ebgp_peer()], "services": [svc]}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert any(e.path == path and why in e.message for e in err.value.errors), err.value.errors


def test_auto_is_every_default() -> None:
    lb = config(pool(4)).services[0].link_bandwidth
    assert lb is not None
    assert (lb.capacity, lb.unit, lb.hold_down) == (None, 125_000, 10.0)


# --------------------------------------------------------------------------- metric


def test_metric_follows_what_was_advertised() -> None:
    from prometheus_client import generate_latest

    from bgplb.metrics import Metrics
    from bgplb.model import RouteAttributes

    m = Metrics()
    bw = RouteAttributes(extended_communities=("bandwidth:65001:750000",))
    low = RouteAttributes(extended_communities=("bandwidth:65001:250000",))
    web4 = Route(ipaddress.ip_network(V4), None, bw, service="web")
    web6 = Route(ipaddress.ip_network(V6), None, low, service="web")
    plain = Route(ipaddress.ip_network("10.99.0.2/32"), None, service="api")
    m.set_routes({"10.0.0.1": frozenset({web4, web6, plain}), "10.0.0.2": frozenset({web4})})
    text = generate_latest(m.registry).decode()
    assert 'bgplb_link_bandwidth_bytes_per_second{service="web",vip="10.99.0.1"} 750000.0' in text
    assert 'bgplb_link_bandwidth_bytes_per_second{service="web",vip="2001:db8::1"} 250000.0' in text
    assert 'bgplb_link_bandwidth_bytes_per_second{service="api"' not in text
    m.set_routes({"10.0.0.1": frozenset({web4}), "10.0.0.2": frozenset()})  # v6 withdrawn
    text = generate_latest(m.registry).decode()
    assert 'vip="2001:db8::1"} 250000.0' not in text
    m.set_routes({"10.0.0.1": frozenset(), "10.0.0.2": frozenset()})
    assert "bgplb_link_bandwidth_bytes_per_second{" not in generate_latest(m.registry).decode()
