"""bfd/spec.py, bfd/hold.py, bfd/lookup.py (pure parts): bfdd's peers from the config and
the route lookup, the config text, the vtysh edits of a reload, the parsed session states,
and the routes held back from a peer whose BFD is not Up."""

from __future__ import annotations

import json
from typing import Any

from bgplb.bfd.base import BfdSession, BfdState
from bgplb.bfd.hold import held_peers, hold_routes
from bgplb.bfd.lookup import parse_route, route_argv
from bgplb.bfd.spec import (
    PeerRoute,
    edit_commands,
    parse_sessions,
    peer_specs,
    render_bfdd,
)
from bgplb.config import Config, parse_config

from .fixtures import node

BFD = {"interval_ms": 100, "multiplier": 3}


def cfg(*peers: dict[str, Any]) -> Config:
    return parse_config({"node": node(), "peers": list(peers)})


ONE_HOP = {"address": "10.0.1.1", "asn": 65000, "bfd": BFD}
MULTI = {"address": "10.5.0.1", "asn": 65000, "multihop": 3, "bfd": {"interval_ms": 300}}
PLAIN = {"address": "10.0.2.1", "asn": 65000}
ROUTES = {
    "10.0.1.1": PeerRoute("eth0", "10.0.1.2"),
    "10.5.0.1": PeerRoute("eth1", "10.0.9.2"),
}


def test_single_hop_binds_the_route_interface_multihop_the_source_only() -> None:
    specs = peer_specs(cfg(ONE_HOP, MULTI, PLAIN), ROUTES)
    assert [s.header() for s in specs] == [
        "peer 10.0.1.1 local-address 10.0.1.2 interface eth0",
        "peer 10.5.0.1 multihop local-address 10.0.9.2",
    ]
    assert render_bfdd(specs) == (
        "frr defaults traditional\n"
        "hostname bgp-lb\n"
        "bfd\n"
        " peer 10.0.1.1 local-address 10.0.1.2 interface eth0\n"
        "  detect-multiplier 3\n"
        "  receive-interval 100\n"
        "  transmit-interval 100\n"
        " peer 10.5.0.1 multihop local-address 10.0.9.2\n"
        "  detect-multiplier 3\n"
        "  receive-interval 300\n"
        "  transmit-interval 300\n"
    )
    assert "exit" not in render_bfdd(specs)  # an exit breaks the daemons reading the file


def test_configured_local_address_wins_and_a_failed_lookup_leaves_it_unbound() -> None:
    peer = {**ONE_HOP, "local_address": "10.0.1.7"}
    [spec] = peer_specs(cfg(peer), {})
    assert spec.header() == "peer 10.0.1.1 local-address 10.0.1.7"


def test_a_reload_edits_only_what_changed() -> None:
    old = peer_specs(cfg(ONE_HOP, MULTI), ROUTES)
    assert edit_commands(old, old) == []
    retimed = {**ONE_HOP, "bfd": {"interval_ms": 200, "multiplier": 5}}
    new = peer_specs(cfg(retimed, PLAIN), ROUTES)
    assert edit_commands(old, new) == [
        "configure terminal",
        "bfd",
        "no peer 10.5.0.1 multihop local-address 10.0.9.2",
        "peer 10.0.1.1 local-address 10.0.1.2 interface eth0",
        "detect-multiplier 5",
        "receive-interval 200",
        "transmit-interval 200",
        "exit",
        "end",
    ]


def show(*peers: tuple[str, bool, str]) -> str:
    return json.dumps(
        [{"peer": p, "multihop": m, "status": s, "diagnostic": "ok"} for p, m, s in peers]
    )


def test_sessions_from_show_bfd_peers_json() -> None:
    specs = peer_specs(cfg(ONE_HOP, MULTI), ROUTES)
    first = parse_sessions(show(("10.0.1.1", False, "up")), specs, {}, now=5.0)
    assert first["10.0.1.1"] == BfdSession("10.0.1.1", BfdState.UP, 5.0, "")
    assert first["10.5.0.1"].state is BfdState.UNKNOWN
    assert first["10.5.0.1"].detail == "not listed by bfdd"
    # since moves only on a change
    again = parse_sessions(
        show(("10.0.1.1", False, "up"), ("10.5.0.1", True, "down")), specs, first, now=9.0
    )
    assert again["10.0.1.1"].since == 5.0
    assert (again["10.5.0.1"].state, again["10.5.0.1"].since) == (BfdState.DOWN, 9.0)
    # a single-hop session with the same address is not the multihop one
    odd = parse_sessions(show(("10.5.0.1", False, "up")), specs, {}, now=1.0)
    assert odd["10.5.0.1"].state is BfdState.UNKNOWN


def test_held_peers_and_their_routes() -> None:
    config = cfg(ONE_HOP, PLAIN)
    sessions = {"10.0.1.1": BfdSession("10.0.1.1", BfdState.DOWN, 0.0, "")}
    held = held_peers(config, sessions)
    assert held == {"10.0.1.1": "bfd_not_up: bfd session down"}
    assert held_peers(config, {}) == {"10.0.1.1": "bfd_not_up: bfd session unknown"}
    up = {"10.0.1.1": BfdSession("10.0.1.1", BfdState.UP)}
    assert held_peers(config, up) == {}
    routes: dict[str, frozenset[Any]] = {"10.0.1.1": frozenset({1}), "10.0.2.1": frozenset({2})}
    assert hold_routes(routes, held) == {"10.0.2.1": frozenset({2})}  # type: ignore[arg-type]


def test_route_lookup_argv_and_answer() -> None:
    assert route_argv("10.0.1.1", None) == ["ip", "-j", "route", "get", "10.0.1.1"]
    assert route_argv("10.0.1.1", "lb1")[:3] == ["ip", "-n", "lb1"]
    answer = '[{"dst":"10.0.1.1","dev":"eth0","prefsrc":"10.0.1.2","flags":[],"uid":0}]'
    assert parse_route(answer) == PeerRoute("eth0", "10.0.1.2")
    assert parse_route("[]") == PeerRoute(None, None)


def test_check_node_wants_frr_only_for_bfd_peers(tmp_path: Any) -> None:
    from bgplb.dataplane.prereq import check_frr, check_prerequisites

    assert not [p for p in check_prerequisites(cfg(PLAIN), tmp_path) if "frr" in p.name]
    missing = {p.name: p for p in check_prerequisites(cfg(ONE_HOP), tmp_path)}
    assert not missing["program /usr/lib/frr/bfdd"].ok
    assert "apt-get install frr" in missing["program /usr/lib/frr/bfdd"].fix
    for rel in ("usr/lib/frr/zebra", "usr/lib/frr/bfdd"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("#!/bin/sh\n")
        (tmp_path / rel).chmod(0o755)
    assert all(p.ok for p in check_frr(tmp_path))
