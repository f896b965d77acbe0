"""The dashboards and alert rules against live data from the ECMP lab (issue 6).

A real Prometheus (Debian's package; temporary TSDB, 1 s scrapes, alert ``for:`` shortened by
tests/observability/prom.py) runs in r1's namespace and scrapes the metrics listener of every
agent (node.api.metrics_listen in containerlab/*/lb*/config.yaml). Here the nodes run IPVS,
so every panel query and alert selector must return series, the IPVS and real-server ones
included; only the pool-mode table fingerprint (no service here sets preserve_connections)
may be, and must be, empty. Runs after test_ecmp.py on the same lab (conftest.py) and leaves
it as it found it.

Set BGPLB_RENDER_PNG=DIR (a directory under _work/ when the lab runs in the VM) to also write
the dashboards rendered from this data.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.agent_proc import promtool_check
from tests.observability.expected import (
    NO_POOL_HERE,
    NO_POOL_METRICS,
    NO_UCMP_HERE,
    NO_UCMP_METRICS,
)
from tests.observability.prom import PromServer

from .marks import LAB
from .observe import _parallel, agent_settings, fib_snapshot
from .runner import REPO, Lab
from .scenario import spread, wait_membership

pytestmark = [
    *LAB,
    pytest.mark.skipif(not shutil.which("prometheus"), reason="needs prometheus"),
]

DASHBOARDS = REPO / "dashboards"
LBS = ["lb1", "lb2", "lb3"]
SERVICE = "web"


def _metrics_target(lab: Lab, node: str) -> str:
    api = agent_settings(lab, node)["node"]["api"]
    return f"{api['metrics_listen']}:{api['metrics_port']}"


def _session_address(lab: Lab, node: str, router: str) -> str:
    """The node's own address on its session with ``router`` (what the router peers with)."""
    (peer,) = [x for x in agent_settings(lab, node)["peers"] if x["name"] == router]
    return str(peer["local_address"])


@pytest.fixture(scope="module")
def prom(lab: Lab) -> Iterator[PromServer]:
    workdir = lab.dir / "prometheus"
    workdir.mkdir(exist_ok=True)
    targets = {n: _metrics_target(lab, n) for n in LBS}
    server = PromServer(lab.ns("r1"), workdir, targets, DASHBOARDS / "alerts.yml")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _all_up(p: PromServer) -> None:
    p.wait(lambda: p.count('up{job="bgplb"} == 1') == len(LBS), 60, "every agent up")


def test_every_metrics_listener_passes_promtool(lab: Lab, prom: PromServer) -> None:
    """``curl /metrics | promtool check metrics``, from the router, for every agent."""
    urls = [f"http://{_metrics_target(lab, n)}/metrics" for n in LBS]
    curl = ["ip", "netns", "exec", lab.ns("r1"), "curl", "-sf", "--max-time", "30"]
    for url, text in zip(urls, _parallel([[*curl, u] for u in urls]), strict=True):
        assert "bgplb_ipvs_connections_total{" in text, url
        assert promtool_check(text) == "", url


def test_every_panel_query_and_alert_selector_returns_series(lab: Lab, prom: PromServer) -> None:
    p = prom
    _all_up(p)
    nodes = {r["metric"]["node"] for r in p.query("bgplb_build_info")}
    assert nodes == set(LBS)
    # every node announces both VIPs of web to both routers
    announced = f'bgplb_routes_advertised{{service="{SERVICE}"}} == 2'
    p.wait(lambda: p.count(announced) == 2 * len(LBS), 60, "web announced to every router")
    sp = spread(lab, count=60)  # traffic through both routers to every node's IPVS
    assert sp.failures == 0, sp.errors
    traffic = "sum by (node) (rate(bgplb_ipvs_bytes_total[10s])) > 0"
    p.wait(lambda: p.count(traffic) == len(LBS), 60, "IPVS traffic on every node")
    rates = "rate(bgplb_reconcile_duration_seconds_count[10s]) > 0"
    p.wait(lambda: p.count(rates) == len(LBS), 60, "reconcile rates on every node")
    # IPVS is here: only the pool-mode table fingerprint may be empty (no service of this lab
    # sets preserve_connections, so it exists on no node) and no service sets link_bandwidth:
    # exactly those expressions. Every session has BFD (fleet.yaml), so the BFD panels and
    # the BFD alert's selector must return series.
    argv = [sys.executable, DASHBOARDS / "validate.py", "--prom", p.url]
    allow = f"(?:{NO_POOL_METRICS})|(?:{NO_UCMP_METRICS})"
    res = p.run_in_ns(*argv, "--allow-empty", allow, timeout=600)
    print(res.stdout.splitlines()[-1] if res.stdout else res.stderr)
    assert res.returncode == 0, res.stdout + res.stderr
    skipped = {
        line.removeprefix("skipped (allowed empty): ").split(": ")[0]
        for line in res.stdout.splitlines()
        if line.startswith("skipped")
    }
    assert skipped == NO_POOL_HERE | NO_UCMP_HERE, res.stdout  # none of NO_BFD_HERE
    if os.environ.get("BGPLB_RENDER_PNG"):
        _render(lab, p, Path(os.environ["BGPLB_RENDER_PNG"]))


def test_withdrawn_and_session_down_alerts_fire_and_clear(lab: Lab, prom: PromServer) -> None:
    p = prom
    _all_up(p)
    p.wait(lambda: not p.alerts("firing") and not p.alerts("pending"), 60, "no alerts before")
    r1 = lab.routers["r1"]
    lb2 = _session_address(lab, "lb2", "r1")
    bgp = ["configure terminal", "router bgp 65000"]
    baseline = fib_snapshot(lab)

    t0 = time.monotonic()
    for node in LBS:  # web's only real server on every node: withdrawn everywhere
        lab.stop_process(node, "backend", kill=True)
    r1.vtysh(*bgp, f"neighbor {lb2} shutdown")
    p.wait(
        lambda: p.firing("BgplbServiceWithdrawnEverywhere", service=SERVICE, severity="critical"),
        90,
        "withdrawn everywhere fires",
    )
    p.wait(lambda: p.firing("BgplbBgpSessionDown", node="lb2"), 90, "session down fires")
    p.wait(lambda: p.firing("BgplbRealServerDown", service=SERVICE), 90, "real server fires")
    fired = time.monotonic() - t0
    # Quiet meanwhile: every agent is up, nothing is advertised while unhealthy, and only lb2's
    # session to r1 is down (its session to r2 and the other nodes' sessions stay up).
    assert not p.active("BgplbAgentDown")
    assert not p.active("BgplbAdvertisedWhileUnhealthy")
    down = {
        (a["node"], a.get("peer", ""))
        for a in p.alerts("firing") + p.alerts("pending")
        if a["alertname"] == "BgplbBgpSessionDown"
    }
    assert {n for n, _ in down} == {"lb2"}, down
    assert len(down) == 1, down

    t1 = time.monotonic()
    for node in LBS:
        lab.start_backend(node)
    r1.vtysh(*bgp, f"no neighbor {lb2} shutdown")
    p.wait(lambda: not p.active("BgplbServiceWithdrawnEverywhere"), 120, "withdrawn clears")
    p.wait(lambda: not p.active("BgplbBgpSessionDown"), 120, "session down clears")
    p.wait(lambda: not p.active("BgplbRealServerDown"), 120, "real server clears")
    for node in LBS:  # the lab as we found it: every node back in every FIB
        wait_membership(lab, node, True, 180, time.monotonic(), baseline)
    print(
        f"alerts fired {fired:.1f} s after the failure, cleared {time.monotonic() - t1:.1f} s"
        " after recovery"
    )


def _render(lab: Lab, p: PromServer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    window = str(int(max(60.0, time.monotonic() - p.started_at)))
    for name, extra in (("fleet", []), ("node", ["--var", "node=lb2"])):
        target = lab.dir / "prometheus" / f"{name}.png"
        res = p.run_in_ns(
            sys.executable,
            DASHBOARDS / "render.py",
            p.url,
            DASHBOARDS / f"{name}.json",
            target,
            "--window",
            window,
            *extra,
            timeout=600,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        shutil.copyfile(target, out / f"dashboard-{name}.png")
