"""The reconciler's loop: first pass, wake-ups, debounce, resync, timed wake-ups, failures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bgplb.admin import AdminStore
from bgplb.bgp.fake import FakeSpeaker
from bgplb.clock import SystemClock
from bgplb.dataplane.fake import FakeDataplane
from bgplb.eventlog import EventLog
from bgplb.model import AddressSpec, PeerState
from bgplb.reconciler import PassResult, Reconciler

from .fixtures import (
    API_VIP,
    EBGP_PEER,
    WEB_VIP,
    Rig,
    StaticHealth,
    config,
    down,
    ip,
    ipvs_service,
    key,
    up,
    web_and_api,
)


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
