"""plan(): ordered, minimal actions; withdraw before removals; foreign objects untouched."""

from __future__ import annotations

from dataclasses import replace

from bgplb.admin import AdminState
from bgplb.model import (
    AddAddress,
    AddRealServer,
    AddressSpec,
    AddVirtualService,
    DataplaneState,
    EnsureLink,
    LinkSpec,
    ObservedDataplane,
    RemoveAddress,
    RemoveLink,
    UpdateRealServer,
    UpdateVirtualService,
)
from bgplb.plan import plan
from bgplb.policy import Desired, desired_state

from .fixtures import (
    EBGP_PEER,
    announce_service,
    config,
    down,
    ip,
    ipvs_service,
    key,
    port,
    real_server,
    tcp_check,
    up,
)

NOW = 1000.0


def desired(*services: dict[str, object], health: dict[object, object] | None = None) -> Desired:
    return desired_state(config(*services), health or {}, AdminState(), NOW)  # type: ignore[arg-type]


def owned(d: Desired, **kw: object) -> ObservedDataplane:
    return ObservedDataplane(owned=d.dataplane, interfaces=frozenset({"lo", "eth0"}), **kw)  # type: ignore[arg-type]


def kinds(actions: tuple[object, ...]) -> list[str]:
    return [type(a).__name__ for a in actions]


def test_from_nothing_in_dependency_order() -> None:
    d = desired(ipvs_service(ports=(80, 443)))
    p = plan(d, ObservedDataplane(), {})
    assert kinds(p.actions) == [
        "EnsureLink",
        "AddAddress",
        "AddVirtualService",
        "AddVirtualService",
        "AddRealServer",
        "AddRealServer",
    ]
    assert p.withdraw == {}
    assert p.conflicts == {}


def test_nothing_to_do_when_in_sync() -> None:
    d = desired(ipvs_service(), announce_service())
    p = plan(d, owned(d), d.routes)
    assert p.actions == ()
    assert p.withdraw == d.routes


def test_scheduler_change_is_an_update_not_a_re_add() -> None:
    before = desired(ipvs_service(ports=(port(80, scheduler="wlc"),)))
    after = desired(ipvs_service(ports=(port(80, scheduler="rr", persistence=60),)))
    p = plan(after, owned(before), before.routes)
    assert kinds(p.actions) == ["UpdateVirtualService"]
    (a,) = p.actions
    assert isinstance(a, UpdateVirtualService)
    assert (a.service.scheduler, a.service.persistence) == ("rr", 60)
    assert p.withdraw == before.routes


def test_weight_change_is_an_update() -> None:
    svc = ipvs_service(real_servers=[real_server("10.1.0.1", checks=[tcp_check()])])
    before = desired(svc, health={key("web", "tcp", "10.1.0.1:80"): up()})
    after = desired(svc, health={key("web", "tcp", "10.1.0.1:80"): down()})
    p = plan(after, owned(before), before.routes)
    assert kinds(p.actions) == ["UpdateRealServer"]
    (a,) = p.actions
    assert isinstance(a, UpdateRealServer)
    assert a.real_server.weight == 0


def test_removed_service_withdraws_first_and_removes_in_reverse_order() -> None:
    both = desired(ipvs_service("web"), ipvs_service("api", vips=("10.99.0.2",)))
    only_api = desired(ipvs_service("api", vips=("10.99.0.2",)))
    p = plan(only_api, owned(both), both.routes)
    assert kinds(p.actions) == [
        "RemoveRealServer",
        "RemoveVirtualService",
        "RemoveAddress",
        "RemoveLink",
    ]
    assert all(getattr(a, "link", LinkSpec("web")) == LinkSpec("web") for a in p.actions)
    assert {r.service for r in p.withdraw[EBGP_PEER]} == {"api"}
    assert {r.service for r in both.routes[EBGP_PEER]} == {"api", "web"}


def test_removing_one_real_server_of_an_announced_vip_does_not_withdraw() -> None:
    two = desired(ipvs_service(real_servers=[real_server("10.1.0.1"), real_server("10.1.0.2")]))
    one = desired(ipvs_service(real_servers=[real_server("10.1.0.1")]))
    p = plan(one, owned(two), two.routes)
    assert kinds(p.actions) == ["RemoveRealServer"]
    assert p.withdraw == two.routes


def test_removing_a_port_of_an_announced_vip_does_not_withdraw() -> None:
    two = desired(ipvs_service(ports=(80, 443)))
    one = desired(ipvs_service(ports=(80,)))
    p = plan(one, owned(two), two.routes)
    assert kinds(p.actions) == ["RemoveRealServer", "RemoveVirtualService"]
    assert p.withdraw == two.routes


def test_additions_come_before_removals_when_an_interface_changes() -> None:
    old = desired(announce_service("dns", interface="lo"))
    new = desired(announce_service("dns", interface="eth0"))
    p = plan(new, owned(old), old.routes)
    assert p.actions == (
        AddAddress(AddressSpec("eth0", ip("10.99.1.1"))),
        RemoveAddress(AddressSpec("lo", ip("10.99.1.1"))),
    )
    assert p.withdraw == {}  # the address goes away from one interface: withdraw first


def test_repair_of_a_deleted_vip_does_not_withdraw() -> None:
    d = desired(ipvs_service())
    dp = d.dataplane
    drifted = ObservedDataplane(owned=replace(dp, addresses=frozenset()))
    p = plan(d, drifted, d.routes)
    assert kinds(p.actions) == ["AddAddress"]
    assert p.withdraw == d.routes


def test_foreign_link_is_a_conflict_and_never_touched() -> None:
    d = desired(ipvs_service("web"), ipvs_service("api", vips=("10.99.0.2",)))
    p = plan(d, ObservedDataplane(foreign_links=frozenset({"web"})), {})
    assert p.conflicts == {"web": "link web exists and is not ours"}
    assert all("10.99.0.1" not in repr(a) and "'web'" not in repr(a) for a in p.actions)
    assert EnsureLink(LinkSpec("api")) in p.actions
    assert LinkSpec("web") in p.skipped.links
    assert {str(a.address) for a in p.skipped.addresses} == {"10.99.0.1"}
    assert {s.key.port for s in p.skipped.services} == {80}
    assert len(p.skipped.real_servers) == 1


def test_foreign_ipvs_service_is_a_conflict() -> None:
    d = desired(ipvs_service(ports=(80, 443)))
    foreign = frozenset(s.key for s in d.dataplane.services if s.key.port == 443)
    p = plan(d, ObservedDataplane(foreign_services=foreign), {})
    assert "443" in p.conflicts["web"]
    assert not any(isinstance(a, AddVirtualService | AddRealServer | AddAddress) for a in p.actions)
    assert kinds(p.actions) == ["EnsureLink"]


def test_foreign_address_with_the_vip_is_a_conflict_in_ipvs_mode() -> None:
    d = desired(ipvs_service())
    foreign = frozenset({AddressSpec("lo", ip("10.99.0.1"))})
    p = plan(d, ObservedDataplane(foreign_addresses=foreign), {})
    assert p.conflicts["web"] == "address 10.99.0.1 is already on lo (not ours)"
    assert kinds(p.actions) == ["EnsureLink"]


def test_announce_mode_accepts_a_vip_someone_else_configured() -> None:
    d = desired(announce_service("dns", interface="lo"))
    foreign = frozenset({AddressSpec("lo", ip("10.99.1.1"))})
    p = plan(d, ObservedDataplane(foreign_addresses=foreign, interfaces=frozenset({"lo"})), {})
    assert p.actions == ()
    assert p.conflicts == {}


def test_announce_mode_missing_interface() -> None:
    d = desired(announce_service("dns", interface="bond7"))
    p = plan(d, ObservedDataplane(interfaces=frozenset({"lo"})), {})
    assert p.actions == ()
    assert p.conflicts == {"dns": "interface bond7 does not exist"}


def test_only_owned_objects_are_removed() -> None:
    d = desired()
    observed = ObservedDataplane(
        owned=DataplaneState(links=frozenset({LinkSpec("old")})),
        foreign_links=frozenset({"other"}),
        foreign_addresses=frozenset({AddressSpec("lo", ip("10.99.9.9"))}),
    )
    assert plan(d, observed, {}).actions == (RemoveLink(LinkSpec("old")),)


def test_owned_objects_of_a_conflicting_vip_are_kept() -> None:
    d = desired(ipvs_service())
    observed = owned(d, foreign_links=frozenset({"web"}))  # appeared after we made ours
    p = plan(d, observed, d.routes)
    assert p.actions == ()
    assert p.conflicts == {}


def test_mixed_address_families_are_ordered_v4_first() -> None:
    d = desired(ipvs_service(vips=("2001:db8::1", "10.99.0.1")))
    p = plan(d, ObservedDataplane(), {})
    added = [a.address.address for a in p.actions if isinstance(a, AddAddress)]
    assert added == [ip("10.99.0.1"), ip("2001:db8::1")]
