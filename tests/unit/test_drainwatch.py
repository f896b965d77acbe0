"""Issue 15 item 5: the per-VIP inbound traffic (kernel counters -> sums, the metric, the
status, the traffic endpoint) and ``drain --wait``'s rate tracking."""

from __future__ import annotations

import asyncio
import errno
import io
import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from pyroute2.netlink.exceptions import NetlinkError

from bgplb import api
from bgplb.api import build_app, openapi_document
from bgplb.cli import _parser
from bgplb.client import run_client_command
from bgplb.dataplane.base import DataplaneError
from bgplb.dataplane.ipvs import IpvsTable, decode_service
from bgplb.drainwatch import RateTracker, StillBusy, WatchSettings, rate_line, watch_traffic
from bgplb.metrics import Metrics
from bgplb.model import IPVSCounters, ObservedDataplane, Protocol, ServiceMode, VirtualServiceKey
from bgplb.status import TrafficResponse, VipTraffic
from bgplb.traffic import inbound_rates, traffic_response, vip_services

from .fixtures import announce_service, config, ipvs_service
from .test_agent import Harness, raw_config
from .test_api_support import TOKEN, FakeControl
from .test_dataplane_ownership import _round_trip

V4 = ipaddress.ip_address("10.99.0.1")
V6 = ipaddress.ip_address("2001:db8::1")
WEB80 = VirtualServiceKey(V4, 80, Protocol.TCP)
WEB443 = VirtualServiceKey(V4, 443, Protocol.TCP)
WEB6 = VirtualServiceKey(V6, 80, Protocol.TCP)


def cfg() -> Any:
    return config(
        ipvs_service("web", vips=(str(V4), str(V6)), ports=(80, 443)),
        announce_service("dns"),
    )


def counters(packets: int, pps: int = 0) -> IPVSCounters:
    return IPVSCounters(packets_in=packets, packets_in_per_second=pps)


# --------------------------------------------------------------------------- kernel side


def test_decode_service_reads_the_kernels_inbound_rate_estimator() -> None:
    stats = {"attrs": [("IPVS_STATS_ATTR_INPKTS", 1234), ("IPVS_STATS_ATTR_INPPS", 57)]}
    msg = _round_trip(
        [
            ("IPVS_SVC_ATTR_AF", socket.AF_INET),
            ("IPVS_SVC_ATTR_PROTOCOL", socket.IPPROTO_TCP),
            ("IPVS_SVC_ATTR_ADDR", str(V4)),
            ("IPVS_SVC_ATTR_PORT", 80),
            ("IPVS_SVC_ATTR_SCHED_NAME", "mh"),
            ("IPVS_SVC_ATTR_FLAGS", {"flags": 0, "mask": 0xFFFFFFFF}),
            ("IPVS_SVC_ATTR_STATS64", stats),
        ],
        "IPVS_CMD_ATTR_SERVICE",
    )
    decoded = decode_service(msg)
    assert decoded is not None
    assert decoded[1].packets_in == 1234
    assert decoded[1].packets_in_per_second == 57


class _GetSocket:
    """An AsyncIPVS stand-in: answers ``service get`` for the services it has."""

    def __init__(self, have: dict[VirtualServiceKey, int]) -> None:
        self.have = have
        self.calls: list[str] = []

    async def service(self, command: str, request: Any) -> list[Any]:
        self.calls.append(command)
        addr = ipaddress.ip_address(request.get("addr"))
        key = VirtualServiceKey(addr, request.get("port"), Protocol.TCP)
        if key not in self.have:
            raise NetlinkError(errno.ESRCH, "No such process")
        stats = {"attrs": [("IPVS_STATS_ATTR_INPKTS", self.have[key])]}
        return [
            _round_trip(
                [
                    ("IPVS_SVC_ATTR_AF", socket.AF_INET6 if addr.version == 6 else socket.AF_INET),
                    ("IPVS_SVC_ATTR_PROTOCOL", socket.IPPROTO_TCP),
                    ("IPVS_SVC_ATTR_ADDR", str(addr)),
                    ("IPVS_SVC_ATTR_PORT", key.port),
                    ("IPVS_SVC_ATTR_SCHED_NAME", "wlc"),
                    ("IPVS_SVC_ATTR_FLAGS", {"flags": 0, "mask": 0xFFFFFFFF}),
                    ("IPVS_SVC_ATTR_STATS64", stats),
                ],
                "IPVS_CMD_ATTR_SERVICE",
            )
        ]

    def close(self) -> None:
        pass


async def test_service_counters_gets_each_key_and_leaves_out_missing_ones() -> None:
    table = IpvsTable(None, 1.0)
    sock = _GetSocket({WEB80: 10, WEB6: 7})
    table._sock = sock
    got = await table.service_counters([WEB80, WEB443, WEB6])
    assert {k: c.packets_in for k, c in got.items()} == {WEB80: 10, WEB6: 7}
    assert sock.calls == ["get", "get", "get"]  # one GET per key, never a dump


# --------------------------------------------------------------------------- sums


def test_vip_sums_per_service_vip_and_announce_mode_has_none() -> None:
    c = cfg()
    assert vip_services(c.services) == {
        ("web", V4): (WEB80, WEB443),
        ("web", V6): (WEB6, VirtualServiceKey(V6, 443, Protocol.TCP)),
    }
    have = {WEB80: counters(100, 3), WEB443: counters(50, 2), WEB6: counters(9, 1)}
    answer = traffic_response(c.service("web"), have, 12.5)
    assert answer.ipvs
    assert answer.monotonic == 12.5
    assert answer.vips == [
        VipTraffic(vip=V4, packets_in=150, packets_in_per_second=5, virtual_services=2),
        VipTraffic(vip=V6, packets_in=9, packets_in_per_second=1, virtual_services=1),
    ]
    assert inbound_rates(c.service("web"), have) == {str(V4): 5, str(V6): 1}
    dns = traffic_response(c.service("dns"), have, 1.0)
    assert (dns.ipvs, dns.mode, dns.vips) == (False, ServiceMode.ANNOUNCE, [])


def test_vip_rate_metric_in_both_renderings() -> None:
    observed = ObservedDataplane(
        service_counters={WEB80: counters(100, 3), WEB443: counters(50, 2), WEB6: counters(9, 1)}
    )
    m = Metrics(dataplane=lambda: observed)
    m.set_vip_services(vip_services(cfg().services))
    name = "bgplb_vip_inbound_packets_per_second"
    fast = m.exposition().decode()
    assert f'{name}{{service="web",vip="10.99.0.1"}} 5.0' in fast
    assert f'{name}{{service="web",vip="2001:db8::1"}} 1.0' in fast
    assert f"# TYPE {name} gauge" in fast
    slow = generate_latest(m.registry).decode()
    assert f'{name}{{service="web",vip="10.99.0.1"}} 5.0' in slow
    assert f'{name}{{service="web",vip="2001:db8::1"}} 1.0' in slow
    assert "dns" not in [ln for ln in fast.splitlines() if ln.startswith(name)]


# --------------------------------------------------------------------------- agent, status


async def test_agent_traffic_reads_the_kernel_now_and_status_shows_the_estimator(
    tmp_path: Path,
) -> None:
    raw = raw_config(tmp_path)
    raw["services"].append(announce_service("dns", vips=("10.99.1.1",), interface="lo"))
    h = Harness(tmp_path, raw)
    key = VirtualServiceKey(ipaddress.ip_address("10.99.0.1"), 80, Protocol.TCP)
    await h.start()
    await h.until(lambda: key in h.dataplane.services)
    h.dataplane.counters[key] = counters(40, 4)
    await h.agent.reconciler.reconcile_once()
    web = h.agent.status().service("web")
    assert web is not None
    assert web.inbound_packets_per_second == {"10.99.0.1": 4}

    h.dataplane.counters[key] = counters(90, 4)  # newer than the last observation
    reads = h.dataplane.counter_reads
    answer = await h.agent.traffic("web")
    assert h.dataplane.counter_reads == reads + 1
    assert [(str(v.vip), v.packets_in) for v in answer.vips] == [("10.99.0.1", 90)]
    assert answer.monotonic == h.clock.now()
    dns = await h.agent.traffic("dns")
    assert dns.ipvs is False
    assert h.dataplane.counter_reads == reads + 1
    with pytest.raises(KeyError):
        await h.agent.traffic("nope")
    await h.stop()


# --------------------------------------------------------------------------- rates


def answer(t: float, *packets: int, service: str = "web", found: int = 1) -> TrafficResponse:
    vips = [
        VipTraffic(
            vip=ipaddress.ip_address(f"10.99.0.{i + 1}"),
            packets_in=p,
            packets_in_per_second=0,
            virtual_services=found,
        )
        for i, p in enumerate(packets)
    ]
    return TrafficResponse(
        service=service, mode=ServiceMode.IPVS, ipvs=True, monotonic=t, vips=vips
    )


def test_rates_come_from_counter_deltas_over_agent_time() -> None:
    t = RateTracker(threshold=1.0)
    assert t.update([answer(0.0, 100, 5)]) == {"web/10.99.0.1": None, "web/10.99.0.2": None}
    assert t.update([answer(2.0, 300, 5)]) == {"web/10.99.0.1": 100.0, "web/10.99.0.2": 0.0}
    assert t.quiet_for() == 0.0  # one VIP busy
    # the busy VIP stops: 0 at once (the kernel's estimator would still say ~75/s)
    assert t.update([answer(3.0, 300, 5)]) == {"web/10.99.0.1": 0.0, "web/10.99.0.2": 0.0}
    assert t.quiet_for() == 1.0  # quiet since the start of this sample
    t.update([answer(4.5, 301, 5)])  # 0.67/s: below 1/s
    assert t.quiet_for() == 2.5
    t.update([answer(5.0, 302, 5)])  # 2/s: at or above the threshold resets the run
    assert t.quiet_for() == 0.0
    t.update([answer(6.0, 302, 5)])
    assert t.quiet_for() == 1.0


def test_unknown_rates_restart_the_quiet_run() -> None:
    t = RateTracker(threshold=1.0)
    t.update([answer(0.0, 100)])
    t.update([answer(1.0, 100)])
    assert t.quiet_for() == 1.0
    assert t.update([answer(2.0, 5)]) == {"web/10.99.0.1": None}  # recreated: went backwards
    assert t.quiet_for() == 0.0
    t.update([answer(3.0, 5)])
    assert t.quiet_for() == 1.0
    assert t.update([answer(4.0, 5, found=2)]) == {"web/10.99.0.1": None}  # another port
    assert t.quiet_for() == 0.0


def test_rate_line_lists_few_vips_and_names_the_busiest_of_many() -> None:
    line = rate_line(3.04, {"web/10.99.0.1": 12.0, "web/10.99.0.2": None}, 1.0)
    assert line == "   3.0s  web/10.99.0.1 12.0/s  web/10.99.0.2 ?"
    many: dict[str, float | None] = {f"s/10.0.0.{i}": float(i) for i in range(20)}
    line = rate_line(1.0, many, 15.0)
    assert "20 VIPs, 5 at or above 15/s: s/10.0.0.19 19.0/s, s/10.0.0.18 18.0/s" in line


class Scripted:
    """A fake agent API (fetch) and a fake clock advanced only by sleep."""

    def __init__(self, rate: float, stop_at: float | None = None) -> None:
        self.now = 0.0
        self.packets = 0.0
        self.rate = rate
        self.stop_at = stop_at
        self.fetches: list[str] = []
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        busy = self.stop_at is None or self.now < self.stop_at
        self.now += seconds
        if busy:
            self.packets += self.rate * seconds

    def fetch(self, path: str) -> Any:
        self.fetches.append(path)
        self.now += 0.01  # each request takes a little time
        if path.endswith("/dns/traffic"):
            return {"service": "dns", "mode": "announce", "ipvs": False, "monotonic": self.now}
        return answer(self.now, int(self.packets)).model_dump(mode="json")


def test_watch_returns_once_quiet_for_the_quiet_time() -> None:
    s = Scripted(rate=200.0, stop_at=4.0)
    out = io.StringIO()
    watch_traffic(
        s.fetch,
        ["web"],
        out,
        settings=WatchSettings(threshold=1.0, quiet=5.0),
        deadline=300.0,
        clock=s.clock,
        sleep=s.sleep,
    )
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("watching inbound packets per VIP")
    assert "web/10.99.0.1 19" in lines[1]  # ~198/s in the first second
    assert lines[-1].startswith("quiet: every VIP below 1/s for 5.")
    # the traffic stopped at t=4: quiet from the first sample after it, 5 s later done
    assert 9.0 <= s.now <= 11.0
    assert all(0.9 <= d <= 1.0 for d in s.sleeps)  # about once a second
    assert all(p == "/api/v1/services/web/traffic" for p in s.fetches)


def test_watch_times_out_saying_what_the_rate_still_was() -> None:
    s = Scripted(rate=50.0)
    out = io.StringIO()
    with pytest.raises(StillBusy, match=r"web/10\.99\.0\.1 (49|50)\.\d/s"):
        watch_traffic(
            s.fetch,
            ["web"],
            out,
            settings=WatchSettings(),
            deadline=8.0,
            clock=s.clock,
            sleep=s.sleep,
        )
    assert 8.0 <= s.now <= 9.5


def test_watch_announce_mode_only_says_so() -> None:
    s = Scripted(rate=50.0)
    out = io.StringIO()
    watch_traffic(
        s.fetch,
        ["dns"],
        out,
        settings=WatchSettings(),
        deadline=8.0,
        clock=s.clock,
        sleep=s.sleep,
    )
    assert "dns: announce mode, the node has no IPVS counters for it" in out.getvalue()
    assert s.sleeps == []


# --------------------------------------------------------------------------- the API


@pytest.fixture
def control() -> FakeControl:
    return FakeControl()


@pytest.fixture
async def client(aiohttp_client: Any, control: FakeControl) -> Any:
    return await aiohttp_client(build_app(control, Metrics(), TOKEN))


async def test_traffic_endpoint(client: Any, control: FakeControl) -> None:
    resp = await client.get("/api/v1/services/web/traffic")  # read-only: no token
    assert resp.status == 200
    body = TrafficResponse.model_validate(await resp.json())
    assert body.ipvs
    assert body.vips[0].packets_in == 1000
    assert body.monotonic == 100.0
    dns = TrafficResponse.model_validate(
        await (await client.get("/api/v1/services/dns/traffic")).json()
    )
    assert (dns.ipvs, dns.vips) == (False, [])
    resp = await client.get("/api/v1/services/nope/traffic")
    assert (resp.status, (await resp.json())["error"]) == (404, "unknown service")
    resp = await client.get("/api/v1/services/bad%20name/traffic")
    assert (resp.status, (await resp.json())["error"]) == (400, "bad service name")
    assert control.calls == [("traffic", "web"), ("traffic", "dns")]


async def test_traffic_endpoint_kernel_failure_and_timeout_are_503(
    client: Any, control: FakeControl, monkeypatch: pytest.MonkeyPatch
) -> None:
    control.traffic_error = DataplaneError("read IPVS counters: get IPVS service: no answer")
    resp = await client.get("/api/v1/services/web/traffic")
    assert resp.status == 503
    assert "no answer" in (await resp.json())["detail"]
    control.traffic_error = None
    control.hang = True
    monkeypatch.setattr(api, "TRAFFIC_TIMEOUT", 0.01)
    resp = await client.get("/api/v1/services/web/traffic")
    assert (resp.status, (await resp.json())["error"]) == (503, "traffic timed out")


def test_openapi_documents_the_traffic_endpoint() -> None:
    doc = openapi_document()
    op = doc["paths"]["/api/v1/services/{name}/traffic"]["get"]
    assert "security" not in op
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/TrafficResponse"}
    assert {"TrafficResponse", "VipTraffic"} <= set(doc["components"]["schemas"])
    assert (
        "inbound_packets_per_second" in doc["components"]["schemas"]["ServiceStatus"]["properties"]
    )


# --------------------------------------------------------------------------- the CLI


async def run_cli(control: FakeControl, base: str, *argv: str) -> tuple[int, str, str]:
    """``bgp-lb`` with a fake clock: each sleep moves the client's and the agent's time."""
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds
        control.now += seconds

    args = _parser().parse_args([*list(argv), "--api", base, "--token-file", TOKEN_FILE[0]])
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(
        run_client_command, args, out, err, sleep=sleep, clock=lambda: clock[0]
    )
    return code, out.getvalue(), err.getvalue()


TOKEN_FILE: list[str] = []


@pytest.fixture
async def base(aiohttp_server: Any, control: FakeControl, tmp_path: Path) -> str:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o600)
    TOKEN_FILE[:] = [str(f)]
    server = await aiohttp_server(build_app(control, Metrics(), TOKEN))
    return str(server.make_url("")).rstrip("/")


def traffic_until(control: FakeControl, rate: float, stop_at: float | None) -> None:
    """web receives ``rate`` packets/s of agent time until ``stop_at`` (None: forever)."""
    last = [control.now]

    def hook(service: str) -> None:
        end = control.now if stop_at is None else min(control.now, stop_at)
        control.web_packets += int(rate * max(0.0, end - last[0]))
        last[0] = control.now

    control.traffic_hook = hook


async def test_drain_wait_watches_the_rate_until_quiet(control: FakeControl, base: str) -> None:
    traffic_until(control, rate=300.0, stop_at=103.0)  # the agent's clock starts at 100
    code, out, err = await run_cli(control, base, "drain", "web", "--wait")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:2] == ["drained web", "withdrawn"]
    assert lines[2].startswith("watching inbound packets per VIP")
    assert "web/198.51.100.10 300.0/s" in lines[3]
    assert "web/198.51.100.10 0.0/s" in lines[-2]
    assert lines[-1].startswith("quiet: every VIP below 1/s for 5.")
    assert 5 + 3 <= len(lines) - 4 <= 5 + 4  # ~1 line a second: 3 busy + 5 quiet seconds


async def test_drain_wait_threshold_flag(control: FakeControl, base: str) -> None:
    traffic_until(control, rate=3.0, stop_at=None)  # 3/s forever: quiet only above 5/s
    code, out, _ = await run_cli(
        control, base, "drain", "web", "--wait", "--threshold", "5", "--quiet", "2"
    )
    assert code == 0
    assert "quiet: every VIP below 5/s for 2." in out


async def test_drain_wait_timeout_exits_1_with_the_rate(control: FakeControl, base: str) -> None:
    traffic_until(control, rate=40.0, stop_at=None)
    code, out, err = await run_cli(control, base, "drain", "web", "--wait", "--timeout", "6")
    assert code == 1
    assert "traffic still arriving at the timeout: web/198.51.100.10 40.0/s" in err
    assert "(6 s after the drain)" in err
    assert out.count("40.0/s") >= 4


async def test_drain_wait_announce_mode_only_waits_for_the_withdraw(
    control: FakeControl, base: str
) -> None:
    code, out, err = await run_cli(control, base, "drain", "dns", "--wait")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "drained dns",
        "withdrawn",
        "dns: announce mode, the node has no IPVS counters for it: waited for the withdraw only",
    ]
    assert ("traffic", "dns") not in control.calls


async def test_drain_all_wait_watches_every_ipvs_service(control: FakeControl, base: str) -> None:
    traffic_until(control, rate=10.0, stop_at=102.0)
    code, out, err = await run_cli(control, base, "drain", "--all", "--wait")
    assert (code, err) == (0, "")
    assert "dns: announce mode" in out
    assert "web/198.51.100.10 10.0/s" in out
    assert out.splitlines()[-1].startswith("quiet:")
    assert ("drain", None) in control.calls
