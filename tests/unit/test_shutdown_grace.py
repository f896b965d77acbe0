"""A second SIGTERM (or SIGINT) during the shutdown grace ends the grace at once; the
teardown after it runs as usual (FakeClock, fakes)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from bgplb.agent import _install_signals

from .fixtures import Rig, started_rig
from .test_agent import VIP, Harness, raw_config

GRACE = 60.0


@pytest.fixture
async def rig(tmp_path: Path) -> Rig:
    return await started_rig(tmp_path)


async def test_end_grace_during_the_grace_tears_down_at_once(rig: Rig) -> None:
    t0 = rig.clock.now()
    task = asyncio.create_task(rig.rec.shutdown(grace=GRACE, keep_dataplane=False))
    await rig.clock.advance(1.0)
    assert not task.done()
    assert rig.sp.advertised() == {}  # withdrawn, in the grace
    rig.rec.end_grace()
    await rig.clock.advance(0.0)
    await asyncio.wait_for(task, 1.0)  # no more fake time needed
    assert rig.clock.now() - t0 == pytest.approx(1.0)
    assert rig.sp.stopped
    assert rig.dp.owned().links == frozenset()  # the teardown still ran


async def test_end_grace_before_the_grace_skips_it(rig: Rig) -> None:
    rig.rec.end_grace()
    task = asyncio.create_task(rig.rec.shutdown(grace=GRACE, keep_dataplane=True))
    await asyncio.wait_for(task, 1.0)
    assert rig.sp.stopped
    assert rig.dp.owned().links  # keep_dataplane: nothing removed


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_second_signal_ends_the_grace(tmp_path: Path, sig: signal.Signals) -> None:
    raw = raw_config(tmp_path)
    raw["node"]["shutdown_grace"] = GRACE
    h = Harness(tmp_path, raw)
    await h.start()
    await h.until(lambda: VIP in h.announced())
    _install_signals(h.agent)
    task = h.task
    assert task is not None
    try:
        os.kill(os.getpid(), sig)
        await h.until(lambda: h.agent.stopping.is_set() and not h.announced(), limit=2.0)
        began = h.clock.now()
        await h.clock.advance(5.0)
        assert not task.done()  # in the grace, sessions up
        assert not h.speaker.stopped
        os.kill(os.getpid(), sig)
        waited = await h.until(task.done, limit=GRACE)
    finally:
        loop = asyncio.get_running_loop()
        for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(s)
    assert waited < 1.0, f"the second signal did not end the grace ({waited:.1f} s more)"
    assert h.clock.now() - began < GRACE / 2
    assert task.result() == 0
    assert h.speaker.stopped
    assert h.dataplane.owned().links == frozenset()  # torn down as usual
