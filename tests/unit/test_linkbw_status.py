"""UCMP in `GET /status` and `bgp-lb status` (issue 14 item 3): per VIP of a service with
link_bandwidth, the healthy capacity now, the capacity announced (after the hold-down), the
community's bytes/s (null: zero capacity withdraws the VIP) and when a held-down change is
sent. The whole agent on fakes (dataplane, speaker, prober) with a FakeClock."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from bgplb.client import print_status
from bgplb.model import Decision
from bgplb.status import StatusResponse

from .fixtures import EBGP_PEER, ebgp_peer, ipvs_service, node, real_server, tcp_check
from .test_agent import Harness

WEB = "10.99.0.1"
API = "10.99.0.2"
WEB6 = "2001:db8::1"
HOLD = 10.0


def servers(name: str, count: int, prefix: str) -> list[dict[str, Any]]:
    """``count`` real servers of weight 1, each with its own check ``<name><i>`` (so the
    prober can fail one)."""
    return [
        real_server(
            f"{prefix}{i}",
            weight=1,
            checks=[
                tcp_check(
                    f"{name}{i}", interval=0.5, fast_interval=0.5, timeout=0.2, rise=1, fall=1
                )
            ],
        )
        for i in range(1, count + 1)
    ]


def raw(tmp_path: Path) -> dict[str, Any]:
    lb = {"hold_down": HOLD}
    return {
        "node": node(state_dir=str(tmp_path / "state"), shutdown_grace=0.1),
        "peers": [ebgp_peer(next_hop_v6="2001:db8::10")],
        "services": [
            ipvs_service(
                "web",
                vips=(WEB, WEB6),
                real_servers=servers("w", 4, "10.1.0.") + servers("v", 1, "2001:db8:1::"),
                link_bandwidth=lb,
            ),
            ipvs_service(
                "api", vips=(API,), real_servers=servers("a", 4, "10.2.0."), link_bandwidth=lb
            ),
            ipvs_service("plain", vips=("10.99.0.3",), real_servers=servers("p", 1, "10.3.0.")),
        ],
    }


def ucmp(status: StatusResponse, service: str) -> dict[str, dict[str, Any]]:
    svc = status.service(service)
    assert svc is not None
    return {str(b["vip"]): b for b in svc.model_dump(mode="json")["link_bandwidth"]}


def cli_lines(status: StatusResponse) -> list[str]:
    out = io.StringIO()
    print_status(status, out)
    return [line for line in out.getvalue().splitlines() if line.startswith("ucmp ")]


def settled(status: StatusResponse) -> bool:
    """Every link_bandwidth VIP shown, and none with a change waiting for the hold-down."""
    vips = [*ucmp(status, "web").values(), *ucmp(status, "api").values()]
    return len(vips) == 3 and all(b["change_in_seconds"] is None for b in vips)


async def started(tmp_path: Path, failing: set[str]) -> Harness:
    """The agent once its checks have had their probes and the capacities have settled (the
    servers come up one probe at a time: the first changes are sent at once, the rest wait
    for the hold-down)."""
    h = Harness(tmp_path, raw(tmp_path))
    h.prober.failing |= failing
    await h.start()
    await h.clock.advance(2.0)  # every check has had its probes
    await h.until(lambda: settled(h.agent.status()), limit=2 * HOLD)
    return h


async def test_status_shows_4_healthy_vs_2_and_nothing_for_a_plain_service(
    tmp_path: Path,
) -> None:
    h = await started(tmp_path, {"a3", "a4"})  # api: 2 of its 4 servers healthy
    st = h.agent.status()
    assert ucmp(st, "web")[WEB] == {
        "vip": WEB,
        "capacity": 4,
        "announced_capacity": 4,
        "bytes_per_second": 500_000,  # 4 x unit 125000
        "change_in_seconds": None,
    }
    assert ucmp(st, "web")[WEB6]["bytes_per_second"] == 125_000  # its own family: 1 server
    assert ucmp(st, "api")[API] == {
        "vip": API,
        "capacity": 2,
        "announced_capacity": 2,
        "bytes_per_second": 250_000,
        "change_in_seconds": None,
    }
    assert ucmp(st, "plain") == {}
    # the value shown is the one on the wire
    route = next(r for r in h.speaker.advertised()[EBGP_PEER] if str(r.prefix) == f"{API}/32")
    assert route.attributes.extended_communities == ("bandwidth:65001:250000",)
    assert cli_lines(st) == [
        f"ucmp web {WEB}: capacity 4, announced 4 (500000 bytes/s)",
        f"ucmp web {WEB6}: capacity 1, announced 1 (125000 bytes/s)",
        f"ucmp api {API}: capacity 2, announced 2 (250000 bytes/s)",
    ]
    assert await h.stop() == 0


async def test_a_server_down_inside_the_hold_down_shows_the_pending_change(
    tmp_path: Path,
) -> None:
    h = await started(tmp_path, set())
    h.prober.failing.add("w4")  # the first change: sent at once, starts the hold-down
    await h.until(lambda: ucmp(h.agent.status(), "web")[WEB]["announced_capacity"] == 3)
    changed = h.clock.now()  # the hold-down runs from the pass that sent it (just before)
    assert ucmp(h.agent.status(), "web")[WEB]["change_in_seconds"] is None
    await h.clock.advance(3.0)
    h.prober.failing.add("w3")  # inside the hold-down: waits
    await h.until(lambda: ucmp(h.agent.status(), "web")[WEB]["capacity"] == 2, limit=2.0)
    st = h.agent.status()
    web = ucmp(st, "web")[WEB]
    assert (web["capacity"], web["announced_capacity"], web["bytes_per_second"]) == (
        2,
        3,
        375_000,
    )
    left = web["change_in_seconds"]
    # the change was sent at most one 0.05 s step before ``until`` saw it
    assert changed + HOLD - h.clock.now() - 0.06 <= left <= changed + HOLD - h.clock.now()
    assert ucmp(st, "api")[API]["change_in_seconds"] is None  # the other service: nothing
    [line] = [x for x in cli_lines(st) if x.startswith(f"ucmp web {WEB}:")]
    assert line == (
        f"ucmp web {WEB}: capacity 2, announced 3 (375000 bytes/s), 2 in {left:.1f} s (hold_down)"
    )
    route = next(r for r in h.speaker.advertised()[EBGP_PEER] if str(r.prefix) == f"{WEB}/32")
    assert route.attributes.extended_communities == ("bandwidth:65001:375000",)  # still 3
    await h.clock.advance(1.0)  # counted down from the status' own "now"
    assert ucmp(h.agent.status(), "web")[WEB]["change_in_seconds"] == pytest.approx(left - 1.0)
    await h.clock.advance(left - 1.0)  # the hold-down is over: the value wanted now is sent
    await h.until(lambda: ucmp(h.agent.status(), "web")[WEB]["announced_capacity"] == 2, limit=1)
    assert ucmp(h.agent.status(), "web")[WEB]["change_in_seconds"] is None
    assert await h.stop() == 0


async def test_zero_capacity_shows_no_bytes_and_the_vip_withdrawn(tmp_path: Path) -> None:
    h = await started(tmp_path, {"v1"})  # web's one v6 server down: its v6 VIP has nothing
    web6 = ucmp(h.agent.status(), "web")[WEB6]
    assert (web6["capacity"], web6["announced_capacity"], web6["bytes_per_second"]) == (0, 0, None)
    assert ucmp(h.agent.status(), "web")[WEB]["bytes_per_second"] == 500_000  # v4 stays
    h.prober.failing |= {"a1", "a2", "a3", "a4"}
    await h.until(lambda: ucmp(h.agent.status(), "api")[API]["announced_capacity"] == 0)
    st = h.agent.status()
    assert ucmp(st, "api")[API] == {
        "vip": API,
        "capacity": 0,
        "announced_capacity": 0,
        "bytes_per_second": None,
        "change_in_seconds": None,  # zero never waits for the hold-down
    }
    assert h.decision("api")[0] is Decision.WITHDRAW
    assert f"ucmp api {API}: capacity 0, announced 0 (withdrawn)" in cli_lines(st)
    assert f"ucmp web {WEB6}: capacity 0, announced 0 (withdrawn)" in cli_lines(st)
    await h.until(lambda: all(str(v) != API for v in h.announced()), limit=1.0)
    assert await h.stop() == 0
