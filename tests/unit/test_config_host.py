"""check_against_host: what only the host can tell; parse_config stays pure."""

from __future__ import annotations

from bgplb.config import ConfigIssue, check_against_host, parse_config

CONFIG = {
    "node": {"router_id": "10.0.0.10", "local_as": 65001},
    "peers": [{"address": "10.0.0.1", "asn": 65000, "md5_password_file": "/nonexistent/r1.md5"}],
    "services": [
        {"name": "web", "vips": ["10.9.0.1"], "ports": [{"port": 80}]},
        {"name": "eth0", "vips": ["10.9.0.2"], "ports": [{"port": 80}]},
        {"name": "dns", "vips": ["10.9.0.3"], "mode": "announce", "interface": "lo"},
        {"name": "ntp", "vips": ["10.9.0.4"], "mode": "announce", "interface": "vip0"},
    ],
}


def test_parse_config_is_pure_and_does_not_look_for_files() -> None:
    assert parse_config(CONFIG).peers[0].md5_password_file is not None


def test_existing_non_dummy_links_and_missing_interfaces() -> None:
    cfg = parse_config(CONFIG)
    links = {"lo": "", "eth0": "veth", "web": "dummy", "dns": "bridge"}
    assert check_against_host(cfg, links) == [
        ConfigIssue(
            "services[1].name",
            "a veth link named 'eth0' exists; the service name names the dummy interface "
            "bgp-lb creates: rename the service",
        ),
        ConfigIssue("services[3].interface", "no interface named 'vip0'"),
    ]


def test_a_link_without_a_kind_is_not_a_dummy() -> None:
    cfg = parse_config(CONFIG)
    (issue,) = [i for i in check_against_host(cfg, {"eth0": "", "vip0": ""}) if "eth0" in i.message]
    assert issue.message.startswith("a non-dummy link named 'eth0' exists")


def test_all_clear() -> None:
    cfg = parse_config(CONFIG)
    assert check_against_host(cfg, {"lo": "", "vip0": "dummy", "web": "dummy"}) == []
