"""The event loop lag monitor and ``bgplb_event_loop_lag_seconds``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bgplb.looplag import LoopLagMonitor
from bgplb.metrics import LOOP_LAG_BUCKETS, Metrics

from .test_agent import Harness


async def test_a_blocked_loop_is_seen_once_as_one_late_tick() -> None:
    lags: list[float] = []
    mon = LoopLagMonitor(lags.append, interval=0.01)
    mon.start()
    mon.start()  # idempotent: one tick chain
    await asyncio.sleep(0.1)
    assert lags, "no tick in 100 ms"
    time.sleep(0.2)  # noqa: ASYNC251 - the point: a blocking call on the loop
    await asyncio.sleep(0.05)
    mon.stop()
    seen = len(lags)
    await asyncio.sleep(0.05)
    assert len(lags) == seen  # stopped
    assert max(lags) >= 0.19
    assert sum(1 for x in lags if x >= 0.1) == 1  # no burst of catch-up ticks
    assert min(lags) >= 0.0


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LoopLagMonitor(lambda _: None, interval=0)


def _lag_count(m: Metrics) -> float:
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            if s.name == "bgplb_event_loop_lag_seconds_count":
                return s.value
    raise AssertionError("bgplb_event_loop_lag_seconds is not exposed")


def test_the_histogram_is_in_base_units_around_the_goal() -> None:
    m = Metrics()
    m.event_loop_lag(0.004)
    m.event_loop_lag(0.2)
    assert _lag_count(m) == 2.0
    assert 0.005 in LOOP_LAG_BUCKETS  # the goal (p99 <= 5 ms) is a bucket bound
    text = m.exposition().decode()
    assert 'bgplb_event_loop_lag_seconds_bucket{le="0.005"} 1.0' in text


async def test_the_agent_runs_the_monitor(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    await h.start()
    deadline = time.monotonic() + 10
    while _lag_count(h.agent.metrics) < 3:
        assert time.monotonic() < deadline, "the agent's loop lag monitor does not tick"
        await asyncio.sleep(0.02)
    assert await h.stop() == 0
    assert h.agent.loop_lag.ticks >= 3
