"""The reconciler on the fakes, asserted on the shared EventLog (FakeClock, no I/O)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from bgplb.admin import AdminStore
from bgplb.bgp.fake import FakeSpeaker
from bgplb.clock import FakeClock, SystemClock
from bgplb.config import Config
from bgplb.dataplane.fake import FakeDataplane
from bgplb.eventlog import Event, EventLog
from bgplb.model import (
    AddAddress,
    AddressSpec,
    AddVirtualService,
    Decision,
    PeerState,
    Reason,
    RouteAttributes,
    VirtualServiceKey,
)
from bgplb.reconciler import PassResult, Reconciler, ReconcilerStopped

from .fixtures import (
    EBGP_PEER,
    IBGP_PEER,
    LOCAL_AS,
    StaticHealth,
    config,
    down,
    ebgp_peer,
    ibgp_peer,
    ip,
    ipvs_service,
    key,
    tcp_check,
    up,
)

WEB_VIP = "10.99.0.1"
API_VIP = "10.99.0.2"
REMOVALS = {"RemoveRealServer", "RemoveVirtualService", "RemoveAddress", "RemoveLink"}


class Rig:
    def __init__(self, cfg: Config, state_dir: Path) -> None:
        self.cfg = cfg
        self.clock = FakeClock()
        self.log = EventLog(clock=self.clock)
        self.dp = FakeDataplane(self.log, self.clock)
        self.sp = FakeSpeaker(self.log)
        self.health = StaticHealth()
        self.admin = AdminStore(state_dir, self.clock)
        self.passes: list[PassResult] = []
        self.rec = Reconciler(
            cfg, self.dp, self.sp, self.health, self.admin, self.clock, self.passes.append
        )

    async def start(self) -> PassResult:
        await self.dp.start(self.rec.wake)
        await self.sp.start(self.cfg, self.rec.wake)
        return await self.rec.reconcile_once()

    def speaker_sets(self) -> list[Event]:
        return self.log.of("speaker", "set_routes")

    def dataplane_kinds(self) -> list[str]:
        return [e.kind for e in self.log.of("dataplane")]

    def announced(self, peer: str = EBGP_PEER) -> set[str]:
        return {str(r.prefix.network_address) for r in self.sp.routes_for(peer)}


def web_and_api(**kw: Any) -> Config:
    return config(
        ipvs_service("web", vips=(WEB_VIP,), checks=[tcp_check()]),
        ipvs_service("api", vips=(API_VIP,), ports=(443,)),
        **kw,
    )


@pytest.fixture
async def rig(tmp_path: Path) -> Rig:
    r = Rig(web_and_api(), tmp_path)
    r.health.set(key("web", "tcp"), up())
    await r.start()
    return r


async def test_first_pass_builds_then_announces(tmp_path: Path) -> None:
    r = Rig(web_and_api(), tmp_path)
    r.health.set(key("web", "tcp"), up())
    result = await r.start()
    kinds = [e.kind for e in r.log.events if e.source in ("dataplane", "speaker")]
    assert kinds.index("set_routes") > max(i for i, k in enumerate(kinds) if k == "AddRealServer")
    assert r.announced() == {WEB_VIP, API_VIP}
    assert result.errors == ()
    assert r.rec.ready
    assert r.passes == [result]
    assert result.decisions["web"].decision is Decision.ANNOUNCE


async def test_steady_state_pass_does_nothing(rig: Rig) -> None:
    rig.log.clear()
    result = await rig.rec.reconcile_once()
    assert rig.log.events == []
    assert result.actions == ()


async def test_failed_check_withdraws_without_teardown(rig: Rig) -> None:
    rig.log.clear()
    rig.health.set(key("web", "tcp"), down())
    result = await rig.rec.reconcile_once()
    assert rig.dataplane_kinds() == []  # VIP and IPVS stay
    (ev,) = rig.speaker_sets()
    assert {str(r.prefix.network_address) for r in ev.detail[EBGP_PEER]} == {API_VIP}
    assert (result.decisions["web"].decision, result.decisions["web"].reason) == (
        Decision.WITHDRAW,
        Reason.CHECK_FAILED,
    )
    rig.health.set(key("web", "tcp"), up())
    await rig.rec.reconcile_once()
    assert rig.announced() == {WEB_VIP, API_VIP}
    assert rig.dataplane_kinds() == []


async def test_deleted_vip_is_repaired_without_a_withdraw(rig: Rig) -> None:
    rig.log.clear()
    woken: list[int] = []
    rig.dp._wake = lambda: woken.append(1)  # the netlink event
    rig.dp.delete_address(AddressSpec("web", ip(WEB_VIP)))
    assert woken == [1]
    result = await rig.rec.reconcile_once()
    assert rig.dataplane_kinds() == ["AddAddress"]
    assert rig.speaker_sets() == []  # never withdrawn, never re-announced
    assert not result.withdrew_first
    assert rig.announced() == {WEB_VIP, API_VIP}


async def test_deleted_ipvs_service_is_repaired_without_a_withdraw(rig: Rig) -> None:
    rig.log.clear()
    rig.dp.delete_service(VirtualServiceKey(ip(WEB_VIP), 80, "tcp"))  # type: ignore[arg-type]
    await rig.rec.reconcile_once()
    assert rig.dataplane_kinds() == ["AddVirtualService", "AddRealServer"]
    assert rig.speaker_sets() == []


async def test_failed_repair_withdraws_then_recovers(rig: Rig) -> None:
    rig.log.clear()
    rig.dp.delete_address(AddressSpec("web", ip(WEB_VIP)))
    rig.dp.fail_next(AddAddress)
    result = await rig.rec.reconcile_once()
    assert result.errors
    assert "AddAddress" in result.errors[0]
    assert rig.announced() == {API_VIP}
    assert result.decisions["web"].reason is Reason.VIP_MISSING
    assert result.decisions["web"].decision is Decision.WITHDRAW
    ok = await rig.rec.reconcile_once()
    assert ok.errors == ()
    assert rig.announced() == {WEB_VIP, API_VIP}
    assert [e.kind for e in rig.log.events] == ["failed", "set_routes", "AddAddress", "set_routes"]


async def test_an_action_failure_does_not_stop_the_pass(tmp_path: Path) -> None:
    r = Rig(web_and_api(), tmp_path)
    r.health.set(key("web", "tcp"), up())
    r.dp.fail_next(AddVirtualService)  # the first one: web's (sorted by VIP)
    result = await r.start()
    # web's real server cannot be added without its virtual service either
    assert [e.split(":")[0] for e in result.errors] == ["AddVirtualService", "AddRealServer"]
    assert r.dataplane_kinds().count("AddVirtualService") == 1  # api's went on
    assert r.announced() == {API_VIP}
    assert result.decisions["web"].reason is Reason.IPVS_MISSING
    await r.rec.reconcile_once()
    assert r.announced() == {WEB_VIP, API_VIP}


async def test_drain_per_peer_type_then_withdraw_then_undrain(tmp_path: Path) -> None:
    cfg = config(
        ipvs_service("web", vips=(WEB_VIP,)),
        peers=(ebgp_peer(), ibgp_peer()),
        drain_delay=5.0,
    )
    r = Rig(cfg, tmp_path)
    await r.start()
    r.log.clear()
    r.admin.drain("web")
    result = await r.rec.reconcile_once()
    assert result.decisions["web"].decision is Decision.DRAINING
    (ev,) = r.speaker_sets()
    (e,) = ev.detail[EBGP_PEER]
    (i,) = ev.detail[IBGP_PEER]
    assert e.attributes == RouteAttributes(communities=("65535:0",), as_path=(LOCAL_AS,) * 3)
    assert i.attributes == RouteAttributes(communities=("65535:0",), local_pref=0)
    await r.clock.advance(4.0)
    await r.rec.reconcile_once()
    assert len(r.speaker_sets()) == 1  # still draining
    await r.clock.advance(1.0)
    result = await r.rec.reconcile_once()
    assert r.sp.wanted == {}
    assert (result.decisions["web"].decision, result.decisions["web"].reason) == (
        Decision.WITHDRAW,
        Reason.DRAINING,
    )
    assert r.dataplane_kinds() == []  # a drain tears nothing down
    r.admin.undrain("web")
    await r.rec.reconcile_once()
    (e,) = r.sp.routes_for(EBGP_PEER)
    assert e.attributes == RouteAttributes()
    assert r.dataplane_kinds() == []


async def test_node_drain_survives_a_restart_as_withdrawn(tmp_path: Path) -> None:
    r = Rig(web_and_api(), tmp_path)
    r.health.set(key("web", "tcp"), up())
    await r.start()
    r.admin.drain(None)
    # a new agent on the same state dir and the same "kernel"
    again = Rig(web_and_api(), tmp_path)
    again.health.set(key("web", "tcp"), up())
    again.dp, again.rec._dataplane = r.dp, r.dp
    result = await again.start()
    assert again.sp.wanted == {}
    assert {d.reason for d in result.decisions.values()} == {Reason.NODE_DRAINING}
    assert result.actions == ()


async def test_removed_service_is_withdrawn_before_its_objects_go(rig: Rig) -> None:
    rig.log.clear()
    rig.rec.set_config(config(ipvs_service("api", vips=(API_VIP,), ports=(443,))))
    await rig.rec.reconcile_once()
    events = [e for e in rig.log.events if e.kind != "failed"]
    first_removal = next(i for i, e in enumerate(events) if e.kind in REMOVALS)
    withdraw = events[first_removal - 1]
    assert withdraw.kind == "set_routes"
    assert {str(x.prefix.network_address) for x in withdraw.detail[EBGP_PEER]} == {API_VIP}
    assert [e.kind for e in events[first_removal:]] == [
        "RemoveRealServer",
        "RemoveVirtualService",
        "RemoveAddress",
        "RemoveLink",
    ]  # the final set equals the withdraw set: not sent again
    assert rig.announced() == {API_VIP}
    assert all("web" not in repr(x) for x in rig.dp.owned().links)


async def test_reload_leaves_unchanged_services_alone(rig: Rig) -> None:
    rig.log.clear()
    changed = config(
        ipvs_service("web", vips=(WEB_VIP,), checks=[tcp_check()]),
        ipvs_service("api", vips=(API_VIP,), ports=(443, 8443)),  # api gets a port
        ipvs_service("new", vips=("10.99.0.3",)),
        resync_interval=30.0,
    )
    rig.rec.set_config(changed)
    await rig.rec.reconcile_once()
    touched = [e.detail for e in rig.log.of("dataplane")]
    assert touched
    assert all(WEB_VIP not in repr(a) and "'web'" not in repr(a) for a in touched)
    assert rig.announced() == {WEB_VIP, API_VIP, "10.99.0.3"}
    assert not any(e.kind in REMOVALS for e in rig.log.events)


async def test_conflict_with_a_foreign_link(tmp_path: Path) -> None:
    r = Rig(web_and_api(), tmp_path)
    r.health.set(key("web", "tcp"), up())
    r.dp.add_foreign_link("web")
    result = await r.start()
    assert r.dp.violations == []
    assert result.decisions["web"].reason is Reason.DATAPLANE_CONFLICT
    assert result.conflicts["web"] == "link web exists and is not ours"
    assert r.announced() == {API_VIP}


@pytest.mark.parametrize("keep", [False, True])
async def test_shutdown_order(rig: Rig, keep: bool) -> None:
    rig.log.clear()
    t0 = rig.clock.now()
    task = asyncio.create_task(rig.rec.shutdown(grace=3.0, keep_dataplane=keep))
    await rig.clock.advance(2.9)
    assert [e.kind for e in rig.log.events] == ["set_routes"]  # withdraw all, sessions up
    assert rig.log.events[0].detail == {}
    await rig.clock.advance(0.2)
    await task
    kinds = [e.kind for e in rig.log.events]
    assert kinds[0] == "set_routes"
    assert kinds[-1] == "stop"
    removals = [e for e in rig.log.events if e.kind in REMOVALS]
    if keep:
        assert removals == []
        assert rig.dp.owned().links
    else:
        assert removals
        assert all(e.time >= t0 + 3.0 for e in removals)
        assert rig.dp.owned().links == frozenset()
        assert rig.dp.owned().addresses == frozenset()


async def test_no_pass_after_shutdown_began(rig: Rig) -> None:
    task = asyncio.create_task(rig.rec.shutdown(grace=1.0, keep_dataplane=False))
    await rig.clock.advance(0.5)
    late = asyncio.create_task(rig.rec.reconcile_once())  # waits for the shutdown
    await rig.clock.advance(0.6)
    await task
    with pytest.raises(ReconcilerStopped):
        await late
    assert rig.rec.last is not None
    assert {d.reason for d in rig.rec.last.decisions.values()} == {Reason.SHUTTING_DOWN}
    assert rig.rec.last.routes == {}
    assert rig.dp.owned().links == frozenset()  # nothing was re-created


async def test_shutdown_goes_on_when_a_step_fails(rig: Rig) -> None:
    rig.sp.fail_set_routes = 1
    task = asyncio.create_task(rig.rec.shutdown(grace=1.0, keep_dataplane=False))
    await rig.clock.advance(1.0)
    await task
    assert rig.sp.stopped
    assert rig.dp.owned().links == frozenset()


# --------------------------------------------------------------------------- the loop


async def run_loop(r: Rig) -> asyncio.Task[None]:
    await r.dp.start(r.rec.wake)
    await r.sp.start(r.cfg, r.rec.wake)
    task = asyncio.create_task(r.rec.run())
    await r.clock.advance(0.02)
    return task


async def stop_loop(r: Rig, task: asyncio.Task[None]) -> None:
    stopper = asyncio.create_task(r.rec.shutdown(0.0, keep_dataplane=True))
    await r.clock.advance(0.1)
    await stopper
    await asyncio.wait_for(task, 1.0)


async def test_run_first_pass_wakeups_coalesce_and_resync(tmp_path: Path) -> None:
    r = Rig(web_and_api(), tmp_path)
    r.health.set(key("web", "tcp"), up())
    task = await run_loop(r)
    assert len(r.passes) == 1
    assert r.rec.ready
    for _ in range(5):
        r.rec.wake()
    await r.clock.advance(0.02)
    assert len(r.passes) == 2  # a burst is one pass
    await r.clock.advance(5.0)
    assert len(r.passes) == 2
    await r.clock.advance(5.0)
    assert len(r.passes) == 3  # resync_interval 10 s
    assert r.rec.last_progress == pytest.approx(r.clock.now(), abs=0.05)
    r.dp.delete_address(AddressSpec("web", ip(WEB_VIP)))  # wakes like a netlink event
    await r.clock.advance(0.02)
    assert len(r.passes) == 4
    assert r.announced() == {WEB_VIP, API_VIP}
    await stop_loop(r, task)


async def test_drain_delay_end_wakes_the_loop_on_time(tmp_path: Path) -> None:
    r = Rig(web_and_api(drain_delay=3.0, resync_interval=30.0), tmp_path)
    r.health.set(key("web", "tcp"), up())
    task = await run_loop(r)
    r.admin.drain("web")
    r.rec.wake()  # as the API does
    await r.clock.advance(0.02)
    assert r.announced() == {WEB_VIP, API_VIP}  # draining attributes
    await r.clock.advance(2.9)
    assert r.announced() == {WEB_VIP, API_VIP}
    await r.clock.advance(0.2)
    assert r.announced() == {API_VIP}  # withdrawn at the end of the delay, not at the resync
    await stop_loop(r, task)


async def test_a_failing_pass_does_not_end_the_loop(tmp_path: Path) -> None:
    r = Rig(web_and_api(), tmp_path)
    r.health.set(key("web", "tcp"), up())
    task = await run_loop(r)
    r.health.set(key("web", "tcp"), down())
    r.sp.fail_set_routes = 1
    r.rec.wake()
    await r.clock.advance(0.02)
    assert r.rec.failed_passes == 1
    assert r.rec.last_error is not None
    assert "SpeakerError" in r.rec.last_error
    assert not task.done()
    r.rec.wake()
    await r.clock.advance(0.02)
    assert r.announced() == {API_VIP}
    await stop_loop(r, task)


async def test_speaker_peer_events_wake_the_loop(tmp_path: Path) -> None:
    r = Rig(web_and_api(), tmp_path)
    task = await run_loop(r)
    n = len(r.passes)
    r.sp.set_peer_state(EBGP_PEER, PeerState.DOWN)
    await r.clock.advance(0.02)
    assert len(r.passes) == n + 1
    await stop_loop(r, task)


async def test_set_config_wakes_the_loop(tmp_path: Path) -> None:
    r = Rig(web_and_api(), tmp_path)
    r.health.set(key("web", "tcp"), up())
    task = await run_loop(r)
    r.rec.set_config(config(ipvs_service("api", vips=(API_VIP,), ports=(443,))))
    await r.clock.advance(0.02)
    assert r.announced() == {API_VIP}
    assert {x.name for x in r.dp.owned().links} == {"api"}
    await stop_loop(r, task)


async def test_loop_with_the_system_clock(tmp_path: Path) -> None:
    cfg = web_and_api(resync_interval=0.05)
    log = EventLog()
    dp, sp, health = FakeDataplane(log), FakeSpeaker(log), StaticHealth({key("web", "tcp"): up()})
    passes: list[PassResult] = []
    three = asyncio.Event()

    def on_pass(result: PassResult) -> None:
        passes.append(result)
        if len(passes) >= 3:  # the first pass and two resyncs
            three.set()

    rec = Reconciler(
        cfg, dp, sp, health, AdminStore(tmp_path, SystemClock()), SystemClock(), on_pass
    )
    await sp.start(cfg, rec.wake)
    task = asyncio.create_task(rec.run())
    await asyncio.wait_for(three.wait(), 5.0)
    await rec.shutdown(grace=0.01, keep_dataplane=False)
    await asyncio.wait_for(task, 1.0)
    assert sp.stopped
    assert dp.owned().links == frozenset()


async def test_repairs_and_decisions_are_logged_as_events(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bgplb.reconciler")
    rig.dp.delete_address(AddressSpec("web", ip(WEB_VIP)))
    rig.health.set(key("web", "tcp"), down())
    await rig.rec.reconcile_once()
    events = {r.event: r for r in caplog.records}  # type: ignore[attr-defined]
    assert events["dataplane_changed"].object == f"{WEB_VIP}/32 dev web"  # type: ignore[attr-defined]
    decision = events["service_decision"]
    assert (decision.service, decision.decision, decision.reason) == (  # type: ignore[attr-defined]
        "web",
        "withdraw",
        "check_failed",
    )
