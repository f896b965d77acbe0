"""The original Go bgp-lb's JSON config is accepted unchanged and mapped faithfully."""

from __future__ import annotations

import copy
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from bgplb.config import ConfigError, HttpCheck, IcmpCheck, parse, parse_config
from bgplb.model import Protocol, ServiceMode

EXAMPLE = Path(__file__).parents[2] / "examples" / "seed-format.json"


@pytest.fixture
def seed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return data


def errors(data: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(e) for e in info.value.errors]


def test_the_seed_format_is_detected_and_mapped(seed: dict[str, Any]) -> None:
    parsed = parse(seed)
    assert parsed.format == "seed"
    cfg = parsed.config
    assert cfg.node.router_id == ipaddress.IPv4Address("10.88.0.200")
    assert cfg.node.local_as == 65512
    assert [(str(p.address), p.asn) for p in cfg.peers] == [
        ("10.88.0.253", 65512),
        ("10.88.0.254", 65512),
    ]
    assert all(not p.passive for p in cfg.peers)
    (svc,) = cfg.services
    assert svc.name == "matchbox"
    assert svc.mode is ServiceMode.IPVS
    assert [str(v) for v in svc.vips] == ["10.88.2.1"]
    assert [(p.port, p.target, p.protocol, p.scheduler) for p in svc.ports] == [
        (80, 8080, Protocol.TCP, "rr"),
        (443, 8081, Protocol.TCP, "rr"),
    ]


def test_the_ipvs_destination_is_router_id_at_the_target_local_port(seed: dict[str, Any]) -> None:
    cfg = parse_config(seed)
    (svc,) = cfg.services
    assert svc.real_servers == ()  # -> the local backend
    destinations = {f"{cfg.node.local_backend_v4}:{p.target}" for p in svc.ports}
    assert destinations == {"10.88.0.200:8080", "10.88.0.200:8081"}


def test_the_http_check_targets_the_router_id_not_loopback(seed: dict[str, Any]) -> None:
    parsed = parse(seed)
    (check,) = parsed.config.services[0].checks
    assert isinstance(check, HttpCheck)
    assert (check.type, check.port, check.path, check.verify_tls) == (
        "http",
        8080,
        "/healthz",
        True,
    )
    assert check.address is None  # the backend address: the router id
    assert check.expect_status == ()  # any 2xx, as the original
    assert any("router id" in n for n in parsed.notes)


def test_seed_https_and_insecure_skip_verify(seed: dict[str, Any]) -> None:
    seed["service"]["httphealthcheck"] = {
        "port": 8443,
        "scheme": "HTTPS",
        "insecureSkipVerify": True,
    }
    (check,) = parse_config(seed).services[0].checks
    assert isinstance(check, HttpCheck)
    assert (check.type, check.path, check.verify_tls) == ("https", "/", False)


def test_no_check_maps_to_the_originals_ping_and_says_so(seed: dict[str, Any]) -> None:
    del seed["service"]["httphealthcheck"]
    parsed = parse(seed)
    (check,) = parsed.config.services[0].checks
    assert isinstance(check, IcmpCheck)
    assert [str(a) for a in check.addresses] == ["1.1.1.1", "8.8.8.8"]
    assert check.require == "any"
    assert any("no health check configured" in n for n in parsed.notes)


def test_ping_check(seed: dict[str, Any]) -> None:
    del seed["service"]["httphealthcheck"]
    seed["service"]["pinghealthcheck"] = {"addresses": ["10.88.0.1"]}
    parsed = parse(seed)
    (check,) = parsed.config.services[0].checks
    assert isinstance(check, IcmpCheck)
    assert [str(a) for a in check.addresses] == ["10.88.0.1"]
    assert parsed.notes == ()


def test_prefix_length_defaults_to_32_and_protocol_is_case_insensitive(
    seed: dict[str, Any],
) -> None:
    del seed["service"]["prefixLength"]
    seed["service"]["protocol"] = "UDP"
    cfg = parse_config(seed)
    assert {p.protocol for p in cfg.services[0].ports} == {Protocol.UDP}


def test_listen_port_other_than_minus_one_is_noted(seed: dict[str, Any]) -> None:
    seed["bgp"]["local"]["listenPort"] = 179
    assert any("listenPort 179" in n for n in parse(seed).notes)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["service"].update(prefixLength=24),
            "service.prefixLength: 10.88.2.1/24 is not a host address",
        ),
        (lambda d: d["service"].update(colour="red"), "service.colour: unknown key"),
        (lambda d: d["bgp"]["local"].update(routerId="1.2.3.4"), "bgp.local.routerId: unknown key"),
        (
            lambda d: d["bgp"]["local"].pop("routerID"),
            "bgp.local.routerID: required key is missing",
        ),
        (
            lambda d: d["bgp"]["peers"][1].update({"as": "x"}),
            "bgp.peers[1].as: Input should be a valid integer",
        ),
        (
            lambda d: d["service"]["ports"][0].update(servicePort=0),
            "service.ports[0].servicePort: Input should be greater",
        ),
        (
            lambda d: d["service"].update(protocol="icmp"),
            "service.protocol: protocol 'icmp': expected tcp, udp or sctp",
        ),
        (lambda d: d["service"].pop("protocol"), "service.protocol: required with ports"),
        (
            lambda d: d["service"].update(name="x" * 16),
            "service.name: 'xxxxxxxxxxxxxxxx' is not a valid Linux",
        ),
        (lambda d: d["service"].update(ip="127.0.0.1"), "service.ip: 127.0.0.1 cannot be a VIP"),
        (
            lambda d: d["bgp"]["peers"].append(d["bgp"]["peers"][0]),
            "bgp.peers[2].address: duplicate peer",
        ),
        (
            lambda d: d["service"]["httphealthcheck"].update(scheme="ftp"),
            "service.httphealthcheck.scheme: scheme 'ftp'",
        ),
    ],
)
def test_seed_errors_use_the_seeds_key_names(
    seed: dict[str, Any], change: Any, expected: str
) -> None:
    data = copy.deepcopy(seed)
    change(data)
    found = errors(data)
    assert any(e.startswith(expected) for e in found), found


def test_a_native_key_is_not_mistaken_for_the_seed_format(seed: dict[str, Any]) -> None:
    seed["services"] = []
    found = errors(seed)
    assert "bgp: unknown key (expected one of: node, peers, services)" in found
    assert "node: required key is missing" in found


def test_keys_match_case_insensitively_like_gos_encoding_json(seed: dict[str, Any]) -> None:
    text = json.dumps(seed)
    for key in ("routerID", "listenPort", "servicePort", "targetLocalPort", "httphealthcheck"):
        text = text.replace(f'"{key}"', f'"{key.upper()}"')
    text = text.replace('"bgp"', '"Bgp"').replace('"as"', '"As"')
    folded = parse(json.loads(text))
    assert folded.format == "seed"
    assert folded.config == parse_config(seed)


def test_a_key_given_twice_in_two_spellings_is_an_error(seed: dict[str, Any]) -> None:
    seed["bgp"]["local"]["RouterId"] = "10.88.0.201"
    assert errors(seed) == ["bgp.local.RouterId: unknown key (did you mean 'routerID'?)"]
