"""`/metrics` and `/api/v1/status` hammered while 30 reloads add and remove 100 services
(issue 13, defect 4: /metrics rendered in a thread while the loop mutates the same dicts)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.agent_proc import BACKEND_PORT, AgentFactory
from tests.harness.figures import count
from tests.harness.frr import wait_until
from tests.harness.route_sampler import flaps

from .common import CONVERGE, VIP, Api, one_lb, sampler

pytestmark = pytest.mark.faults

CLIENTS = 4
# Between two requests of one client. 0 made the 30 reloads take 354 s at load 17 once /metrics
# got fast (the loop served ~13 requests/s and the reloads waited behind them); 10 ms keeps the
# pressure (each client is back at once) and the suite's runtime bounded.
PAUSE = 0.01
RELOADS = 30
EXTRA = 100


def _extra_services(address: str) -> list[dict[str, Any]]:
    return [
        {
            "name": f"svc{i:03d}",
            "mode": "announce",
            "interface": "lo",
            "vips": [f"10.99.1.{i}"],
            "checks": [
                {
                    "type": "tcp",
                    "address": address,
                    "port": BACKEND_PORT,
                    "interval": 1.0,
                    "fast_interval": 0.3,
                    "timeout": 0.8,
                    "rise": 1,
                    "fall": 3,
                }
            ],
        }
        for i in range(EXTRA)
    ]


class Hammer:
    """``CLIENTS`` threads, each on its own keep-alive connection, alternating GET /metrics
    and GET /api/v1/status, ``PAUSE`` apart."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.codes: Counter[tuple[str, int]] = Counter()
        self.failures: list[str] = []
        self.scrapes = 0
        self.reconnects = 0  # keep-alive connections the agent closed under a client
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _client(self) -> None:
        api = Api(self.ns, timeout=30)
        try:
            while not self.stop.is_set():
                for path in ("/metrics", "/api/v1/status"):
                    self._one(api, path)
                    self.stop.wait(PAUSE)
        finally:
            api.close()
            with self.lock:
                self.reconnects += api.reconnects

    def _one(self, api: Api, path: str) -> None:
        try:
            code, body = api.request("GET", path)
        except Exception as e:
            with self.lock:
                self.failures.append(f"{path}: {e!r}")
            api.close()
            return
        problem = None
        if code == 200 and path == "/metrics":
            try:
                list(text_string_to_metric_families(body.decode()))
            except Exception as e:
                problem = f"/metrics does not parse: {e!r}"
        elif code != 200:
            problem = f"{path}: {code} {body[:200]!r}"
        with self.lock:
            self.codes[(path, code)] += 1
            self.scrapes += path == "/metrics"
            if problem:
                self.failures.append(problem)


async def test_metrics_and_status_hammered_during_100_service_reloads(
    bgp_lab_factory: Any, agent_factory: AgentFactory
) -> None:
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory, log_level="info")
    base = list(agent.config["services"])
    extra = _extra_services(bl.lb_v4(1))
    control = Api(agent.ns)
    results = []
    t0 = time.monotonic()
    with sampler(bl) as s, Hammer(agent.ns) as hammer:
        for i in range(RELOADS):
            agent.config["services"] = base + extra if i % 2 == 0 else base
            agent.write_config()
            code, body = await asyncio.to_thread(control.json, "POST", "/api/v1/reload")
            results.append((code, body))
            await asyncio.sleep(0.3)
        report = s.stop()
    control.close()
    took = time.monotonic() - t0
    print(
        f"{RELOADS} reloads (+/-{EXTRA} services) in {took:.1f}s while {CLIENTS} clients made "
        f"{sum(hammer.codes.values())} requests ({hammer.scrapes} scrapes): {dict(hammer.codes)}; "
        f"failures {len(hammer.failures)}: {hammer.failures[:5]}"
    )
    print(f"web VIP during the run: {report.summary()}")
    count("faults_injected", RELOADS)
    count("wrong_announcements", flaps(report))
    count("requests_lost", sum(n for (_, code), n in hammer.codes.items() if code != 200))
    count("requests_lost", sum(c != 200 for c, _ in results))
    count("server_errors", sum(n for (_, code), n in hammer.codes.items() if code >= 500))
    assert [c for c, _ in results] == [200] * RELOADS, results
    assert all(b["ok"] for _, b in results), results
    assert hammer.scrapes >= RELOADS
    assert hammer.failures == []
    assert hammer.reconnects == 0
    assert {code for _, code in hammer.codes} == {200}
    assert agent.running()
    names = [x["name"] for x in agent.status()["services"]]
    assert names == ["web"]
    await wait_until(lambda: bl.router.fib_count() == 1, CONVERGE, interval=0.1)
    assert bl.router.fib(VIP) == [bl.lb_v4(1)]
