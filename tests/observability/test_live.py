"""Live: two real agents (``bgp-lb run``, 2 services each) peering with a real FRR router, a
real Prometheus scraping them, the dashboards and alert rules checked against that data.

Topology (tests.harness.frr): r1 (FRR) -- lb1, lb2 (agents in announce mode, VIPs on lo).
Prometheus runs in r1's namespace and scrapes each agent's metrics listener on its LB address
(node.api.metrics_listen), with ``node`` set by file_sd. There is no IPVS on this host, so the
IPVS and real-server queries may be empty here (they are checked in the ECMP lab,
tests/lab/test_observability.py); every other panel query and alert selector must return series.

Set BGPLB_RENDER_PNG=1 to also write the pictures to docs/img/.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.agent_proc import (
    BGP_LB,
    FAST_CHECK,
    AgentProc,
    Backend,
    _curl,
    base_config,
    peer,
    promtool_check,
    service,
)
from tests.harness.frr import BgpLab, build_bgp_lab, close_bgp_lab, pid_alive
from tests.harness.netns import kill_pids, run, tempdir
from tests.harness.vm import running_kernel_has_dataplane

from .conftest import DASHBOARDS, REPO
from .expected import NO_BFD_HERE, NO_BFD_METRICS, NO_POOL_HERE
from .prom import SLOW, PromServer

pytestmark = pytest.mark.observability

METRICS_PORT = 9181
TCP_API_CHECK = {
    "type": "tcp",
    "address": "127.0.0.1",
    "port": 9180,
    "interval": 0.5,
    "timeout": 0.3,
}
# On a kernel with IPVS + dummy each node also has an IPVS-mode service whose real server is
# the node's backend, and every query must return series (elsewhere tests/lab covers IPVS).
IPVS = running_kernel_has_dataplane()
IPVS_VIP = "10.99.0.3"
SERVICES = 3 if IPVS else 2
# What a host without IPVS cannot fill (announce-mode services have no real servers).
NO_IPVS_HERE = r"bgplb_(ipvs_.*|real_server_healthy|vip_inbound_packets_per_second)"
EXPECTED_EMPTY = (
    NO_POOL_HERE
    | NO_BFD_HERE
    | (
        set()
        if IPVS
        else {
            "fleet.json panel 11 'Traffic share per node (bytes)' A",
            "fleet.json panel 12 'New connections per node' A",
            "fleet.json panel 13 'Inbound packets per VIP' A",
            "fleet.json panel 14 'Active connections per real server, by node' A",
            "node.json panel 8 'Connections' A",
            "node.json panel 8 'Connections' B",
            "node.json panel 9 'Packets' A",
            "node.json panel 10 'Bytes' A",
            "node.json panel 11 'Real server health' A",
            "alert BgplbRealServerDown selector",
        }
    )
)

if os.geteuid() != 0 or not shutil.which("vtysh") or not shutil.which("prometheus"):
    pytest.skip("live observability tests need root, FRR and prometheus", allow_module_level=True)


@dataclass
class Stack:
    bl: BgpLab
    agents: list[tuple[AgentProc, Backend]]
    prom: PromServer


# Upper bounds for start-up; generous because under TCG (the VM run) a Python process takes
# seconds to start. The harness's own waits (10 s backend, 20 s API) are tuned for the host.
START_WITHIN = 180.0


class PatientBackend(Backend):
    def start(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            argv = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "http.server"]
            argv += ["--bind", self.address, "--directory", str(self.directory), "8080"]
            self.proc = subprocess.Popen(
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
        _wait_http(self.ns, f"http://{self.address}:8080/", self.proc)


class PatientAgent(AgentProc):
    def start(self) -> None:
        self.write_config()
        argv = ["ip", "netns", "exec", self.ns, str(BGP_LB), "run", str(self.config_path)]
        argv += ["--log-format", "json", "--log-level", "debug"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env
            )
        self.runs += 1
        _wait_http(self.ns, f"{self.api}/healthz", self.proc, self.log_text)


def _wait_http(
    ns: str, url: str, proc: subprocess.Popen[bytes], log: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + START_WITHIN
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n{log()}")
        with contextlib.suppress(subprocess.TimeoutExpired):
            if _curl(ns, url, check=False, timeout=10)[0]:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} in {ns} did not answer within {START_WITHIN} s:\n{log()}")


def _agent(bl: BgpLab, n: int) -> tuple[AgentProc, Backend]:
    workdir = tempdir("agent")
    (workdir / "www").mkdir()
    (workdir / "www" / "index.html").write_text("ok\n")
    # UCMP: web carries the link-bandwidth community (lbN: capacity N), so the
    # BgplbLinkBandwidthMissing selector has series here
    web = service("web", ["10.99.0.1"], bl.lb_v4(n), link_bandwidth={"capacity": n})
    api = {**service("api", ["10.99.0.2"], bl.lb_v4(n)), "checks": [TCP_API_CHECK]}
    services = [web, api]
    if IPVS:
        check = {"type": "http", **FAST_CHECK, "port": 8080}
        rs = {"address": bl.lb_v4(n), "checks": [check]}
        port = {"port": 80, "target_port": 8080, "scheduler": "rr"}
        services.append(
            {
                "name": "shop",
                "vips": [IPVS_VIP],
                "mode": "ipvs",
                "ports": [port],
                "real_servers": [rs],
            }
        )
    config = base_config(workdir, bl, n, [peer(bl, n)], services)
    config["node"]["api"] |= {"metrics_listen": bl.lb_v4(n), "metrics_port": METRICS_PORT}
    config["node"]["api"].pop("token_file")
    ns = bl.lb_ns[n - 1]
    return PatientAgent(ns, workdir, config), PatientBackend(ns, bl.lb_v4(n), workdir / "www")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    frr_dir = tempdir("frr")
    os.chmod(frr_dir, 0o755)  # the FRR daemons run as user frr
    bl = build_bgp_lab(frr_dir, n_lbs=2)
    bl.router.command_timeout = 10.0 * SLOW  # vtysh calls in the TCG guest
    agents: list[tuple[AgentProc, Backend]] = []
    prom = PromServer(
        bl.router.ns,
        tempdir("prom"),
        {f"lb{n}": f"{bl.lb_v4(n)}:{METRICS_PORT}" for n in (1, 2)},
        DASHBOARDS / "alerts.yml",
    )
    try:
        for n in (1, 2):
            agent, backend = _agent(bl, n)
            agents.append((agent, backend))
            backend.start()
            agent.start()
        prom.start()
        yield Stack(bl, agents, prom)
    finally:
        prom.stop()
        for agent, backend in agents:
            agent.kill()
            backend.stop()
            with contextlib.suppress(AssertionError):  # a non-JSON line (config error)
                kill_pids([p for p in agent.exabgp_pids() if pid_alive(p)])
            shutil.rmtree(agent.workdir, ignore_errors=True)
        close_bgp_lab(bl)
        shutil.rmtree(prom.workdir, ignore_errors=True)
        print(f"\nprometheus timings (s after start): {prom.timings}")


def _traffic(stack: Stack, requests: int = 60) -> None:
    """HTTP requests from r1 to the IPVS VIP; r1 hashes flows over both nodes (L4)."""
    ns = stack.bl.router.ns
    run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")
    curl = f"curl -s -o /dev/null --max-time 2 http://{IPVS_VIP}/"
    loop = f"for i in $(seq {requests}); do {curl}; done"
    run("ip", "netns", "exec", ns, "bash", "-c", loop, timeout=120 * SLOW)


def test_agent_metrics_pass_promtool(stack: Stack) -> None:
    """``curl /metrics | promtool check metrics`` on both listeners of every agent."""
    for n, (agent, _) in enumerate(stack.agents, start=1):
        for url in (f"{agent.api}/metrics", f"http://{stack.bl.lb_v4(n)}:{METRICS_PORT}/metrics"):
            text = _curl(agent.ns, url, timeout=10 * SLOW)[1]
            assert "bgplb_service_decision" in text
            assert promtool_check(text) == "", url


def test_prometheus_scrapes_every_agent(stack: Stack) -> None:
    p = stack.prom
    p.wait(lambda: p.count('up{job="bgplb"} == 1') == 2, 30, "both agents up")
    nodes = {r["metric"]["node"] for r in p.query("bgplb_build_info")}
    assert nodes == {"lb1", "lb2"}
    # 2 nodes x 2 services, each announced by the agent to r1.
    p.wait(lambda: p.count("bgplb_routes_advertised == 1") == 4, 30, "4 routes advertised")
    assert p.count('bgplb_service_decision{decision="announce"} == 1') == 4


def test_every_panel_query_and_alert_selector_returns_series(stack: Stack) -> None:
    p = stack.prom
    p.wait(lambda: p.count('up{job="bgplb"} == 1') == 2, 30, "both agents up")
    # rate() needs two samples of each histogram bucket.
    rate = "rate(bgplb_reconcile_duration_seconds_count[10s]) > 0"
    p.wait(lambda: p.count(rate) == 2, 30, "rates available")
    if IPVS:
        _traffic(stack)
        traffic = "sum by (node) (rate(bgplb_ipvs_bytes_total[10s])) > 0"
        p.wait(lambda: p.count(traffic) >= 1, 30, "IPVS traffic seen")
    argv = [sys.executable, DASHBOARDS / "validate.py", "--prom", p.url]
    res = p.run_in_ns(*argv, "--allow-empty", f"(?:{NO_IPVS_HERE})|(?:{NO_BFD_METRICS})")
    assert res.returncode == 0, res.stdout + res.stderr
    skipped = {
        line.removeprefix("skipped (allowed empty): ").split(": ")[0]
        for line in res.stdout.splitlines()
        if line.startswith("skipped")
    }
    assert skipped == EXPECTED_EMPTY, res.stdout
    print(res.stdout.splitlines()[-1])
    # The same run without the allowance fails, on exactly those queries.
    strict = p.run_in_ns(*argv)
    assert strict.returncode == 1
    assert strict.stdout.count("no series") == len(EXPECTED_EMPTY), strict.stdout


def test_withdrawn_and_session_down_alerts_fire_and_clear(stack: Stack) -> None:
    p, bl = stack.prom, stack.bl
    p.wait(lambda: p.count('up{job="bgplb"} == 1') == 2, 30, "both agents up")
    p.wait(lambda: not p.alerts("firing") and not p.alerts("pending"), 30, "no alerts before")
    lb2 = bl.lb_v4(2)
    bgp = ["configure terminal", f"router bgp {bl.router.asn}"]

    t0 = time.monotonic()
    for _, backend in stack.agents:
        backend.stop()  # web's http check fails on both nodes; api's tcp check stays up
    bl.router.vtysh(*bgp, f"neighbor {lb2} shutdown")
    p.wait(
        lambda: p.firing("BgplbServiceWithdrawnEverywhere", service="web", severity="critical"),
        30,
        "withdrawn everywhere fires",
    )
    p.wait(
        lambda: p.firing("BgplbBgpSessionDown", node="lb2", peer=bl.r1_v4(2)),
        30,
        "session down fires",
    )
    fired = time.monotonic() - t0
    firing = p.query('ALERTS{alertstate="firing"}')
    names = {
        (a["metric"]["alertname"], a["metric"].get("service", a["metric"].get("node")))
        for a in firing
    }
    assert ("BgplbServiceWithdrawnEverywhere", "web") in names
    assert ("BgplbBgpSessionDown", "lb2") in names
    # Quiet while that happens: api is still announced, nothing advertises while unhealthy.
    assert ("BgplbServiceWithdrawnEverywhere", "api") not in names
    assert not p.active("BgplbAdvertisedWhileUnhealthy")
    assert not p.active("BgplbAgentDown")

    t1 = time.monotonic()
    for _, backend in stack.agents:
        backend.start()
    bl.router.vtysh(*bgp, f"no neighbor {lb2} shutdown")
    p.wait(lambda: not p.active("BgplbServiceWithdrawnEverywhere"), 60, "withdrawn clears")
    p.wait(lambda: not p.active("BgplbBgpSessionDown"), 90, "session down clears")
    p.wait(lambda: p.count("bgplb_routes_advertised == 1") == 2 * SERVICES, 60, "routes back")
    print(
        f"alerts fired {fired:.1f} s after the failure, cleared {time.monotonic() - t1:.1f} s"
        " after recovery"
    )


def _render(stack: Stack, name: str, out: Path, window: float, *extra: str) -> str:
    res = stack.prom.run_in_ns(
        sys.executable,
        DASHBOARDS / "render.py",
        stack.prom.url,
        DASHBOARDS / name,
        out,
        "--window",
        str(int(window)),
        *extra,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return res.stdout


def test_dashboards_render_from_live_data(stack: Stack, tmp_path: Path) -> None:
    window = max(30.0, time.monotonic() - stack.prom.started_at)
    fleet = _render(stack, "fleet.json", tmp_path / "fleet.png", window)
    assert "12 panels" in fleet  # 9 + per-VIP rate, connections per real server, fingerprints
    node = _render(stack, "node.json", tmp_path / "node.png", window, "--var", "node=lb2")
    # 15 + the event loop lag panel (issue 13, item 8) + the BFD row's 2 (issue 14)
    assert "18 panels" in node
    if os.environ.get("BGPLB_RENDER_PNG"):  # a directory, or 1 for docs/img
        img = Path(os.environ["BGPLB_RENDER_PNG"])
        img = REPO / "docs" / "img" if str(img) == "1" else img
        img.mkdir(parents=True, exist_ok=True)
        for f in ("fleet.png", "node.png"):
            shutil.copyfile(tmp_path / f, img / f"dashboard-{f}")
