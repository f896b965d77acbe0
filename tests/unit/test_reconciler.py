"""The reconciler on the fakes, asserted on the shared EventLog (FakeClock, no I/O)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bgplb.model import (
    AddAddress,
    AddressSpec,
    AddVirtualService,
    Decision,
    Reason,
    RouteAttributes,
    VirtualServiceKey,
)
from bgplb.reconciler import ReconcilerStopped

from .fixtures import (
    API_VIP,
    EBGP_PEER,
    IBGP_PEER,
    LOCAL_AS,
    WEB_VIP,
    Rig,
    config,
    down,
    ebgp_peer,
    ibgp_peer,
    ip,
    ipvs_service,
    key,
    started_rig,
    tcp_check,
    up,
    web_and_api,
)

REMOVALS = {"RemoveRealServer", "RemoveVirtualService", "RemoveAddress", "RemoveLink"}


@pytest.fixture
async def rig(tmp_path: Path) -> Rig:
    return await started_rig(tmp_path)


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
    assert [e.kind for e in rig.log.events] == [
        "claim",  # both passes claim the address before adding it
        "failed",
        "set_routes",
        "claim",
        "AddAddress",
        "set_routes",
    ]


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
