"""Reloads that must never withdraw a healthy service (issue 13, defect 1 and 5).

Each case samples the router (FIB polled every 20 ms + netlink route events + bgpd's UPDATE and
withdrawal counters for the agent's session) from before the fault until well after it."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import pytest

from tests.harness import figures
from tests.harness.agent_proc import AgentFactory, AgentProc
from tests.harness.frr import BgpLab, wait_until
from tests.harness.route_sampler import assert_never_withdrawn, flaps

from .common import VIP, events_count, one_lb, sampler, settle, sighup

pytestmark = pytest.mark.faults

# After the reload: long enough for a restarted-DOWN check to withdraw and come back
# (rise x fast_interval) and for a few regular probes at the new settings.
AFTER = 3.0


def _check(agent: AgentProc) -> dict[str, Any]:
    check = agent.config["services"][0]["checks"][0]
    assert isinstance(check, dict)
    return check


async def _reload_keeps_route(bl: BgpLab, agent: AgentProc, expect_ok: bool = True) -> None:
    with sampler(bl) as s:
        await settle(0.3)
        outcome = await sighup(agent)
        await settle(AFTER)
        report = s.stop()
    print(f"{outcome.get('event')} {outcome.get('changed_services', outcome.get('errors'))}")
    print(report.summary())
    assert (outcome["event"] == "config_reloaded") is expect_ok, outcome
    figures.count("wrong_announcements", flaps(report))
    assert_never_withdrawn(report)
    assert agent.running()
    assert len(agent.exabgp_pids()) == 1


async def test_reload_unchanged_never_withdraws(
    bgp_lab_factory: Any, agent_factory: AgentFactory
) -> None:
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory)
    await _reload_keeps_route(bl, agent)


async def test_reload_timing_changed_never_withdraws(
    bgp_lab_factory: Any, agent_factory: AgentFactory
) -> None:
    """Only interval/timeout of the healthy service's check change (defect 1)."""
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory)
    _check(agent).update(interval=0.4, timeout=0.3)
    agent.write_config()
    await _reload_keeps_route(bl, agent)


async def test_reload_target_changed_to_healthy_never_withdraws(
    bgp_lab_factory: Any, agent_factory: AgentFactory
) -> None:
    """The check's target changes (another path the backend serves with 200): the service
    keeps its state, the new target is probed and passes (defect 1)."""
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory)
    _check(agent)["path"] = "/index.html"
    agent.write_config()
    await _reload_keeps_route(bl, agent)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("services: [\n  - {name: web\n", id="yaml-syntax"),
        pytest.param("node: {}\npeers: []\nservices: 42\n", id="schema"),
        pytest.param(b"\xff\xfe not utf-8", id="binary"),
    ],
)
async def test_reload_invalid_config_keeps_everything(
    bgp_lab_factory: Any, agent_factory: AgentFactory, content: str | bytes
) -> None:
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory)
    if isinstance(content, bytes):
        agent.config_path.write_bytes(content)
    else:
        agent.config_path.write_text(content)
    await _reload_keeps_route(bl, agent, expect_ok=False)
    status = agent.status()
    assert [s["name"] for s in status["services"]] == ["web"]
    # the old config is still in force: a good file reloads fine afterwards
    agent.write_config()
    assert (await sighup(agent))["event"] == "config_reloaded"


async def test_sighup_storm_of_50_never_withdraws(
    bgp_lab_factory: Any, agent_factory: AgentFactory
) -> None:
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory)
    names = ("config_reloaded", "config_reload_failed")
    before = events_count(agent, *names)
    with sampler(bl) as s:
        await settle(0.3)
        figures.count("faults_injected", 50)
        for _ in range(50):
            agent.signal(signal.SIGHUP)
            await asyncio.sleep(0.02)
        # signals that arrive while one is pending coalesce: wait until the count is stable
        last = -1
        while (count := events_count(agent, *names) - before) != last:
            last = count
            await settle(1.0)
        await settle(AFTER)
        report = s.stop()
    print(f"50 SIGHUPs -> {count} reloads; {report.summary()}")
    assert count >= 1
    assert events_count(agent, "config_reload_failed") == 0
    figures.count("wrong_announcements", flaps(report))
    assert_never_withdrawn(report)
    assert agent.running()
    assert len(agent.exabgp_pids()) == 1
    await wait_until(lambda: agent.status()["services"][0]["decision"] == "announce", 5)
    assert bl.router.fib(VIP) == [bl.lb_v4(1)]


@pytest.mark.parametrize("fault", ["deleted", "unreadable"])
async def test_config_file_gone_at_reload_fails_cleanly(
    bgp_lab_factory: Any, agent_factory: AgentFactory, fault: str
) -> None:
    """The file is deleted, or cannot be read (a directory in its place: root reads any mode),
    when the SIGHUP comes: the reload fails with the reason, routes are unchanged."""
    bl, agent, _ = await one_lb(bgp_lab_factory, agent_factory)
    agent.config_path.unlink()
    if fault == "unreadable":
        agent.config_path.mkdir()
    try:
        await _reload_keeps_route(bl, agent, expect_ok=False)
        failed = agent.events("config_reload_failed")[-1]
        assert str(agent.config_path) in json.dumps(failed), failed
        assert agent.errors() == [failed]  # one clean line, no traceback
    finally:
        if agent.config_path.is_dir():
            agent.config_path.rmdir()
    agent.write_config()
    assert (await sighup(agent))["event"] == "config_reloaded"
