"""policy.desired_state / announceable: pure decisions, dataplane objects and routes."""

from __future__ import annotations

import math
from types import MappingProxyType

import pytest

from bgplb.admin import AdminState
from bgplb.model import (
    AddressSpec,
    DataplaneState,
    Decision,
    ForwardMethod,
    LinkSpec,
    ObservedDataplane,
    Protocol,
    RealServerKey,
    RealServerSpec,
    Reason,
    Route,
    RouteAttributes,
    VirtualServiceKey,
    VirtualServiceSpec,
)
from bgplb.policy import announceable, desired_state
from bgplb.routeset import same_routes

from .fixtures import (
    EBGP_PEER,
    IBGP_PEER,
    LOCAL_AS,
    announce_service,
    config,
    down,
    ebgp_peer,
    ibgp_peer,
    ip,
    ipvs_service,
    key,
    net,
    port,
    real_server,
    starting,
    tcp_check,
    up,
)

NOW = 1000.0
NO_ADMIN = AdminState()
GSHUT = "65535:0"


def drained(*services: str, at: float = NOW, node: bool = False) -> AdminState:
    return AdminState(at if node else None, MappingProxyType(dict.fromkeys(services, at)))


def vs(vip: str, p: int, proto: Protocol = Protocol.TCP) -> VirtualServiceKey:
    return VirtualServiceKey(ip(vip), p, proto)


def test_ipvs_service_default_backend_objects() -> None:
    cfg = config(
        ipvs_service(
            "web",
            vips=("10.99.0.1", "2001:db8::1"),
            ports=(port(80, target_port=8080, scheduler="rr", persistence=300), port(53, "udp")),
        )
    )
    d = desired_state(cfg, {}, NO_ADMIN, NOW)
    assert d.dataplane.links == {LinkSpec("web")}
    assert d.dataplane.addresses == {
        AddressSpec("web", ip("10.99.0.1")),
        AddressSpec("web", ip("2001:db8::1")),
    }
    k80 = vs("10.99.0.1", 80)
    k53 = vs("10.99.0.1", 53, Protocol.UDP)
    k80v6 = vs("2001:db8::1", 80)
    assert VirtualServiceSpec(k80, "rr", 300) in d.dataplane.services
    assert VirtualServiceSpec(k53, "wlc", None) in d.dataplane.services
    assert len(d.dataplane.services) == 4
    rs = {r.key: r for r in d.dataplane.real_servers}
    assert rs[RealServerKey(k80, ip("10.0.0.10"), 8080)] == RealServerSpec(
        RealServerKey(k80, ip("10.0.0.10"), 8080), 1, ForwardMethod.MASQ
    )
    assert RealServerKey(k53, ip("10.0.0.10"), 53) in rs
    assert RealServerKey(k80v6, ip("fd00::10"), 8080) in rs  # node.backend_v6
    assert len(rs) == 4
    assert d.services["web"].decision is Decision.ANNOUNCE
    assert d.services["web"].reason is Reason.HEALTHY


def test_announce_mode_only_the_address() -> None:
    cfg = config(announce_service("dns", vips=("10.99.1.1",), interface="eth0"))
    d = desired_state(cfg, {}, NO_ADMIN, NOW)
    assert d.dataplane == DataplaneState(
        addresses=frozenset({AddressSpec("eth0", ip("10.99.1.1"))})
    )
    assert d.vips[0].shared


def test_routes_next_hop_per_family() -> None:
    peers = (
        ebgp_peer("10.0.0.1"),
        ebgp_peer("10.0.0.3", next_hop_v6="2001:db8:ff::1"),
        ebgp_peer("2001:db8:ff::2", next_hop_v4="10.0.0.99"),
    )
    cfg = config(ipvs_service("web", vips=("10.99.0.1", "2001:db8::1")), peers=peers)
    r = desired_state(cfg, {}, NO_ADMIN, NOW).routes
    v4, v6 = net("10.99.0.1/32"), net("2001:db8::1/128")
    assert r["10.0.0.1"] == {Route(v4, None)}  # v6 VIP has no next hop toward a v4 session
    assert r["10.0.0.3"] == {Route(v4, None), Route(v6, ip("2001:db8:ff::1"))}
    assert r["2001:db8:ff::2"] == {Route(v4, ip("10.0.0.99")), Route(v6, None)}
    assert all(x.service == "web" for rs in r.values() for x in rs)


def test_configured_healthy_attributes() -> None:
    svc = ipvs_service(attributes={"healthy": {"communities": ["65001:100"], "med": 10}})
    r = desired_state(config(svc), {}, NO_ADMIN, NOW).routes
    (route,) = r[EBGP_PEER]
    assert route.attributes == RouteAttributes(communities=("65001:100",), med=10)


def test_failed_service_check_withdraws_but_keeps_the_dataplane() -> None:
    cfg = config(ipvs_service(checks=[tcp_check("tcp"), tcp_check("other", port=81)]))
    healthy = desired_state(
        cfg, {key("web", "tcp"): up(), key("web", "other"): up()}, NO_ADMIN, NOW
    )
    failed = desired_state(
        cfg, {key("web", "tcp"): down(), key("web", "other"): up()}, NO_ADMIN, NOW
    )
    assert healthy.services["web"].decision is Decision.ANNOUNCE
    assert failed.services["web"].decision is Decision.WITHDRAW
    assert failed.services["web"].reason is Reason.CHECK_FAILED
    assert failed.services["web"].detail == "tcp"
    assert failed.routes == {}
    assert failed.dataplane == healthy.dataplane


@pytest.mark.parametrize("state", [None, starting()])
def test_check_never_up_is_starting(state: object) -> None:
    cfg = config(ipvs_service(checks=[tcp_check()]))
    snap = {key("web", "tcp"): state} if state is not None else {}
    d = desired_state(cfg, snap, NO_ADMIN, NOW)  # type: ignore[arg-type]
    assert (d.services["web"].decision, d.services["web"].reason) == (
        Decision.WITHDRAW,
        Reason.STARTING,
    )
    assert d.services["web"].detail == "tcp"


def _pool(**kw: object) -> dict[str, object]:
    return ipvs_service(
        ports=(80,),
        real_servers=[
            real_server("10.1.0.1", weight=5, checks=[tcp_check()]),
            real_server("10.1.0.2", port=8080, checks=[tcp_check()]),
            real_server("2001:db8:1::1", checks=[tcp_check()]),
        ],
        **kw,
    )


def test_real_server_weights_follow_their_checks() -> None:
    cfg = config(_pool())
    snap = {
        key("web", "tcp", "10.1.0.1:80"): down(),
        key("web", "tcp", "10.1.0.2:8080"): up(),
        key("web", "tcp", "[2001:db8:1::1]:80"): up(),
    }
    d = desired_state(cfg, snap, NO_ADMIN, NOW)
    weights = {(str(r.key.address), r.key.port): r.weight for r in d.dataplane.real_servers}
    # v4 VIP: only the v4 real servers; the v6 one is not used (no v6 VIP).
    assert weights == {("10.1.0.1", 80): 0, ("10.1.0.2", 8080): 1}
    assert d.services["web"].decision is Decision.ANNOUNCE  # 1 up >= min_healthy 1


def test_unhealthy_real_server_removed_in_remove_mode() -> None:
    cfg = config(_pool(unhealthy_real_server="remove"))
    snap = {key("web", "tcp", "10.1.0.1:80"): down(), key("web", "tcp", "10.1.0.2:8080"): up()}
    d = desired_state(cfg, snap, NO_ADMIN, NOW)
    assert {str(r.key.address) for r in d.dataplane.real_servers} == {"10.1.0.2"}


def test_below_min_healthy() -> None:
    cfg = config(_pool(min_healthy=2))
    snap = {key("web", "tcp", "10.1.0.1:80"): down(), key("web", "tcp", "10.1.0.2:8080"): up()}
    d = desired_state(cfg, snap, NO_ADMIN, NOW)
    assert d.services["web"].decision is Decision.WITHDRAW
    assert d.services["web"].reason is Reason.BELOW_MIN_HEALTHY
    assert "1/3" in d.services["web"].detail
    fresh = desired_state(cfg, {}, NO_ADMIN, NOW)
    assert fresh.services["web"].reason is Reason.STARTING


def _degraded_cfg() -> object:
    return config(
        ipvs_service(checks=[tcp_check()], on_down="announce_degraded"),
        peers=(ebgp_peer(), ibgp_peer()),
    )


def test_announce_degraded_attributes_per_peer_type() -> None:
    d = desired_state(_degraded_cfg(), {key("web", "tcp"): down()}, NO_ADMIN, NOW)  # type: ignore[arg-type]
    assert d.services["web"].decision is Decision.DEGRADED
    assert d.services["web"].reason is Reason.CHECK_FAILED
    (e,) = d.routes[EBGP_PEER]
    (i,) = d.routes[IBGP_PEER]
    assert e.attributes == RouteAttributes(as_path=(LOCAL_AS,) * 3)
    assert i.attributes == RouteAttributes(local_pref=50)


def test_starting_is_not_announced_even_when_degraded_is_allowed() -> None:
    d = desired_state(_degraded_cfg(), {}, NO_ADMIN, NOW)  # type: ignore[arg-type]
    assert d.services["web"].decision is Decision.WITHDRAW


def test_drain_attributes_then_withdraw_after_delay() -> None:
    cfg = config(ipvs_service(), peers=(ebgp_peer(), ibgp_peer()), drain_delay=5.0)
    admin = drained("web", at=NOW)
    d = desired_state(cfg, {}, admin, NOW + 4.9)
    assert (d.services["web"].decision, d.services["web"].reason) == (
        Decision.DRAINING,
        Reason.DRAINING,
    )
    (e,) = d.routes[EBGP_PEER]
    (i,) = d.routes[IBGP_PEER]
    assert e.attributes == RouteAttributes(communities=(GSHUT,), as_path=(LOCAL_AS,) * 3)
    assert i.attributes == RouteAttributes(communities=(GSHUT,), local_pref=0)
    assert d.next_change == NOW + 5.0
    later = desired_state(cfg, {}, admin, NOW + 5.0)
    assert later.next_change is None
    assert (later.services["web"].decision, later.services["web"].reason) == (
        Decision.WITHDRAW,
        Reason.DRAINING,
    )
    assert later.routes == {}
    assert later.dataplane == d.dataplane  # a drain does not tear anything down


def test_service_drain_delay_overrides_the_node_one() -> None:
    cfg = config(ipvs_service(drain_delay=30.0), drain_delay=5.0)
    d = desired_state(cfg, {}, drained("web", at=NOW), NOW + 10)
    assert d.services["web"].decision is Decision.DRAINING


def test_node_drain_applies_to_every_service() -> None:
    cfg = config(ipvs_service("web"), announce_service("dns"))
    d = desired_state(cfg, {}, drained(node=True, at=NOW), NOW + 1)
    for name in ("web", "dns"):
        assert (d.services[name].decision, d.services[name].reason) == (
            Decision.DRAINING,
            Reason.NODE_DRAINING,
        )


def test_a_drain_loaded_from_disk_is_already_over() -> None:
    cfg = config(ipvs_service())
    d = desired_state(cfg, {}, drained("web", at=-math.inf), NOW)
    assert d.services["web"].decision is Decision.WITHDRAW
    # the earlier of node/service drain wins: a fresh node drain doesn't re-announce it
    both = AdminState(NOW, MappingProxyType({"web": -math.inf}))
    assert desired_state(cfg, {}, both, NOW).services["web"].decision is Decision.WITHDRAW


def test_drain_beats_health_and_does_not_announce_a_failed_service() -> None:
    cfg = config(ipvs_service(checks=[tcp_check()]))
    d = desired_state(cfg, {key("web", "tcp"): down()}, drained("web"), NOW)
    assert (d.services["web"].decision, d.services["web"].reason) == (
        Decision.WITHDRAW,
        Reason.DRAINING,
    )
    assert "check_failed" in d.services["web"].detail


# --------------------------------------------------------------------------- announceable


def _observed(desired_state_: DataplaneState, **kw: object) -> ObservedDataplane:
    return ObservedDataplane(owned=desired_state_, **kw)  # type: ignore[arg-type]


def test_announceable_keeps_everything_when_present() -> None:
    d = desired_state(config(ipvs_service()), {}, NO_ADMIN, NOW)
    routes, decisions = announceable(d, _observed(d.dataplane))
    assert same_routes(routes, d.routes)
    assert decisions == d.services


def test_announceable_vip_missing() -> None:
    d = desired_state(config(ipvs_service()), {}, NO_ADMIN, NOW)
    dp = d.dataplane
    observed = _observed(DataplaneState(dp.links, frozenset(), dp.services, dp.real_servers))
    routes, decisions = announceable(d, observed)
    assert routes == {}
    assert (decisions["web"].decision, decisions["web"].reason) == (
        Decision.WITHDRAW,
        Reason.VIP_MISSING,
    )


def test_announceable_ipvs_missing() -> None:
    d = desired_state(config(ipvs_service(ports=(80, 443))), {}, NO_ADMIN, NOW)
    dp = d.dataplane
    some = frozenset(s for s in dp.services if s.key.port == 80)
    routes, decisions = announceable(
        d, _observed(DataplaneState(dp.links, dp.addresses, some, dp.real_servers))
    )
    assert routes == {}
    assert decisions["web"].reason is Reason.IPVS_MISSING
    assert "443" in decisions["web"].detail


def test_announceable_one_of_two_vips_missing_keeps_the_other() -> None:
    d = desired_state(config(ipvs_service(vips=("10.99.0.1", "10.99.0.2"))), {}, NO_ADMIN, NOW)
    dp = d.dataplane
    one = frozenset(a for a in dp.addresses if str(a.address) == "10.99.0.1")
    routes, decisions = announceable(
        d, _observed(DataplaneState(dp.links, one, dp.services, dp.real_servers))
    )
    assert {r.prefix for r in routes[EBGP_PEER]} == {net("10.99.0.1/32")}
    assert decisions["web"].decision is Decision.ANNOUNCE
    assert decisions["web"].reason is Reason.VIP_MISSING


def test_announce_mode_vip_configured_by_someone_else_counts() -> None:
    d = desired_state(config(announce_service("dns", interface="lo")), {}, NO_ADMIN, NOW)
    foreign = frozenset({AddressSpec("lo", ip("10.99.1.1"))})
    routes, decisions = announceable(d, _observed(DataplaneState(), foreign_addresses=foreign))
    assert same_routes(routes, d.routes)
    assert routes != {}
    assert decisions["dns"].decision is Decision.ANNOUNCE


def test_announceable_conflict_reason() -> None:
    d = desired_state(config(ipvs_service()), {}, NO_ADMIN, NOW)
    routes, decisions = announceable(
        d, _observed(DataplaneState()), {"web": "link web is not ours"}
    )
    assert routes == {}
    assert decisions["web"].reason is Reason.DATAPLANE_CONFLICT
    assert decisions["web"].detail == "link web is not ours"


def test_withdrawn_service_keeps_its_health_reason_when_vip_missing() -> None:
    cfg = config(ipvs_service(checks=[tcp_check()]))
    d = desired_state(cfg, {key("web", "tcp"): down()}, NO_ADMIN, NOW)
    _, decisions = announceable(d, _observed(DataplaneState()))
    assert decisions["web"].reason is Reason.CHECK_FAILED


def test_pool_services_carry_the_mh_flags() -> None:
    cfg = config(
        ipvs_service(
            "pool",
            vips=("10.9.0.1",),
            preserve_connections=True,
            real_servers=[real_server("10.1.0.1", forward="dr")],
        ),
        ipvs_service("plain", vips=("10.9.0.2",)),
    )
    d = desired_state(cfg, {}, NO_ADMIN, NOW)
    assert VirtualServiceSpec(vs("10.9.0.1", 80), "mh", None, True, True) in d.dataplane.services
    assert VirtualServiceSpec(vs("10.9.0.2", 80), "wlc") in d.dataplane.services
