"""Drain through the agent's API, two LB nodes running the whole agent: as FRR sees it."""

# Blocking subprocess calls (vtysh, curl) inside async tests are short and local on purpose.
# ruff: noqa: ASYNC221

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import datetime
from typing import Any

import pytest

from tests.harness.agent_proc import TOKEN, AgentFactory, AgentProc, RouteMonitor
from tests.harness.frr import BgpLab, wait_until

pytestmark = pytest.mark.bgp

VIP = "10.99.0.1/32"
DRAIN_DELAY = 2.0


def paths(bl: BgpLab) -> dict[str, dict[str, Any]]:
    """FRR's RIB paths for VIP, by the announcing peer (not those being removed)."""
    data = bl.router.vtysh_json(f"show bgp ipv4 unicast {VIP} json")
    found = data.get("paths", [])
    assert isinstance(found, list)
    return {p["peer"]["peerId"]: p for p in found if not p.get("removed")}


async def _two_agents(bl: BgpLab, agent_factory: AgentFactory) -> list[AgentProc]:
    agents = [agent_factory(bl, n, drain_delay=DRAIN_DELAY)[0] for n in (1, 2)]
    took = await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1), bl.lb_v4(2)], 15)
    print(f"two agents -> 2-way ECMP in the router FIB after {took:.2f}s")
    return agents


def drained_at(agent: AgentProc) -> float:
    """When the agent took the drain (wall clock, from its JSON log)."""
    events = agent.events("drain")
    assert len(events) == 1
    return datetime.fromisoformat(events[0]["timestamp"]).timestamp()


def _withdrawn_at(agent: AgentProc, t0: float) -> float:
    """Seconds from ``t0`` until the agent decided to withdraw ``web`` (from its log).

    The decision is logged at the end of the pass that sent the withdraw, so the router can
    drop the route before the line is written: look for it for up to 2 s."""
    deadline = time.monotonic() + 2.0
    while True:
        decisions = agent.events("service_decision")
        for x in decisions:
            at = datetime.fromisoformat(x["timestamp"]).timestamp()
            if x["service"] == "web" and x["decision"] == "withdraw" and at > t0:
                assert x["reason"] == "draining", decisions  # not a failed check
                return at - t0
        if time.monotonic() > deadline:
            raise AssertionError(f"the agent never withdrew the drained service: {decisions}")
        time.sleep(0.05)


def _assert_kept_until_withdraw(
    agent: AgentProc, t0: float, samples: list[tuple[float, Any]], gone: float, out: float
) -> None:
    """The node left the multipath set long before the withdraw; the agent withdraws after
    drain_delay; until then the router kept the path (it was first seen gone only after the
    agent's withdraw), and follows at once."""
    withdraw = _withdrawn_at(agent, t0)
    assert out < 1.0 < withdraw
    print(f"  agent withdrew {withdraw:.2f}s after the drain; router saw it gone by {gone:.2f}s")
    assert DRAIN_DELAY - 0.05 <= withdraw < DRAIN_DELAY + 0.5
    assert gone >= withdraw - 0.05
    assert gone < withdraw + 1.5
    assert samples[-1][0] < gone


async def _out_of_fib(bl: BgpLab, t0: float, fib_events: RouteMonitor) -> float:
    """Seconds from ``t0`` (wall clock) until the router's kernel had lb1 alone for VIP."""
    await wait_until(lambda: bl.router.fib(VIP) == [bl.lb_v4(1)], DRAIN_DELAY + 1)
    await asyncio.sleep(0.1)  # let the monitor's reader catch up
    changed = fib_events.changed_at(VIP, t0, [bl.lb_v4(1)])
    assert changed is not None, fib_events.lines
    return changed - t0


async def _watch_drain(bl: BgpLab, node: str, t0: float) -> tuple[list[tuple[float, Any]], float]:
    """Samples of the drained node's RIB path (seconds since ``t0``, wall clock; path) until
    it is withdrawn; returns them and the time of the withdraw."""
    samples: list[tuple[float, Any]] = []
    while time.time() < t0 + DRAIN_DELAY + 5:
        path = paths(bl).get(node)
        now = time.time() - t0
        if path is None:
            return samples, now
        samples.append((now, path))
        await asyncio.sleep(0.05)
    raise AssertionError(f"{node} still announced {DRAIN_DELAY + 5}s after the drain")


def _drained(path: dict[str, Any]) -> bool:
    return "graceful-shutdown" in path.get("community", {}).get("string", "")


async def test_drain_over_ebgp_via_cli(bgp_lab_factory, agent_factory: AgentFactory) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=2)
    agents = await _two_agents(bl, agent_factory)
    node = bl.lb_v4(2)
    with RouteMonitor(bl.router.ns) as fib_events:
        res = agents[1].cli("drain", "web")
        print(f"bgp-lb drain web: {res.stdout.strip()}")
        t0 = drained_at(agents[1])
        out_of_fib = await _out_of_fib(bl, t0, fib_events)
    print(f"eBGP drain -> node out of the multipath set after {out_of_fib * 1000:.0f} ms")
    samples, gone = await _watch_drain(bl, node, t0)
    print(f"eBGP drain -> withdrawn after {gone:.2f}s (drain_delay {DRAIN_DELAY}s)")
    drained = [(t, p) for t, p in samples if _drained(p)]
    assert drained, "the drain attributes never reached the router"
    for _, p in drained:
        assert p["aspath"]["string"] == f"{bl.lb_as} {bl.lb_as} {bl.lb_as}"  # prepended
        assert not p.get("multipath")
        assert not p.get("bestpath")
        assert p["valid"] is True  # still announced: the node still takes old flows
    _assert_kept_until_withdraw(agents[1], t0, samples, gone, out_of_fib)
    assert bl.router.fib(VIP) == [bl.lb_v4(1)]
    web = agents[1].status()["services"][0]
    assert web["drained"] is True
    assert web["routes"] == {}
    assert agents[0].status()["services"][0]["routes"] == {bl.r1_v4(1): [VIP]}
    assert [a.errors() for a in agents] == [[], []]


async def test_drain_over_ibgp_via_http(bgp_lab_factory, agent_factory: AgentFactory) -> None:  # type: ignore[no-untyped-def]
    bl: BgpLab = bgp_lab_factory(n_lbs=2, ibgp=True)
    agents = await _two_agents(bl, agent_factory)
    node = bl.lb_v4(2)
    assert paths(bl)[node]["locPrf"] == 100
    url = f"{agents[1].api}/api/v1/services/web/drain"
    argv = ["ip", "netns", "exec", agents[1].ns, "curl", "-sS", "--fail-with-body", "-X", "POST"]
    argv += ["-H", f"Authorization: Bearer {TOKEN}", url]
    refused = subprocess.run([*argv[:-3], url], capture_output=True, text=True, timeout=10)
    assert refused.returncode != 0  # no token: refused, nothing drained
    assert agents[1].status()["services"][0]["drained"] is False
    with RouteMonitor(bl.router.ns) as fib_events:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
        print(f"POST drain: {res.stdout.strip()}")
        t0 = drained_at(agents[1])
        out_of_fib = await _out_of_fib(bl, t0, fib_events)
    print(f"iBGP drain -> node out of the multipath set after {out_of_fib * 1000:.0f} ms")
    samples, gone = await _watch_drain(bl, node, t0)
    print(f"iBGP drain -> withdrawn after {gone:.2f}s (drain_delay {DRAIN_DELAY}s)")
    drained = [(t, p) for t, p in samples if _drained(p)]
    assert drained, "the drain attributes never reached the router"
    for _, p in drained:
        assert p["locPrf"] == 0
        assert p["valid"] is True  # kept (an iBGP path is no loop), just not best
        assert not p.get("multipath")
        assert not p.get("bestpath")
    _assert_kept_until_withdraw(agents[1], t0, samples, gone, out_of_fib)
    assert bl.router.fib(VIP) == [bl.lb_v4(1)]
