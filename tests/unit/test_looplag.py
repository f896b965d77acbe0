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
from .ticker import lateness_ticker


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


async def test_a_reload_of_a_big_file_does_not_stall_the_loop(tmp_path: Path) -> None:
    """The file is parsed off the loop: a 10 ms ticker keeps running during the reload
    (on 5a7e1fe the whole parse ran on the loop: the ticker stalled for all of it)."""
    from .test_agent import raw_config, write
    from .test_config_offloop import _services

    h = Harness(tmp_path)
    await h.start()
    raw = raw_config(tmp_path)
    raw["services"] += _services(400)
    write(h.path, raw)
    async with lateness_ticker() as lag:
        t0 = time.monotonic()
        result = await h.agent.reload()
        took = time.monotonic() - t0
    assert result.ok, result.errors
    assert len(h.agent.config.services) == 402
    assert lag.worst < took / 2, f"the loop stalled {lag.worst:.3f} s of a {took:.3f} s reload"
    assert await h.stop() == 0


async def test_status_grows_linearly_with_the_services(tmp_path: Path) -> None:
    """build_status grouped nothing: every service sorted all checks, routes and real servers
    (O(n^2): 17 s at 1,000 services, 9 s at 800 on a busy host; now ~0.1 s at 800, the rest
    pydantic and the garbage collector). The bound leaves >10x for a noisy host."""
    from .test_agent import raw_config
    from .test_config_offloop import _services

    async def cost(n: int) -> float:
        raw = raw_config(tmp_path)
        raw["services"] = raw["services"][:1] + _services(n)
        (tmp_path / str(n)).mkdir()
        h = Harness(tmp_path / str(n), raw=raw)
        await h.start()
        await h.agent.reconciler.reconcile_once()
        best = min(_timed(h.agent.status) for _ in range(5))
        assert len(h.agent.status().services) == n + 1
        assert await h.stop() == 0
        return best

    big = await cost(800)
    assert big < 2.0, f"status of 800 services took {big * 1000:.0f} ms"


def _timed(f: object) -> float:
    assert callable(f)
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


async def test_the_tick_interval_comes_from_the_config_and_a_reload_changes_it(
    tmp_path: Path,
) -> None:
    from .test_agent import raw_config, write

    raw = raw_config(tmp_path, loop_lag_interval=0.2)
    h = Harness(tmp_path, raw)
    await h.start()
    assert h.agent.loop_lag.interval == 0.2
    raw["node"]["loop_lag_interval"] = 0.05
    write(h.path, raw)
    result = await h.agent.reload()
    assert result.ok, result.errors
    assert h.agent.loop_lag.interval == 0.05
    assert await h.stop() == 0
