"""Which checks a config asks for and where they point."""

from __future__ import annotations

import ipaddress

from pydantic import TypeAdapter

from bgplb.clock import FakeClock
from bgplb.config import Check, CheckBase
from bgplb.health.runner import HealthRunner
from bgplb.health.targets import (
    ResolvedCheck,
    hostport,
    real_server_target,
    resolve_check,
    resolve_checks,
)
from bgplb.health.tracker import CheckKey
from tests.unit.fixtures import (
    ROUTER_ID,
    announce_service,
    config,
    http_check,
    ipvs_service,
    port,
    real_server,
    service,
    tcp_check,
)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_service_level_checks_default_to_the_node_and_the_first_target_port() -> None:
    cfg = config(
        ipvs_service("web", ports=(port(80, target_port=8080), port(443)), checks=[tcp_check()])
    )
    resolved = resolve_checks(cfg)
    key = CheckKey("web", None, "tcp")
    assert list(resolved) == [key]
    assert resolved[key].address == ip(ROUTER_ID)
    assert resolved[key].port == 8080


def test_backend_v4_wins_over_router_id() -> None:
    cfg = config(ipvs_service("web", checks=[tcp_check()]), backend_v4="10.0.5.5")
    assert resolve_checks(cfg)[CheckKey("web", None, "tcp")].address == ip("10.0.5.5")


def test_checks_own_address_and_port_win() -> None:
    check = http_check("api", address="10.1.1.1", port=9000, path="/health")
    cfg = config(ipvs_service("web", checks=[check]))
    target = resolve_checks(cfg)[CheckKey("web", None, "api")]
    assert (target.address, target.port) == (ip("10.1.1.1"), 9000)


def test_real_server_checks_point_at_the_real_server() -> None:
    cfg = config(
        ipvs_service(
            "web",
            ports=(port(80, target_port=8080),),
            real_servers=[
                real_server("10.2.0.1", checks=[http_check(), tcp_check("t2", port=22)]),
                real_server("fd00::7", port=9090, checks=[tcp_check()]),
                real_server("10.2.0.3"),  # no checks: no keys
            ],
        )
    )
    resolved = resolve_checks(cfg)
    assert list(resolved) == [
        CheckKey("web", "10.2.0.1:8080", "http"),
        CheckKey("web", "10.2.0.1:8080", "t2"),
        CheckKey("web", "[fd00::7]:9090", "tcp"),
    ]
    http = resolved[CheckKey("web", "10.2.0.1:8080", "http")]
    assert (http.address, http.port) == (ip("10.2.0.1"), 8080)
    t2 = resolved[CheckKey("web", "10.2.0.1:8080", "t2")]
    assert (t2.address, t2.port) == (ip("10.2.0.1"), 22)
    v6 = resolved[CheckKey("web", "[fd00::7]:9090", "tcp")]
    assert (v6.address, v6.port) == (ip("fd00::7"), 9090)
    svc = service(cfg, "web")
    assert [real_server_target(svc, rs) for rs in svc.real_servers] == [
        "10.2.0.1:8080",
        "[fd00::7]:9090",
        "10.2.0.3:8080",
    ]


def test_icmp_and_exec_checks_need_no_address() -> None:
    cfg = config(
        announce_service(
            "dns",
            checks=[
                {"type": "icmp", "addresses": ["127.0.0.1"]},
                {"type": "exec", "name": "script", "argv": ["true"]},
            ],
        )
    )
    resolved = resolve_checks(cfg)
    assert list(resolved) == [CheckKey("dns", None, "icmp"), CheckKey("dns", None, "script")]
    assert all(r.address is None and r.port is None for r in resolved.values())


def test_timing_defaults_pass_through() -> None:
    cfg = config(ipvs_service("web", checks=[tcp_check(fast_interval=None, rise=5)]))
    target = resolve_checks(cfg)[CheckKey("web", None, "tcp")]
    assert (target.interval, target.fast_interval, target.timeout) == (1.0, 1.0, 0.8)
    assert (target.rise, target.fall) == (5, 2)


def test_hostport() -> None:
    assert hostport(ip("10.0.0.1"), 80) == "10.0.0.1:80"
    assert hostport(ip("fd00::1"), 80) == "[fd00::1]:80"
    assert hostport(ip("fd00::1"), None) == "fd00::1"


def test_runner_configure_uses_the_config() -> None:
    cfg = config(
        ipvs_service("web", checks=[tcp_check()], real_servers=[real_server("10.2.0.1")]),
        ipvs_service(
            "api", vips=("10.99.0.2",), real_servers=[real_server("10.2.0.2", checks=[tcp_check()])]
        ),
    )
    runner = HealthRunner(FakeClock(), lambda: None, prober=_NeverProber())
    runner.configure(cfg)
    assert set(runner.snapshot()) == {
        CheckKey("web", None, "tcp"),
        CheckKey("api", "10.2.0.2:80", "tcp"),
    }
    assert set(runner.specs()) == set(runner.snapshot())


class _NeverProber:
    async def probe(self, target: object) -> str | None:
        raise AssertionError("not run in this test")


TIMING = {"interval": 7.0, "fast_interval": 0.5, "timeout": 3.0, "rise": 5, "fall": 4}
TARGET_CHANGES = [
    ("http", {"port": 81}),
    ("http", {"path": "/other"}),
    ("http", {"host": "example.org"}),
    ("http", {"expect_status": [204]}),
    ("http", {"body_match": "ok"}),
    ("http", {"verify_tls": False}),
    ("http", {"address": "192.0.2.9"}),
    ("http", {"source_address": "192.0.2.8"}),
    ("tcp", {"port": 81}),
    ("tcp", {"watch_connection": True}),
    ("icmp", {"addresses": ["192.0.2.2"]}),
    ("icmp", {"require": "all"}),
    ("exec", {"argv": ["/bin/false"]}),
    ("exec", {"env": {"A": "2"}}),
]
BASE = {
    "http": {"type": "http", "name": "c", "port": 80},
    "tcp": {"type": "tcp", "name": "c", "port": 80},
    "icmp": {"type": "icmp", "name": "c", "addresses": ["192.0.2.1"]},
    "exec": {"type": "exec", "name": "c", "argv": ["/bin/true"], "env": {"A": "1"}},
}


def _resolved(raw: dict[str, object]) -> ResolvedCheck:
    check = TypeAdapter(Check).validate_python(raw)
    return resolve_check(CheckKey("web", None, "c"), check, ip("192.0.2.1"), 80)


def test_timing_fields_are_not_part_of_the_target() -> None:
    for raw in BASE.values():
        assert _resolved(raw).same_target(_resolved({**raw, **TIMING}))
    assert {"interval", "fast_interval", "timeout", "rise", "fall"} == CheckBase.TIMING_FIELDS


def test_every_other_field_is_part_of_the_target() -> None:
    for kind, change in TARGET_CHANGES:
        raw = BASE[kind]
        assert not _resolved(raw).same_target(_resolved({**raw, **change})), (kind, change)
    http = BASE["http"]
    assert not _resolved(http).same_target(_resolved({**http, "type": "https"}))
