"""route_attributes: explicit config wins, else the per-peer-type defaults."""

from __future__ import annotations

from typing import Any

import pytest

from bgplb.config import GSHUT, Config, PeerConfig, ServiceState, parse_config, route_attributes
from bgplb.model import RouteAttributes

AS = 65001
EBGP = {"address": "10.0.0.1", "asn": 65000}
IBGP = {"address": "10.0.0.2", "asn": AS}


def build(peers: list[dict[str, Any]], attributes: dict[str, Any] | None = None) -> Config:
    service = {"name": "web", "vips": ["10.9.0.1"], "mode": "announce", "interface": "lo"}
    if attributes is not None:
        service["attributes"] = attributes
    return parse_config(
        {"node": {"router_id": "10.0.0.10", "local_as": AS}, "peers": peers, "services": [service]}
    )


def attrs(cfg: Config, state: ServiceState, peer: PeerConfig) -> RouteAttributes:
    return route_attributes(cfg.services[0], state, peer, cfg.node.local_as)


@pytest.mark.parametrize(
    ("peer", "state", "expected"),
    [
        (EBGP, "healthy", RouteAttributes()),
        (IBGP, "healthy", RouteAttributes()),
        (EBGP, "draining", RouteAttributes(communities=(GSHUT,), as_path=(AS, AS, AS))),
        (IBGP, "draining", RouteAttributes(communities=(GSHUT,), local_pref=0)),
        (EBGP, "degraded", RouteAttributes(as_path=(AS, AS, AS))),
        (IBGP, "degraded", RouteAttributes(local_pref=50)),
    ],
)
def test_defaults_per_peer_type(
    peer: dict[str, Any], state: ServiceState, expected: RouteAttributes
) -> None:
    cfg = build([peer])
    assert attrs(cfg, state, cfg.peers[0]) == expected


def test_the_ebgp_default_drain_never_carries_local_pref_and_ibgp_never_a_prepend() -> None:
    cfg = build([EBGP, IBGP])
    ebgp, ibgp = cfg.peers
    for state in ("healthy", "degraded", "draining"):
        assert attrs(cfg, state, ebgp).local_pref is None
        assert attrs(cfg, state, ibgp).as_path == ()


def test_explicit_attributes_replace_the_default_for_that_state() -> None:
    cfg = build(
        [EBGP],
        {
            "healthy": {
                "communities": ["65001:100"],
                "extended_communities": ["bandwidth:65001:125000000"],
            },
            "draining": {"communities": ["65001:666"], "as_path_prepend": 1},
        },
    )
    peer = cfg.peers[0]
    assert attrs(cfg, "healthy", peer) == RouteAttributes(
        communities=("65001:100",), extended_communities=("bandwidth:65001:125000000",)
    )
    assert attrs(cfg, "draining", peer) == RouteAttributes(
        communities=("65001:666",), as_path=(AS, AS)
    )
    # degraded is not set: still the default
    assert attrs(cfg, "degraded", peer) == RouteAttributes(as_path=(AS, AS, AS))


def test_explicit_med_is_used_when_the_fleet_shares_one_as() -> None:
    cfg = parse_config(
        {
            "node": {"router_id": "10.0.0.10", "local_as": AS, "same_as_fleet": True},
            "peers": [EBGP],
            "services": [
                {
                    "name": "web",
                    "vips": ["10.9.0.1"],
                    "mode": "announce",
                    "interface": "lo",
                    "attributes": {"degraded": {"med": 500}},
                }
            ],
        }
    )
    assert attrs(cfg, "degraded", cfg.peers[0]) == RouteAttributes(med=500)


def test_hand_built_objects_never_get_attributes_the_peer_type_cannot_use() -> None:
    from bgplb.config import ServiceConfig

    svc = ServiceConfig.model_validate(
        {
            "name": "web",
            "vips": ["10.9.0.1"],
            "attributes": {"draining": {"local_pref": 7, "as_path_prepend": 2}},
        }
    )
    ebgp = PeerConfig.model_validate(EBGP)
    ibgp = PeerConfig.model_validate(IBGP)
    assert route_attributes(svc, "draining", ebgp, AS) == RouteAttributes(as_path=(AS, AS, AS))
    assert route_attributes(svc, "draining", ibgp, AS) == RouteAttributes(local_pref=7)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("bandwidth:65001:125000000", True),
        ("bandwidth:65001:4294967295", True),
        ("bandwidth:65001:4294967296", False),  # ExaBGP refuses values above 2^32-1
        ("bandwidth:65001:1e9", False),  # ExaBGP parses decimal digits only
        ("bandwidth:70000:1", False),
        ("target:65000:1", True),
        ("65000:1", True),
        ("target:10.0.0.1:7", True),
        ("target:10.0.0.1:70000", False),
        ("origin4:4200000000:1", True),
        ("redirect:65000:100", True),
        ("0x4004FDE94CEE6B28", True),
        ("0x4004", False),
        ("colour:1:2", False),
    ],
)
def test_extended_community_forms(value: str, ok: bool) -> None:
    from bgplb.config import ConfigError

    data = {"healthy": {"extended_communities": [value]}}
    if ok:
        assert build([EBGP], data).services[0].attributes.healthy.extended_communities == (value,)
    else:
        with pytest.raises(ConfigError, match="is not an extended community"):
            build([EBGP], data)
