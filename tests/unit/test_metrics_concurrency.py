"""``/metrics`` is rendered in a worker thread while the event loop keeps updating the metrics.

The handler must take what the thread renders on the loop (an immutable snapshot): a scrape
during churn of checks, services, real servers, peers and IPVS observations never fails with
"dictionary changed size during iteration" and always parses.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import sys
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bgplb.admin import AdminState
from bgplb.api import build_metrics_app
from bgplb.health.tracker import CheckKey, CheckResult, CheckState
from bgplb.metrics import Metrics
from bgplb.model import (
    CheckStatus,
    Decision,
    IPVSCounters,
    ObservedDataplane,
    PeerState,
    PeerStatus,
    Protocol,
    RealServerKey,
    Reason,
    Route,
    VirtualServiceKey,
)
from bgplb.policy import ServiceDecision

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]

UP = CheckState(CheckStatus.UP, None, None, 3, 0)
DOWN = CheckState(CheckStatus.DOWN, None, None, 0, 2)
SERVICES = 100  # a sliding window over 2 x SERVICES names: every round adds and removes some
CHURN_SECONDS = 1.5
MIN_SCRAPES = 5  # however slow the machine: the churn runs that long at least


class Svc:
    def __init__(self, name: str) -> None:
        self.name = name


class Cfg:
    def __init__(self, names: list[str]) -> None:
        self.services = [Svc(n) for n in names]


def _window(round_: int) -> list[int]:
    start = (round_ * 7) % SERVICES
    return list(range(start, start + SERVICES))


@functools.cache
def _vip(i: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(f"10.99.{i // 250}.{1 + i % 250}")


@functools.cache
def _route(i: int) -> Route:
    return Route(ipaddress.ip_network(_vip(i)), None, service=f"s{i}")


def _observed(ids: list[int], round_: int) -> ObservedDataplane:
    vs = {i: VirtualServiceKey(_vip(i), 80, Protocol.TCP) for i in ids}
    c = IPVSCounters(1, 2, round_, 4, 5, 6, 7)
    return ObservedDataplane(
        service_counters={k: c for k in vs.values()},
        real_server_counters={
            RealServerKey(k, ipaddress.ip_address("192.0.2.10"), 8080): c for k in vs.values()
        },
    )


def churn(m: Metrics, current: list[ObservedDataplane | None]) -> Iterator[None]:
    """One round of what the agent does after a pass, with services coming and going."""
    round_ = 0
    while True:
        round_ += 1
        ids = _window(round_)
        names = [f"s{i}" for i in ids]
        states: dict[CheckKey, CheckState] = {}
        for i, name in zip(ids, names, strict=True):
            for t in range(1 + round_ % 2):  # real servers come and go too
                key = CheckKey(name, f"192.0.2.{10 + t}:8080", "http")
                state = UP if (i + round_) % 5 else DOWN
                states[key] = state
                m.record_check(key, CheckResult(state is UP, float(round_), 0.003), state)
            if i % 10 == 0:
                states[CheckKey(name, None, f"c{round_ % 3}")] = UP  # checks renamed
        m.set_check_states(states)
        m.set_decisions(
            {
                n: ServiceDecision(n, Decision.ANNOUNCE, Reason.HEALTHY)
                if i % 3
                else ServiceDecision(n, Decision.WITHDRAW, Reason.CHECK_FAILED)
                for i, n in zip(ids, names, strict=True)
            }
        )
        m.set_drained(AdminState(), Cfg(names))
        peers = [f"192.0.2.{1 + p}" for p in range(round_ % 4)]
        m.set_peers({p: PeerStatus(p, PeerState.UP) for p in peers})
        m.set_routes({p: frozenset(_route(i) for i in ids) for p in peers})
        current[0] = _observed(ids[:10], round_)  # IPVS: few, prometheus_client renders it
        yield


@pytest.fixture
def fine_switching() -> Iterator[None]:
    """Switch threads often, so that a race shows up within a short test."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.parametrize("openmetrics", [False, True])
async def test_scrapes_during_churn_never_fail(
    aiohttp_client: MakeClient, fine_switching: None, openmetrics: bool
) -> None:
    current: list[ObservedDataplane | None] = [None]
    m = Metrics(dataplane=lambda: current[0])
    rounds = churn(m, current)
    next(rounds)
    client = await aiohttp_client(build_metrics_app(m))
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
    stop = False

    async def mutate() -> None:
        while not stop:
            next(rounds)
            await asyncio.sleep(0)

    mutator = asyncio.create_task(mutate())
    statuses: list[int] = []
    deadline = time.monotonic() + CHURN_SECONDS
    try:
        while time.monotonic() < deadline or len(statuses) < MIN_SCRAPES:
            resp = await client.get("/metrics", headers=headers)
            body = await resp.text()
            statuses.append(resp.status)
            assert resp.status == 200, body[:500]
            if not openmetrics:
                names = {f.name for f in text_string_to_metric_families(body)}
                assert "bgplb_check_up" in names
    finally:
        stop = True
        await mutator


def test_a_snapshot_keeps_what_it_took() -> None:
    """What the thread renders is fixed when the loop takes it: later updates (a histogram
    observation included, its row is replaced, not changed) and removals do not show."""
    current: list[ObservedDataplane | None] = [_observed([1], 1)]
    m = Metrics(dataplane=lambda: current[0])
    key = CheckKey("s1", None, "http")
    m.record_check(key, CheckResult(True, 1.0, 0.003), UP)
    m.set_decisions({"s1": ServiceDecision("s1", Decision.ANNOUNCE, Reason.HEALTHY)})
    scrape = m.snapshot()
    before = scrape.render().decode()
    m.record_check(key, CheckResult(False, 2.0, 0.2), DOWN)
    m.set_decisions(
        {
            "s1": ServiceDecision("s1", Decision.WITHDRAW, Reason.CHECK_FAILED),
            "s2": ServiceDecision("s2", Decision.WITHDRAW, Reason.STARTING),
        }
    )
    current[0] = None
    assert scrape.render().decode() == before
    assert 'bgplb_check_duration_seconds_count{service="s1",check="http"} 1.0' in before
    assert "bgplb_ipvs_connections_total" in before
    now = m.exposition().decode()
    assert 'bgplb_check_duration_seconds_count{service="s1",check="http"} 2.0' in now
    assert 'service="s2"' in now
    assert "bgplb_ipvs_" not in now
