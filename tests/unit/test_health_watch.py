"""``watch_connection`` against a target that closes idle connections at once: the dropped
watch probes at most once an interval (no drop -> probe -> new watch -> drop spin), and every
drop is counted."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

from bgplb.clock import SystemClock
from bgplb.config import TcpCheck
from bgplb.health.runner import HealthRunner
from bgplb.health.targets import ResolvedCheck
from bgplb.health.tracker import INITIAL, CheckKey, CheckResult
from bgplb.metrics import Metrics
from bgplb.model import CheckStatus
from tests.unit.test_health_runner import Harness, configure, spec

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def tcp(port: int, **kw: Any) -> ResolvedCheck:
    check = TcpCheck.model_validate({"type": "tcp", **kw})
    return ResolvedCheck(CheckKey("web", None, check.label), check, LOOPBACK, port)


class Closer:
    """A loopback server that accepts every connection and closes it at once (FIN)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.accepted += 1
            w.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


async def _until(predicate: Any, within: float) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - callbacks change the state
            await asyncio.sleep(0.005)


async def test_a_target_closing_idle_connections_at_once_costs_one_extra_probe_an_interval() -> (
    None
):
    closer = Closer()
    port = await closer.start()
    interval, window = 0.25, 1.0
    check = tcp(port, watch_connection=True, interval=interval, rise=1, fall=1)
    results: list[CheckResult] = []
    lost: list[bool] = []
    metrics = Metrics()
    runner = HealthRunner(SystemClock(), lambda: None)
    runner.on_result = lambda k, r, s: results.append(r)

    def on_lost(key: CheckKey, probed: bool) -> None:
        lost.append(probed)
        metrics.watch_lost(key, probed)

    runner.on_watch_lost = on_lost
    runner.configure_checks({check.key: check})
    task = asyncio.create_task(runner.run())
    try:
        await _until(lambda: results and results[-1].ok, 3.0)
        probes, accepted, drops = len(results), closer.accepted, len(lost)
        await asyncio.sleep(window)
        probes, accepted = len(results) - probes, closer.accepted - accepted
        in_window = lost[drops:]
        status = runner.snapshot()[check.key].status
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert closer.server is not None
        closer.server.close()
    print(
        f"{window:g} s at interval {interval:g} s: {probes} probes, {accepted} connections, "
        f"{len(lost)} watches lost ({sum(lost)} probed at once)"
    )
    # one scheduled probe and at most one drop-driven probe per interval (+1 at the edges)
    assert probes <= 2 * window / interval + 2, f"probe storm: {probes} probes"
    # each probe opens one connection and a healthy probe one watch
    assert accepted <= 2 * probes + 2
    assert status is CheckStatus.UP
    assert all(r.ok for r in results)
    # every drop is counted, probed or skipped; the first drop probes at once, then at
    # most one an interval does (the FakeClock test below pins the exact rule)
    assert lost
    assert lost[0] is True
    assert in_window
    assert sum(in_window) <= window / interval + 1
    text = metrics.exposition().decode()
    probed = 'bgplb_check_watch_lost_total{service="web",target="",check="tcp",action="probed"}'
    assert f"{probed} {float(sum(lost))}" in text, text
    if not all(lost):
        skipped = probed.replace("probed", "skipped")
        assert f"{skipped} {float(len(lost) - sum(lost))}" in text


async def test_a_drop_within_an_interval_of_the_last_probed_one_waits_for_the_schedule() -> None:
    """FakeClock: the first drop probes at once; another within ``interval`` of it does not
    (the scheduled probe comes at most an interval later); one after that probes again.
    Every drop reaches ``on_watch_lost`` with whether it probed."""
    h = Harness("callback")
    lost: list[tuple[float, bool]] = []
    h.runner.on_watch_lost = lambda key, probed: lost.append((h.clock.now(), probed))
    task = asyncio.create_task(h.runner.run())
    configure(h, spec(interval=2.0, rise=1, fall=1))
    await h.until("c", CheckStatus.UP, 3.0)
    await h.clock.advance(0.5)
    starts = h.prober.starts["c"]
    before, first = len(starts), h.clock.now()
    h.prober.pokes["c"]()
    await h.clock.advance(0.0)
    assert starts[before:] == [first]  # at once
    await h.clock.advance(1.0)
    h.prober.pokes["c"]()  # 1 s after the probed drop: skipped
    await h.clock.advance(0.5)
    assert len(starts) == before + 1
    await h.clock.advance(0.5)  # the schedule restarted at the first drop: first + 2.0
    assert len(starts) == before + 2
    assert starts[-1] == pytest.approx(first + 2.0, abs=0.02)
    h.prober.pokes["c"]()  # 2 s after the probed drop: probes again
    await h.clock.advance(0.0)
    assert len(starts) == before + 3
    assert [p for _, p in lost] == [True, False, True]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_the_watch_counter_goes_with_its_check() -> None:
    metrics = Metrics()
    key = CheckKey("web", "192.0.2.10:80", "http")
    metrics.set_check_states({key: INITIAL})
    metrics.watch_lost(key, True)
    metrics.watch_lost(key, False)
    metrics.watch_lost(key, False)
    text = metrics.exposition().decode()
    labels = 'service="web",target="192.0.2.10:80",check="http"'
    assert f'bgplb_check_watch_lost_total{{{labels},action="probed"}} 1.0' in text
    assert f'bgplb_check_watch_lost_total{{{labels},action="skipped"}} 2.0' in text
    metrics.set_check_states({})  # the check was removed by a reload
    assert "bgplb_check_watch_lost_total{" not in metrics.exposition().decode()
