"""Metrics: exposition lint (promtool when present, and a pure-python lint), update methods."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import MappingProxyType

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bgplb.admin import AdminState
from bgplb.api import build_app
from bgplb.health.tracker import CheckKey, CheckResult, CheckState
from bgplb.metrics import Metrics
from bgplb.model import (
    CheckStatus,
    Decision,
    ObservedDataplane,
    PeerState,
    PeerStatus,
    Protocol,
    Reason,
    Route,
    VirtualServiceKey,
)
from bgplb.policy import ServiceDecision
from bgplb.pool import PoolView

from .test_api_support import (
    CHECK_ERROR,
    TOKEN,
    VIP_DNS,
    VIP_WEB,
    FakeControl,
    a_pass,
    observed,
)

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


@dataclass(frozen=True)
class Svc:
    name: str


@dataclass(frozen=True)
class Cfg:
    services: tuple[Svc, ...] = (Svc("web"), Svc("dns"))


class Speaker:
    def __init__(self) -> None:
        self.n = 0

    def restarts(self) -> int:
        return self.n


UP = CheckState(CheckStatus.UP, None, None, 3, 0)
DOWN = CheckState(CheckStatus.DOWN, None, None, 0, 2)
K_WEB_1 = CheckKey("web", "192.0.2.10:8080", "http")
K_WEB_2 = CheckKey("web", "192.0.2.11:8080", "http")
K_DNS = CheckKey("dns", None, "udp")


def routes() -> dict[str, frozenset[Route]]:
    import ipaddress

    web_route = Route(ipaddress.ip_network("198.51.100.10/32"), None, service="web")
    dns_route = Route(ipaddress.ip_network("2001:db8::53/128"), None, service="dns")
    assert web_route.prefix.network_address == VIP_WEB
    assert dns_route.prefix.network_address == VIP_DNS
    return {"192.0.2.1": frozenset({web_route, dns_route}), "192.0.2.2": frozenset()}


POOL_VS = VirtualServiceKey(VIP_WEB, 80, Protocol.TCP)
POOL_VIEW = PoolView("web", POOL_VS, True, "0123456789abcdef", ())


def fed(per_real_server: bool = True) -> Metrics:
    """A Metrics fed with two services, two peers and IPVS counters."""
    m = Metrics(dataplane=observed, per_real_server=per_real_server, exabgp_version="5.0.15")
    m.record_check(K_WEB_1, CheckResult(True, 10.0, 0.004), UP)
    m.record_check(K_WEB_2, CheckResult(False, 10.0, 1.0, CHECK_ERROR), DOWN)
    m.record_check(K_DNS, CheckResult(True, 10.0, 0.0005), UP)
    m.set_check_states({K_WEB_1: UP, K_WEB_2: DOWN, K_DNS: UP})
    m.set_decisions(
        {
            "web": ServiceDecision("web", Decision.ANNOUNCE, Reason.HEALTHY),
            "dns": ServiceDecision("dns", Decision.WITHDRAW, Reason.CHECK_FAILED, CHECK_ERROR),
        }
    )
    m.set_drained(AdminState(drained=MappingProxyType({"web": 5.0})), Cfg())
    m.set_routes(routes())
    m.set_peers(
        {
            "192.0.2.1": PeerStatus("192.0.2.1", PeerState.UP),
            "192.0.2.2": PeerStatus("192.0.2.2", PeerState.DOWN, reason="hold timer expired"),
        }
    )
    m.speaker_commands(4)
    m.speaker_restarted()
    m.reconcile_pass(a_pass(0.012, ("AddAddress failed: EEXIST",)))
    m.config_reloaded(True, 1.7e9)
    m.set_pool_tables([POOL_VIEW])
    return m


def samples(m: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in m.registry.collect():
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return samples(m, name).get(tuple(sorted(labels.items())))


# --------------------------------------------------------------------------- lint


async def scrape(aiohttp_client: MakeClient, m: Metrics) -> str:
    c = await aiohttp_client(build_app(FakeControl(), m, TOKEN))
    resp = await c.get("/metrics")
    assert resp.status == 200
    return await resp.text()


def promtool(exposition: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition,
        capture_output=True,
        timeout=30,
        check=False,
    )


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
@pytest.mark.parametrize("per_real_server", [True, False])
async def test_promtool_check_metrics(aiohttp_client: MakeClient, per_real_server: bool) -> None:
    text = await scrape(aiohttp_client, fed(per_real_server))
    proc = await asyncio.to_thread(promtool, text.encode())
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout == b""
    assert proc.stderr == b""  # this promtool prints its findings on stderr
    # promtool flags a bad name: the check above is not vacuous
    bad = await asyncio.to_thread(promtool, b"# HELP x_ms t\n# TYPE x_ms counter\nx_ms 1\n")
    assert bad.returncode != 0
    assert b"_total" in bad.stdout + bad.stderr


def lint(text: str) -> list[str]:
    """The promtool rules we care about, in python: HELP, prefixes, suffixes, label values."""
    problems = []
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("bgplb_"):
            problems.append(f"{family.name}: not bgplb_")
        if not family.documentation.strip():
            problems.append(f"{family.name}: no HELP")
        if family.type != "counter" and family.name.endswith("_total"):
            problems.append(f"{family.name}: _total on a {family.type}")
        for unit in ("milliseconds", "_ms", "bytes_total_", "percent"):
            if unit in family.name:
                problems.append(f"{family.name}: non-base unit")
        sample: Sample
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith(("_total", "_created")):
                problems.append(f"{sample.name}: counter sample without _total")
            for k, v in sample.labels.items():
                if len(v) > 64 or " " in v or "refused" in v:
                    problems.append(f"{sample.name}: free text in label {k}={v!r}")
    return problems


async def test_python_lint_of_exposition(aiohttp_client: MakeClient) -> None:
    text = await scrape(aiohttp_client, fed())
    assert lint(text) == []
    assert CHECK_ERROR not in text
    assert "hold timer" not in text
    assert lint("# HELP foo_total x\n# TYPE foo_total gauge\nfoo_total 1\n") != []
    assert lint('# HELP bgplb_a x\n# TYPE bgplb_a gauge\nbgplb_a{e="a b"} 1\n') != []


def test_own_registry_without_global_collectors() -> None:
    a, b = Metrics(), Metrics()
    names = {f.name for f in a.registry.collect()}
    assert all(n.startswith("bgplb_") for n in names)
    assert a.registry is not b.registry


# --------------------------------------------------------------------------- values


def test_decisions_one_hot_over_every_value() -> None:
    m = fed()
    web = {
        dict(k)["decision"]: v
        for k, v in samples(m, "bgplb_service_decision").items()
        if dict(k)["service"] == "web"
    }
    assert web == {d.value: (1.0 if d is Decision.ANNOUNCE else 0.0) for d in Decision}
    dns_reasons = {
        dict(k)["reason"]: v
        for k, v in samples(m, "bgplb_service_reason").items()
        if dict(k)["service"] == "dns"
    }
    assert set(dns_reasons) == {r.value for r in Reason}
    assert [r for r, v in dns_reasons.items() if v == 1.0] == ["check_failed"]
    assert value(m, "bgplb_service_healthy", service="web") == 1.0
    assert value(m, "bgplb_service_healthy", service="dns") == 0.0


def test_checks_routes_peers_admin() -> None:
    m = fed()
    assert value(m, "bgplb_check_up", service="web", target="192.0.2.11:8080", check="http") == 0
    assert value(m, "bgplb_check_up", service="dns", target="", check="udp") == 1.0
    assert (
        value(
            m,
            "bgplb_check_result_total",
            service="web",
            target="192.0.2.11:8080",
            check="http",
            result="failure",
        )
        == 1.0
    )
    assert value(m, "bgplb_check_duration_seconds_count", service="web", check="http") == 2.0
    assert value(m, "bgplb_real_server_healthy", service="web", real_server="192.0.2.10:8080") == 1
    assert value(m, "bgplb_real_server_healthy", service="web", real_server="192.0.2.11:8080") == 0
    assert value(m, "bgplb_routes_advertised", service="web", peer="192.0.2.1") == 1.0
    assert value(m, "bgplb_routes_advertised", service="web", peer="192.0.2.2") == 0.0
    assert value(m, "bgplb_bgp_session_up", peer="192.0.2.2") == 0.0
    assert value(m, "bgplb_admin_drained", service="web") == 1.0
    assert value(m, "bgplb_admin_drained", service="dns") == 0.0
    assert value(m, "bgplb_node_drained") == 0.0
    assert value(m, "bgplb_reconcile_errors_total") == 1.0
    assert value(m, "bgplb_reconcile_runs_total") == 1.0
    assert value(m, "bgplb_speaker_commands_total") == 4.0
    assert value(m, "bgplb_config_reload_success") == 1.0
    assert value(m, "bgplb_config_reload_timestamp_seconds") == 1.7e9


def test_session_transitions_counted() -> None:
    m = Metrics()
    for state in (PeerState.IDLE, PeerState.UP, PeerState.UP, PeerState.DOWN, PeerState.UP):
        m.set_peers({"p": PeerStatus("p", state)})
    assert value(m, "bgplb_bgp_session_transitions_total", peer="p") == 3.0
    assert value(m, "bgplb_bgp_session_up", peer="p") == 1.0
    m.set_peers({})
    assert samples(m, "bgplb_bgp_session_up") == {}
    assert samples(m, "bgplb_bgp_session_transitions_total") == {}


def test_speaker_restart_count_follows_the_speaker() -> None:
    m, sp = Metrics(), Speaker()
    m.set_speaker(sp)
    sp.n = 2
    m.set_speaker(sp)
    m.set_speaker(sp)
    assert value(m, "bgplb_speaker_restarts_total") == 2.0


def test_services_leaving_the_config_are_forgotten() -> None:
    m = fed()
    m.set_decisions({"web": ServiceDecision("web", Decision.ANNOUNCE, Reason.HEALTHY)})
    m.set_check_states({K_WEB_1: UP, K_WEB_2: UP})
    for name in (
        "bgplb_service_decision",
        "bgplb_service_reason",
        "bgplb_service_healthy",
        "bgplb_admin_drained",
        "bgplb_check_up",
        "bgplb_check_result_total",
        "bgplb_routes_advertised",
        "bgplb_check_duration_seconds_count",
    ):
        services = {dict(k).get("service") for k in samples(m, name)}
        assert "dns" not in services, name
        assert "web" in services, name
    assert value(m, "bgplb_real_server_healthy", service="web", real_server="192.0.2.11:8080") == 1


def test_ipvs_read_at_scrape_time_and_knob() -> None:
    current: list[ObservedDataplane | None] = [None]
    m = Metrics(dataplane=lambda: current[0])
    assert samples(m, "bgplb_ipvs_active_connections") == {}
    current[0] = observed()
    vs = {"vip": "198.51.100.10", "port": "80", "protocol": "tcp"}
    assert value(m, "bgplb_ipvs_active_connections", **vs) == 3.0
    assert value(m, "bgplb_ipvs_bytes_total", direction="out", **vs) == 128000.0
    assert (
        value(
            m,
            "bgplb_ipvs_real_server_packets_total",
            direction="in",
            real_server="192.0.2.11:8080",
            **vs,
        )
        == 400.0
    )
    assert (
        value(
            m,
            "bgplb_ipvs_real_server_connections_total",
            vip="2001:db8::53",
            port="53",
            protocol="udp",
            real_server="[2001:db8:1::10]:53",
        )
        == 40.0
    )
    off = Metrics(dataplane=observed, per_real_server=False)
    text = generate_latest(off.registry).decode()
    assert "bgplb_ipvs_connections_total" in text
    assert "bgplb_ipvs_real_server" not in text
    off.set_check_states({K_WEB_1: UP})
    assert samples(off, "bgplb_real_server_healthy") == {}


def test_pool_tables_one_series_each_and_old_fingerprints_removed() -> None:
    m = fed()
    labels = {"service": "web", "vip": str(VIP_WEB), "port": "80", "protocol": "tcp"}
    assert value(m, "bgplb_ipvs_table_order_ok", **labels) == 1.0
    info = "bgplb_ipvs_table_fingerprint_info"
    assert value(m, info, **labels, fingerprint="0123456789abcdef") == 1.0
    m.set_pool_tables([PoolView("web", POOL_VS, False, "fedcba9876543210", ())])
    assert value(m, "bgplb_ipvs_table_order_ok", **labels) == 0.0
    assert list(samples(m, info).values()) == [1.0]  # the old fingerprint's series is gone
    assert value(m, info, **labels, fingerprint="fedcba9876543210") == 1.0
    m.set_pool_tables([])
    assert samples(m, info) == {}
    assert samples(m, "bgplb_ipvs_table_order_ok") == {}


def test_pool_families_are_absent_from_the_text_without_pool_services() -> None:
    m = Metrics()
    assert b"bgplb_ipvs_table" not in m.exposition()
    m.set_pool_tables([POOL_VIEW])
    assert b'bgplb_ipvs_table_order_ok{service="web"' in m.exposition()
