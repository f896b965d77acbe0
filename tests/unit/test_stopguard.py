"""A stop always ends (stopguard.py): a stuck shutdown phase is abandoned after its budget,
logged with the stacks of what was stuck, and the phases after it still run; a process whose
exit waits on a stuck worker thread is ended with the agent's exit code."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import bgplb.agent
from bgplb.dataplane.fake import FakeDataplane
from bgplb.stopguard import bounded_phase

from .test_agent import VIP, Harness

REAL_SECONDS = 20.0  # the old code waited forever: fail instead of hanging the suite


class StuckCloseDataplane(FakeDataplane):
    """close() never returns, like a socket whose close waits on a wedged kernel call."""

    async def close(self) -> None:
        await asyncio.Event().wait()


def timed_out_phases(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        dict(r.__dict__)
        for r in caplog.records
        if getattr(r, "event", None) == "shutdown_phase_timed_out"
    ]


async def stop_within(h: Harness, seconds: float) -> int:
    async with asyncio.timeout(seconds):
        return await h.stop()


async def test_a_stuck_dataplane_close_does_not_keep_the_agent_from_stopping(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bgplb.agent, "TASKS_BUDGET", 0.5)
    h = Harness(tmp_path)
    h.dataplane = StuckCloseDataplane(h.log, h.clock)
    h.agent = h.new_agent()
    await h.start()
    await h.until(lambda: VIP in h.announced())
    caplog.set_level(logging.INFO, logger="bgplb.agent")
    assert await stop_within(h, REAL_SECONDS) == 0
    assert not h.speaker.advertised(), "withdrawn before the stuck phase"
    assert h.speaker.stopped
    [stuck] = timed_out_phases(caplog)
    assert stuck["phase"] == "close the dataplane"
    assert "close" in stuck["tasks"], "the log says where it was stuck"
    assert any(getattr(r, "event", None) == "agent_stopped" for r in caplog.records)


async def test_a_task_that_ignores_cancellation_does_not_stop_the_withdraw_or_teardown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bgplb.agent, "TASKS_BUDGET", 0.5)
    h = Harness(tmp_path)
    released = asyncio.Event()  # the end of the test lets it go (the loop's own close waits)

    async def stubborn() -> None:  # a check runner that swallows its cancellation
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                continue

    h.agent.health.run = stubborn  # type: ignore[method-assign]
    await h.start()
    await h.until(lambda: "10.99.0.2" in {str(a) for a in h.announced()})
    caplog.set_level(logging.INFO, logger="bgplb.agent")
    assert await stop_within(h, REAL_SECONDS) == 0
    assert [p["phase"] for p in timed_out_phases(caplog)] == ["cancel the tasks"]
    assert not h.speaker.advertised()
    assert h.speaker.stopped
    assert not h.dataplane.links, "the teardown ran after the stuck phase"
    released.set()


async def test_bounded_phase_returns_true_for_a_phase_that_ends() -> None:
    async def quick() -> None:
        await asyncio.sleep(0)

    started = time.monotonic()
    assert await bounded_phase("quick", quick(), 5.0)
    assert time.monotonic() - started < 1.0


EXIT_SCRIPT = """
import logging, sys, threading
from bgplb.logs import setup_logging
from bgplb.stopguard import arm_exit
setup_logging("json", "info")
threading.Thread(target=threading.Event().wait, name="wedged").start()  # never returns
arm_exit(3, 0.5)
sys.exit(3)  # the interpreter would now wait for "wedged" forever
"""


def test_arm_exit_ends_a_process_whose_exit_waits_on_a_stuck_thread() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3
    assert time.monotonic() - started < 30
    forced = [json.loads(x) for x in proc.stderr.splitlines() if '"exit_forced"' in x]
    assert forced, proc.stderr
    assert "wedged" in forced[0]["threads"], "the log names the thread that held the exit"
