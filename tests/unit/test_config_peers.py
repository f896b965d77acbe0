"""``services[].peers`` (issue 14, item 2): which peers a service is announced to. The errors
an operator sees (field path, reason), through parse_config and the real check-config CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bgplb.cli import main
from bgplb.config import ConfigError, parse_config

NODE = {"router_id": "10.0.0.10", "local_as": 65001, "backend_v6": "fd00::10"}
R1 = {"name": "r1", "address": "10.0.0.1", "asn": 65000}
R2 = {"name": "r2", "address": "10.0.1.1", "asn": 65000}
R6 = {"name": "r6", "address": "fd00:1::1", "asn": 65000}


def svc(name: str = "web", vips: tuple[str, ...] = ("10.99.0.1",), **kw: Any) -> dict[str, Any]:
    return {"name": name, "mode": "announce", "interface": "lo", "vips": list(vips), **kw}


def raw(*services: dict[str, Any], peers: tuple[dict[str, Any], ...] = (R1, R2)) -> dict[str, Any]:
    return {"node": NODE, "peers": list(peers), "services": list(services)}


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(e) for e in info.value.errors]


def test_default_is_every_peer_and_a_list_selects_by_name() -> None:
    cfg = parse_config(raw(svc("a"), svc("b", ("10.99.0.2",), peers=["r2"])))
    a, b = cfg.services
    assert a.peers is None
    assert [p.name for p in cfg.service_peers(a)] == ["r1", "r2"]
    assert b.peers == ("r2",)
    assert [p.name for p in cfg.service_peers(b)] == ["r2"]


def test_unknown_peer_names_it_and_lists_the_known_names() -> None:
    assert errors(raw(svc(peers=["r1", "r3"]))) == [
        "services[0].peers[1]: unknown peer 'r3' (peer names: 'r1', 'r2')"
    ]


def test_a_peer_referenced_by_address_is_told_to_use_a_name() -> None:
    unnamed = {"address": "10.0.2.1", "asn": 65000}
    assert errors(raw(svc(peers=["10.0.2.1"]), peers=(R1, unnamed))) == [
        "services[0].peers[0]: unknown peer '10.0.2.1' (peer names: 'r1'); "
        "peers are listed by name: set peers[1].name"
    ]


def test_no_peer_has_a_name() -> None:
    unnamed = {"address": "10.0.2.1", "asn": 65000}
    assert errors(raw(svc(peers=["r1"]), peers=(unnamed,))) == [
        "services[0].peers[0]: unknown peer 'r1' (peer names: none: no peer has a name)"
    ]


def test_peer_names_are_unique() -> None:
    twin = {**R2, "name": "r1"}
    assert errors(raw(svc(), peers=(R1, twin))) == [
        "peers[1].name: duplicate peer name 'r1' (also peers[0])"
    ]


def test_a_peer_listed_twice() -> None:
    assert errors(raw(svc(peers=["r1", "r1"]))) == [
        "services[0].peers[1]: peer 'r1' listed twice (also services[0].peers[0])"
    ]


def test_an_empty_list_is_refused() -> None:
    found = errors(raw(svc(peers=[])))
    assert found == [
        "services[0].peers: an empty list announces the service to no peer: leave peers out "
        "to announce it to every peer"
    ]


def test_a_v4_peer_cannot_carry_a_v6_only_service() -> None:
    """Announced to nobody: the only listed peer is IPv4 without next_hop_v6."""
    found = errors(raw(svc(vips=("fd00:99::1",), peers=["r1"]), peers=(R1, R6)))
    assert found == [
        "services[0].peers[0]: peer 'r1' (10.0.0.1) cannot carry any VIP of this service: "
        "they are all IPv6 and the session is IPv4 without next_hop_v6",
        "services[0].vips[0]: IPv6 VIP fd00:99::1 reaches none of the service's peers ('r1'): "
        "list an IPv6 peer or set next_hop_v6 on one of them",
    ]


def test_an_explicit_next_hop_lets_a_v4_session_carry_a_v6_vip() -> None:
    r1 = {**R1, "next_hop_v6": "fd00:1::2"}
    cfg = parse_config(raw(svc(vips=("fd00:99::1",), peers=["r1"]), peers=(r1, R6)))
    assert [p.name for p in cfg.service_peers(cfg.services[0])] == ["r1"]


def test_dual_stack_service_split_over_a_v4_and_a_v6_peer() -> None:
    """Each VIP reaches one listed peer of its family: fine. Announced to every peer instead,
    the v6 VIP would need next_hop_v6 on the v4 session (the rule of every-peer services)."""
    vips = ("10.99.0.1", "fd00:99::1")
    parse_config(raw(svc(vips=vips, peers=["r1", "r6"]), peers=(R1, R6)))
    assert errors(raw(svc(vips=vips), peers=(R1, R6)))[0].startswith(
        "peers[0].next_hop_v6: service 'web' announces IPv6 VIP fd00:99::1 over this IPv4 "
        "session: set next_hop_v6 (or add an IPv6 peer and keep this VIP off this one with "
        "services[].peers)"
    )


def test_a_vip_no_listed_peer_can_carry() -> None:
    found = errors(raw(svc(vips=("10.99.0.1", "fd00:99::1"), peers=["r1", "r2"])))
    assert found == [
        "services[0].vips[1]: IPv6 VIP fd00:99::1 reaches none of the service's peers "
        "('r1', 'r2'): list an IPv6 peer or set next_hop_v6 on one of them"
    ]


def test_attribute_rules_look_only_at_the_service_peers() -> None:
    """local_pref is refused toward eBGP peers; a service sent only to an iBGP peer may set it."""
    ibgp = {"name": "rr", "address": "10.0.3.1", "asn": 65001}
    attrs = {"healthy": {"local_pref": 200}}
    parse_config(raw(svc(peers=["rr"], attributes=attrs), peers=(R1, ibgp)))
    assert errors(raw(svc(attributes=attrs), peers=(R1, ibgp))) == [
        "services[0].attributes.healthy.local_pref: local_pref is not sent to eBGP peers "
        "(ExaBGP drops it; FRR ignores it)"
    ]


# --------------------------------------------------------------------------- the CLI


def test_check_config_exits_2_and_prints_the_field_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw(svc(peers=["r9"]))))
    rc = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    assert (rc, out) == (2, "")
    assert err.splitlines() == ["services[0].peers[0]: unknown peer 'r9' (peer names: 'r1', 'r2')"]
    path.write_text(yaml.safe_dump(raw(svc(peers=["r2"]))))
    rc = main(["check-config", str(path)])
    out, err = capsys.readouterr()
    assert (rc, out, err) == (0, "OK: 1 service, 2 peers\n", "")
