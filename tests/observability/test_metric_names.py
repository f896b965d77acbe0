"""Every bgplb_* name a dashboard or alert reads is one the agent exposes (agent/bgplb/metrics.py),
IPVS families included (fed from an observed dataplane, as the agent does at scrape time)."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
import yaml

from bgplb.metrics import Metrics
from bgplb.model import IPVSCounters, ObservedDataplane, Protocol, RealServerKey, VirtualServiceKey

from .conftest import DASHBOARDS

pytestmark = pytest.mark.observability

NAME = re.compile(r"\bbgplb_\w+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _exposed() -> set[str]:
    vs = VirtualServiceKey(ipaddress.ip_address("10.99.0.3"), 80, Protocol.TCP)
    rs = RealServerKey(vs, ipaddress.ip_address("10.0.1.2"), 8080)
    observed = ObservedDataplane(
        service_counters={vs: IPVSCounters(1, 2, 3, 4, 5, 6, 7)},
        real_server_counters={rs: IPVSCounters(1, 2, 3, 4, 5, 6, 7)},
    )
    m = Metrics(dataplane=lambda: observed)
    names = set()
    for family in m.registry.collect():
        names |= {family.name + s for s in SUFFIXES.get(family.type, ("",))}
    return names


def _used() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        for p in json.loads(path.read_text())["panels"]:
            for t in p.get("targets", []):
                for name in NAME.findall(t["expr"]):
                    used.setdefault(name, set()).add(f"{path.name}: {p['title']}")
    for rule in yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())["groups"][0]["rules"]:
        for name in NAME.findall(rule["expr"]):
            used.setdefault(name, set()).add(f"alerts.yml: {rule['alert']}")
    return used


def test_every_metric_read_by_dashboards_and_alerts_is_exposed() -> None:
    exposed = _exposed()
    assert "bgplb_ipvs_real_server_bytes_total" in exposed  # the IPVS families are there
    missing = {name: where for name, where in _used().items() if name not in exposed}
    assert not missing, f"not exposed by the agent: {missing}"


def test_the_ipvs_panels_are_covered_by_this_check() -> None:
    used = _used()
    ipvs = {n for n in used if n.startswith("bgplb_ipvs_")}
    assert ipvs == {
        "bgplb_ipvs_bytes_total",
        "bgplb_ipvs_connections_total",
        "bgplb_ipvs_real_server_active_connections",
        "bgplb_ipvs_real_server_inactive_connections",
        "bgplb_ipvs_real_server_packets_total",
        "bgplb_ipvs_real_server_bytes_total",
        "bgplb_ipvs_table_fingerprint_info",  # pool mode (BgplbPoolTableMismatch)
    }
