"""The whole agent on fakes with a fake clock, asserted on the shared event log."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgplb.agent import Agent, _install_signals
from bgplb.bgp.fake import FakeSpeaker
from bgplb.clock import FakeClock
from bgplb.config import Config, load_config
from bgplb.dataplane.fake import FakeDataplane
from bgplb.eventlog import EventLog
from bgplb.health.targets import ResolvedCheck
from bgplb.model import REMOVALS, AddressSpec, Decision, ObservedDataplane, Reason

from .fixtures import EBGP_PEER, IBGP_PEER, ebgp_peer, ibgp_peer, ipvs_service, node, tcp_check

VIP = ipaddress.IPv4Address("10.99.0.1")


class ScriptedProber:
    """Every probe of a check named in ``failing`` fails; the others succeed."""

    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.probes: dict[str, int] = {}
        self.failures: dict[str, int] = {}

    async def probe(self, target: ResolvedCheck) -> str | None:
        name = target.key.check
        self.probes[name] = self.probes.get(name, 0) + 1
        if name in self.failing:
            self.failures[name] = self.failures.get(name, 0) + 1
            return "connect: Connection refused"
        return None


def raw_config(tmp_path: Path, **node_kw: Any) -> dict[str, Any]:
    check = tcp_check("tcp", interval=1.0, fast_interval=0.5, timeout=0.5, rise=2, fall=3)
    return {
        "node": node(state_dir=str(tmp_path / "state"), shutdown_grace=2.0, **node_kw),
        "peers": [ebgp_peer(), ibgp_peer()],
        "services": [
            ipvs_service("web", vips=(str(VIP),), ports=(80,), checks=[check]),
            ipvs_service("api", vips=("10.99.0.2",), ports=(443,), checks=[]),
        ],
    }


def write(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


class Harness:
    def __init__(self, tmp_path: Path, raw: dict[str, Any] | None = None, **agent_kw: Any):
        self.clock = FakeClock()
        self.log = EventLog(self.clock)
        self.dataplane = FakeDataplane(self.log, self.clock)
        self.speaker = FakeSpeaker(self.log)
        self.prober = ScriptedProber()
        self.notes: list[str] = []
        self.path = write(tmp_path / "config.yaml", raw or raw_config(tmp_path))
        self.agent_kw = agent_kw
        self.agent = self.new_agent()
        self.task: asyncio.Task[int] | None = None

    def new_agent(self) -> Agent:
        return Agent(
            load_config(self.path),
            dataplane=self.dataplane,
            speaker=self.speaker,
            clock=self.clock,
            config_path=self.path,
            prober=self.prober,
            notifier=self.notes.append,
            **self.agent_kw,
        )

    async def start(self) -> None:
        self.task = asyncio.create_task(self.agent.run())
        await self.until(lambda: self.agent.ready())

    async def until(
        self, pred: Callable[[], bool], limit: float = 30.0, step: float = 0.05
    ) -> float:
        waited = 0.0
        while not pred():
            assert waited < limit, "condition not reached in fake time"
            await self.clock.advance(step)
            waited += step
        return waited

    async def stop(self) -> int:
        assert self.task is not None
        self.agent.stopping.set()
        while not self.task.done():
            await self.clock.advance(0.1)
        return self.task.result()

    def announced(
        self, peer: str = EBGP_PEER
    ) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return {r.prefix.network_address for r in self.speaker.advertised().get(peer, ())}

    def decision(self, name: str) -> tuple[Decision, Reason]:
        assert self.agent.reconciler.last is not None
        d = self.agent.reconciler.last.decisions[name]
        return d.decision, d.reason


async def test_withdraw_on_fall_th_failure_and_before_any_teardown(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    await h.until(lambda: VIP in h.announced())
    assert h.prober.probes["tcp"] >= 2  # announced only after `rise` successes

    h.prober.failing.add("tcp")
    while h.prober.failures.get("tcp", 0) < 3:
        assert VIP in h.announced(), f"withdrawn after {h.prober.failures.get('tcp')} failures"
        await h.clock.advance(0.05)
    await h.until(lambda: VIP not in h.announced(), limit=0.1)
    assert h.decision("web") == (Decision.WITHDRAW, Reason.CHECK_FAILED)
    assert not [e for e in h.log.of("dataplane") if e.kind.startswith("Remove")]

    assert await h.stop() == 0
    # Shutdown: withdraw everything first, then (after the grace) tear down.
    events = h.log.events
    removals = [i for i, e in enumerate(events) if e.kind.startswith("Remove")]
    last_empty = max(
        i for i, e in enumerate(events) if e.kind == "set_routes" and not any(e.detail.values())
    )
    assert removals
    assert min(removals) > last_empty
    grace = events[min(removals)].time - events[last_empty].time
    assert grace >= 2.0
    assert "STOPPING=1" in h.notes
    assert "READY=1" in h.notes


async def test_deleted_vip_is_repaired_without_withdraw_and_withdrawn_when_repair_fails(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    await h.start()
    await h.until(lambda: VIP in h.announced())
    mark = len(h.log.events)
    h.dataplane.delete_address(AddressSpec("web", VIP))
    await h.until(lambda: AddressSpec("web", VIP) in h.dataplane.addresses, limit=1.0)
    assert all(
        VIP in {r.prefix.network_address for r in e.detail.get(EBGP_PEER, ())}
        for e in h.log.events[mark:]
        if e.kind == "set_routes"
    ), "a repaired VIP must not be withdrawn"

    from bgplb.model import AddAddress

    h.dataplane.fail_next(AddAddress, times=1000)
    h.dataplane.delete_address(AddressSpec("web", VIP))
    await h.until(lambda: VIP not in h.announced(), limit=1.0)
    assert h.decision("web") == (Decision.WITHDRAW, Reason.VIP_MISSING)
    await h.stop()


async def test_drain_per_peer_type_then_withdraw(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    await h.until(lambda: VIP in h.announced() and VIP in h.announced(IBGP_PEER))
    await h.agent.drain("web")
    await h.clock.advance(0.1)
    ebgp = next(r for r in h.speaker.advertised()[EBGP_PEER] if r.service == "web")
    ibgp = next(r for r in h.speaker.advertised()[IBGP_PEER] if r.service == "web")
    assert "65535:0" in ebgp.attributes.communities
    assert ebgp.attributes.as_path[:1] == (65001,)
    assert len(ebgp.attributes.as_path) >= 2
    assert "65535:0" in ibgp.attributes.communities
    assert ibgp.attributes.local_pref == 0
    assert ibgp.attributes.as_path == ()
    # withdrawn after drain_delay (5 s), not before
    await h.clock.advance(4.0)
    assert VIP in h.announced()
    await h.until(lambda: VIP not in h.announced(), limit=2.0)
    assert h.decision("web") == (Decision.WITHDRAW, Reason.DRAINING)
    assert ipaddress.IPv4Address("10.99.0.2") in h.announced()  # the other service stays
    with pytest.raises(KeyError):
        await h.agent.drain("nope")
    await h.agent.undrain("web")
    await h.until(lambda: VIP in h.announced(), limit=1.0)
    await h.stop()


async def test_drained_node_stays_drained_after_restart(tmp_path: Path) -> None:
    raw = raw_config(tmp_path, keep_dataplane_on_exit=True)
    h = Harness(tmp_path, raw)
    await h.start()
    await h.until(lambda: len(h.announced()) == 2)
    await h.agent.drain(None)
    await h.until(lambda: not h.announced(), limit=6.0)
    assert await h.stop() == 0

    mark = len(h.log.events)
    h.agent = h.new_agent()  # restart: same state dir, same "kernel"
    await h.start()
    await h.clock.advance(10.0)
    assert not h.announced()
    assert h.decision("web")[1] is Reason.NODE_DRAINING
    assert not any(any(e.detail.values()) for e in h.log.events[mark:] if e.kind == "set_routes"), (
        "a drained node must never announce after a restart"
    )
    assert h.agent.status().node.drained
    await h.stop()


async def test_reload_changed_file_touches_only_changed_services(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    await h.until(lambda: len(h.announced()) == 2)
    raw = raw_config(tmp_path)
    raw["services"][1]["ports"] = [{"port": 443, "protocol": "tcp", "scheduler": "rr"}]
    raw["services"].append(ipvs_service("new", vips=("10.99.0.3",), ports=(53,)))
    write(h.path, raw)
    mark = len(h.log.events)
    result = await h.agent.reload()
    assert result.ok
    assert result.changed_services == ["api", "new"]
    await h.clock.advance(1.0)
    touched = [e for e in h.log.events[mark:] if e.source == "dataplane"]
    assert touched, "the changed services must be applied"
    for e in touched:
        assert "10.99.0.1" not in repr(e.detail), e
        assert "'web'" not in repr(e.detail), e
    assert VIP in h.announced()
    assert not [e for e in h.log.events[mark:] if e.kind in ("reconfigure", "restart")]
    await h.stop()


async def test_start_freezes_the_heap_once_and_a_reload_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A freeze while the agent works keeps the cycles in use at that moment for good (the
    soak's RSS growth: bench/NOTES.md, heap.py): only start freezes."""
    freezes: list[int] = []
    monkeypatch.setattr(gc, "freeze", lambda: freezes.append(1))
    h = Harness(tmp_path)
    await h.start()
    await h.until(lambda: len(h.announced()) == 2)
    assert len(freezes) == 1
    raw = raw_config(tmp_path)
    raw["services"].append(ipvs_service("new", vips=("10.99.0.3",), ports=(53,)))
    write(h.path, raw)
    assert (await h.agent.reload()).ok
    await h.clock.advance(1.0)
    assert len(freezes) == 1
    await h.stop()


async def test_reload_with_bad_file_keeps_old_config(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    await h.until(lambda: len(h.announced()) == 2)
    before = h.agent.config
    h.path.write_text("node: {router_id: 10.0.0.1/24}\npeers: []\n")
    mark = len(h.log.events)
    result = await h.agent.reload()
    assert not result.ok
    assert any("router_id" in e for e in result.errors)
    assert h.agent.config is before
    await h.clock.advance(2.0)
    assert len(h.announced()) == 2
    assert not [e for e in h.log.events[mark:] if e.source == "dataplane"]
    await h.stop()


async def test_sighup_reloads_through_the_signal_handler(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    raw = raw_config(tmp_path)
    raw["services"].append(ipvs_service("new", vips=("10.99.0.3",), ports=(53,)))
    write(h.path, raw)
    _install_signals(h.agent)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        # the file is parsed in a child process (load_config_async): real time, not fake
        deadline = time.monotonic() + 60
        while h.agent.config.service("new") is None:
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            await asyncio.sleep(0.02)
    finally:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    await h.stop()


class BlockingDataplane(FakeDataplane):
    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.blocked = asyncio.Event()

    async def observe(self) -> ObservedDataplane:
        if self.blocked.is_set():
            await asyncio.Event().wait()  # hangs like a stuck netlink socket
        return await super().observe()


async def test_blocked_reconciler_stops_watchdog_pings(tmp_path: Path) -> None:
    h = Harness(tmp_path, watchdog_seconds=4.0)
    h.dataplane = BlockingDataplane(h.log, h.clock)
    h.agent = h.new_agent()
    await h.start()
    await h.clock.advance(30.0)
    pings = h.notes.count("WATCHDOG=1")
    assert pings >= 10, "a healthy agent pings every watchdog/2"
    h.dataplane.blocked.set()
    h.agent.reconciler.wake()
    await h.clock.advance(60.0)
    stalled_from = h.notes.count("WATCHDOG=1")
    await h.clock.advance(30.0)
    assert h.notes.count("WATCHDOG=1") == stalled_from, "pings go on while the reconciler hangs"
    assert not h.agent.progressing()
    assert h.task is not None
    h.task.cancel()


async def test_crashed_task_ends_agent_with_exit_1_after_withdraw(tmp_path: Path) -> None:
    h = Harness(tmp_path)

    async def crash() -> None:
        await h.clock.sleep(3.0)
        raise RuntimeError("boom")

    h.agent.health.run = crash  # type: ignore[method-assign]
    h.task = asyncio.create_task(h.agent.run())
    while not h.task.done():
        await h.clock.advance(0.1)
    assert h.task.result() == 1
    assert h.speaker.stopped
    assert not h.speaker.advertised()
    assert h.log.of("speaker", "stop")


def test_config_used_in_tests_is_valid(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.yaml", raw_config(tmp_path)))
    assert isinstance(cfg, Config)
    assert len(cfg.services) == 2
    assert REMOVALS


async def test_status_of_a_dual_stack_ipvs_service(tmp_path: Path) -> None:
    """Real servers of both families in one status (sorting v4 with v6 once raised)."""
    raw = raw_config(tmp_path)
    raw["services"][1]["vips"] = ["10.99.0.2", "fd00:99::2"]
    for peer in raw["peers"]:
        peer["next_hop_v6"] = "fd00::10"
    h = Harness(tmp_path, raw)
    await h.start()
    await h.until(lambda: ipaddress.ip_address("fd00:99::2") in h.announced())
    api = h.agent.status().service("api")
    assert api is not None
    assert {rs.address.version for rs in api.real_servers} == {4, 6}
    assert api.decision is Decision.ANNOUNCE
    await h.stop()
