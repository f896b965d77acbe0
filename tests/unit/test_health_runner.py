"""The scheduler, driven by FakeClock and a scripted prober: no real time, no I/O."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bgplb.clock import FakeClock
from bgplb.config import TcpCheck
from bgplb.health.runner import BACKSTOP, STALL_GRACE, HealthRunner, splay
from bgplb.health.targets import ResolvedCheck, target_address
from bgplb.health.tracker import CheckKey, CheckResult, CheckState
from bgplb.model import CheckStatus

UP, DOWN = CheckStatus.UP, CheckStatus.DOWN
EPS = 1e-9


D = TcpCheck(type="tcp")  # the documented defaults the timing tests hold to


def spec(check: str = "c", service: str = "web", **kw: Any) -> ResolvedCheck:
    key = CheckKey(service, None, check)
    tcp = TcpCheck.model_validate({"type": "tcp", "name": check, **kw})
    return ResolvedCheck(key, tcp, ipaddress.ip_address("127.0.0.1"), 80)


class ScriptedProber:
    """``mode[check name]``: ok | dead (fails at once) | hung (fails after the timeout) |
    slow:<s> (succeeds after s) | slowonce:<s> | stuck (never returns) | crash (raises) |
    once (fails once)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.mode: dict[str, str] = {}
        self.starts: dict[str, list[float]] = {}
        self.running: dict[str, int] = {}
        self.max_running: dict[str, int] = {}

    async def probe(self, target: ResolvedCheck) -> str | None:
        name = target.key.check
        self.starts.setdefault(name, []).append(self.clock.now())
        self.running[name] = self.running.get(name, 0) + 1
        self.max_running[name] = max(self.max_running.get(name, 0), self.running[name])
        try:
            return await self._behave(name, target.timeout)
        finally:
            self.running[name] -= 1

    async def _behave(self, name: str, timeout: float) -> str | None:  # noqa: ASYNC109
        mode = self.mode.get(name, "ok")
        if mode == "dead":
            return "connection refused"
        if mode == "hung":
            await self.clock.sleep(timeout)
            return f"timeout after {timeout}s"
        if mode.startswith("slowonce:"):
            self.mode[name] = "ok"
            await self.clock.sleep(float(mode[9:]))
            return None
        if mode.startswith("slow:"):
            await self.clock.sleep(float(mode[5:]))
            return None
        if mode == "stuck":
            await asyncio.Event().wait()
        if mode == "crash":
            raise ValueError("prober bug")
        if mode == "once":
            self.mode[name] = "ok"
            return "lost probe"
        return None


class CallbackScriptedProber(ScriptedProber):
    """The same script behind the callback interface (``supports``/``start``): the runner
    drives these checks from clock timers instead of a task per check."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.cancelled = 0
        self.pokes: dict[str, Callable[[], None]] = {}  # per check: the runner's poke
        self.closed: list[str] = []  # checks whose starter was closed

    def starter(self, target: ResolvedCheck, poke: Callable[[], None]) -> ScriptedStarter:
        self.pokes[target.key.check] = poke
        return ScriptedStarter(self, target)


class ScriptedStarter:
    def __init__(self, prober: CallbackScriptedProber, target: ResolvedCheck) -> None:
        self.prober, self.target = prober, target

    def __call__(self, report: Callable[[str | Exception | None], None]) -> Callable[[], None]:
        async def run() -> None:
            try:
                result: str | Exception | None = await self.prober.probe(self.target)
            except Exception as exc:
                result = exc
            report(result)

        task = asyncio.get_running_loop().create_task(run())

        def cancel() -> None:
            if not task.done():
                self.prober.cancelled += 1
                task.cancel()

        return cancel

    def close(self) -> None:
        self.prober.closed.append(self.target.key.check)


FLAVOURS = {"task": ScriptedProber, "callback": CallbackScriptedProber}


class Harness:
    def __init__(self, flavour: str = "task") -> None:
        self.flavour = flavour
        self.clock = FakeClock()
        self.prober = FLAVOURS[flavour](self.clock)
        self.wakes = 0
        self.results: list[tuple[CheckKey, CheckResult, CheckState]] = []
        self.runner = HealthRunner(self.clock, self.wake, self.prober)
        self.runner.on_result = lambda k, r, s: self.results.append((k, r, s))

    def wake(self) -> None:
        self.wakes += 1

    def state(self, check: str = "c") -> CheckState:
        return self.runner.snapshot()[CheckKey("web", None, check)]

    async def until_result(
        self, pred: Callable[[CheckState], bool], limit: float, check: str = "c"
    ) -> None:
        """Advance until ``pred(state of check)`` holds."""
        end = self.clock.now() + limit
        while not pred(self.state(check)):
            assert self.clock.now() < end, f"{check}: condition not reached within {limit}s"
            await self.clock.advance(0.01)

    async def until(
        self, check: str, status: CheckStatus, limit: float, step: float = 0.01
    ) -> float:
        """Advance until ``check`` has ``status``; returns the time it changed."""
        end = self.clock.now() + limit
        while self.state(check).status is not status:
            assert self.clock.now() < end, f"{check} not {status} within {limit}s"
            await self.clock.advance(step)
        changed = self.state(check).changed_at
        assert changed is not None
        return changed


@pytest.fixture(params=sorted(FLAVOURS))
async def h(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """Every scheduling test runs twice: checks driven by a task each, and checks driven by
    clock callbacks (what the real prober's http and tcp checks use)."""
    harness = Harness(request.param)
    task = asyncio.create_task(harness.runner.run())
    yield harness
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def configure(h: Harness, *specs: ResolvedCheck) -> None:
    h.runner.configure_checks({s.key: s for s in specs})


async def test_new_check_starts_down_and_rises_after_rise_successes(h: Harness) -> None:
    start = h.clock.now()
    configure(h, spec())
    assert h.state().status is DOWN
    assert h.state().last is None
    up_at = await h.until("c", UP, 2.0)
    starts = h.prober.starts["c"]
    assert len(starts) == 3  # rise = 3
    assert start <= starts[0] < start + D.interval  # within the first interval (splay)
    assert starts[1] - starts[0] == pytest.approx(0.25)  # fast interval while rising
    assert up_at == pytest.approx(starts[2])
    assert h.wakes == 1


PHASES = [0.0, 0.1, 0.26, 0.52, 0.74, 0.98]  # where in the interval the failure starts


@pytest.mark.parametrize("phase", PHASES)
async def test_dead_backend_is_down_within_1_5_s(h: Harness, phase: float) -> None:
    configure(h, spec())
    await h.until("c", UP, 2.0)
    await h.clock.advance(1.0 + phase * D.interval)
    failure_start = h.clock.now()
    h.prober.mode["c"] = "dead"
    down_at = await h.until("c", DOWN, 2.0)
    assert down_at - failure_start <= 1.5
    assert D.fast_interval is not None
    assert down_at - failure_start <= D.interval + D.fast_interval + EPS  # next tick + fast tick
    assert h.wakes == 2


@pytest.mark.parametrize("phase", PHASES)
async def test_hung_backend_is_down_within_3_s(h: Harness, phase: float) -> None:
    configure(h, spec())
    await h.until("c", UP, 2.0)
    await h.clock.advance(1.0 + phase * D.interval)
    failure_start = h.clock.now()
    h.prober.mode["c"] = "hung"
    down_at = await h.until("c", DOWN, 4.0)
    assert down_at - failure_start <= 3.0
    assert down_at - failure_start <= D.interval + 2 * D.timeout + EPS  # tick + two timeouts


async def test_one_lost_probe_never_flaps(h: Harness) -> None:
    configure(h, spec())
    await h.until("c", UP, 2.0)
    wakes = h.wakes
    for _ in range(5):
        h.prober.mode["c"] = "once"
        for _ in range(300):
            await h.clock.advance(0.01)
            assert h.state().status is UP
    assert h.wakes == wakes
    assert sum(1 for _, r, _ in h.results if not r.ok) == 5


async def test_intervals_do_not_drift_with_probe_latency(h: Harness) -> None:
    configure(h, spec(interval=0.5))
    h.prober.mode["c"] = "slow:0.1"
    await h.clock.advance(60.0)
    starts = h.prober.starts["c"]
    steady = [t for t in starts if t >= starts[0] + 1.0]  # past the rise phase
    assert len(steady) > 100
    assert all((b - a) == pytest.approx(0.5) for a, b in itertools.pairwise(steady))
    grid = steady[0]
    assert steady[-1] == pytest.approx(grid + 0.5 * (len(steady) - 1))


async def test_overrunning_probe_is_waited_for_and_missed_ticks_are_skipped(h: Harness) -> None:
    configure(h, spec(interval=0.5, fast_interval=0.5, timeout=2.0))
    h.prober.mode["c"] = "slow:1.2"
    await h.clock.advance(10.0)
    starts = h.prober.starts["c"]
    assert len(starts) >= 7
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g == pytest.approx(1.2) for g in gaps)  # back to back, no burst of missed ticks
    assert h.prober.max_running["c"] == 1  # never two probes of one check at once


async def test_after_one_long_probe_the_missed_ticks_are_not_burst(h: Harness) -> None:
    configure(h, spec(interval=0.5, timeout=5.0))
    await h.until("c", UP, 2.0)
    await h.clock.advance(1.0)
    h.prober.mode["c"] = "slowonce:3.1"
    await h.clock.advance(10.0)
    starts = h.prober.starts["c"]
    slow = next(i for i, t in enumerate(starts) if t >= h.clock.now() - 10.0)
    after = starts[slow + 1 :]
    assert after[0] == pytest.approx(starts[slow] + 3.1)  # waited for, then at once
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert len(gaps) > 10
    assert all(g == pytest.approx(0.5) for g in gaps)  # no burst of the six missed ticks


async def test_hung_check_does_not_delay_another(h: Harness) -> None:
    configure(h, spec("hung", timeout=1.0), spec("fine", interval=0.5))
    h.prober.mode["hung"] = "hung"
    await h.clock.advance(30.0)
    fine = [t for t in h.prober.starts["fine"] if t >= h.prober.starts["fine"][0] + 1.0]
    assert all((b - a) == pytest.approx(0.5) for a, b in itertools.pairwise(fine))
    assert len(h.prober.starts["hung"]) == pytest.approx(30, abs=2)  # one per timeout
    assert h.state("fine").status is UP
    assert h.state("hung").status is DOWN


def test_splay_is_deterministic_and_spread() -> None:
    keys = [CheckKey("web", f"10.0.0.{i}:80", "http") for i in range(200)]
    offsets = [splay(k, 0.5) for k in keys]
    assert offsets == [splay(k, 0.5) for k in keys]
    assert all(0.0 <= o < 0.5 for o in offsets)
    assert len(set(offsets)) == len(offsets)
    assert min(offsets) < 0.05
    assert max(offsets) > 0.45


async def test_first_probes_are_spread_over_the_first_interval(h: Harness) -> None:
    start = h.clock.now()
    configure(h, *(spec(f"c{i}") for i in range(20)))
    await h.clock.advance(D.interval)
    firsts = sorted(starts[0] for starts in h.prober.starts.values())
    assert len(firsts) == 20
    assert all(start <= t < start + D.interval for t in firsts)
    assert len(set(firsts)) > 15


async def test_fast_interval_while_falling(h: Harness) -> None:
    configure(h, spec(interval=2.0, fast_interval=0.25, fall=3))
    await h.until("c", UP, 5.0)
    await h.clock.advance(3.0)
    h.prober.mode["c"] = "dead"
    await h.until("c", DOWN, 5.0)
    starts = h.prober.starts["c"]
    assert starts[-1] - starts[-2] == pytest.approx(0.25)
    assert starts[-2] - starts[-3] == pytest.approx(0.25)
    await h.clock.advance(10.0)  # DOWN and steady: back to the normal interval
    assert h.prober.starts["c"][-1] - h.prober.starts["c"][-2] == pytest.approx(2.0)


async def test_reconfigure_keeps_unchanged_starts_new_down_and_forgets_removed(
    h: Harness,
) -> None:
    configure(h, spec("same"), spec("removed"))
    await h.until("same", UP, 2.0)
    same_before = h.state("same")
    removed_probes = len(h.prober.starts["removed"])
    wakes = h.wakes
    configure(h, spec("same"), spec("new"))
    snap = h.runner.snapshot()
    assert snap[CheckKey("web", None, "same")] is same_before
    assert snap[CheckKey("web", None, "new")].status is DOWN
    assert CheckKey("web", None, "removed") not in snap
    assert h.wakes == wakes  # configure itself wakes nobody
    await h.clock.advance(3.0)
    assert len(h.prober.starts["removed"]) == removed_probes
    assert h.state("new").status is UP
    # the unchanged check kept its grid
    same = h.prober.starts["same"]
    assert all((b - a) == pytest.approx(D.interval) for a, b in itertools.pairwise(same[3:]))


async def test_a_renamed_service_is_a_new_service(h: Harness) -> None:
    configure(h, spec("c", service="web"))
    await h.until("c", UP, 2.0)
    configure(h, spec("c", service="www"))
    snap = h.runner.snapshot()
    assert list(snap) == [CheckKey("www", None, "c")]
    assert snap[CheckKey("www", None, "c")].status is DOWN


async def test_timing_change_keeps_state_and_counters(h: Harness) -> None:
    """The defect of issue 13: a timing change restarted the check DOWN (a withdraw)."""
    configure(h, spec(interval=1.0, fall=3))
    await h.until("c", UP, 3.0)
    h.prober.mode["c"] = "once"  # one failure: UP with failures=1
    await h.until_result(lambda s: s.failures == 1, 3.0)
    before = h.state()
    wakes = h.wakes
    configure(h, spec(interval=0.5, timeout=0.4, fast_interval=0.2, rise=2, fall=3))
    assert h.state() is before  # same state object: status, counters, last result
    for _ in range(300):
        await h.clock.advance(0.01)
        assert h.state().status is UP
    assert h.wakes == wakes


async def test_shorter_interval_does_not_wait_out_the_old_one(h: Harness) -> None:
    configure(h, spec(interval=10.0, fast_interval=0.25, timeout=0.8))
    await h.until("c", UP, 12.0)
    await h.clock.advance(10.0)  # steady: probes 10 s apart
    last = h.prober.starts["c"][-1]
    await h.clock.advance(last + 1.0 - h.clock.now())  # 1 s after the last probe
    changed_at = h.clock.now()
    configure(h, spec(interval=2.0, fast_interval=0.25, timeout=0.8))
    await h.clock.advance(0.01)
    # the next probe: last + 2 s (the new interval), not last + 10 s
    await h.clock.advance(last + 2.0 + 0.05 - h.clock.now())
    starts = h.prober.starts["c"]
    assert starts[-1] == pytest.approx(last + 2.0, abs=0.02), (last, changed_at, starts[-3:])
    await h.clock.advance(4.0)
    starts = h.prober.starts["c"]
    assert starts[-1] - starts[-2] == pytest.approx(2.0)
    assert h.state().status is UP


async def test_longer_interval_applies_from_the_next_probe(h: Harness) -> None:
    configure(h, spec(interval=1.0))
    await h.until("c", UP, 3.0)
    await h.clock.advance(2.0)
    last = h.prober.starts["c"][-1]
    configure(h, spec(interval=5.0))
    await h.clock.advance(last + 1.0 + 0.05 - h.clock.now())
    assert h.prober.starts["c"][-1] == pytest.approx(last + 1.0)  # the old deadline stands
    await h.clock.advance(5.0)
    starts = h.prober.starts["c"]
    assert starts[-1] - starts[-2] == pytest.approx(5.0)  # then the new interval


async def test_a_lower_fall_applies_to_the_next_result(h: Harness) -> None:
    configure(h, spec(interval=1.0, fast_interval=1.0, fall=5))
    await h.until("c", UP, 5.0)
    h.prober.mode["c"] = "dead"
    await h.until_result(lambda s: s.failures == 2, 3.0)
    assert h.state().status is UP
    configure(h, spec(interval=1.0, fast_interval=1.0, fall=3))
    assert h.state().failures == 2  # counters kept
    await h.until_result(lambda s: s.failures == 3, 2.0)
    assert h.state().status is DOWN


async def test_target_change_keeps_up_probes_at_once_and_falls_after_fall_failures(
    h: Harness,
) -> None:
    configure(h, spec(interval=5.0, fast_interval=0.25, fall=3, port=80))
    await h.until("c", UP, 10.0)
    await h.clock.advance(1.0)
    probes = len(h.prober.starts["c"])
    wakes = h.wakes
    h.prober.mode["c"] = "dead"  # the new port is closed
    changed = h.clock.now()
    configure(h, spec(interval=5.0, fast_interval=0.25, fall=3, port=81))
    state = h.state()
    assert state.status is UP
    assert (state.successes, state.failures) == (0, 0)
    await h.clock.advance(0.01)
    assert len(h.prober.starts["c"]) == probes + 1  # probed at once
    assert h.prober.starts["c"][-1] == pytest.approx(changed)
    assert h.state().status is UP  # one failure is not `fall`
    down_at = await h.until("c", DOWN, 2.0)
    starts = h.prober.starts["c"][probes:]
    assert len(starts) == 3  # exactly `fall` failures in a row
    assert all(b - a == pytest.approx(0.25) for a, b in itertools.pairwise(starts))
    assert down_at == pytest.approx(changed + 0.5)
    assert h.wakes == wakes + 1


async def test_target_change_that_passes_stays_up_then_back_to_the_interval(h: Harness) -> None:
    configure(h, spec(interval=2.0, fast_interval=0.25, rise=3))
    await h.until("c", UP, 5.0)
    await h.clock.advance(3.0)
    probes = len(h.prober.starts["c"])
    wakes = h.wakes
    configure(h, spec(interval=2.0, fast_interval=0.25, rise=3, address="127.0.0.2"))
    for _ in range(600):
        await h.clock.advance(0.01)
        assert h.state().status is UP
    starts = h.prober.starts["c"][probes:]
    # at once, then fast until `rise` successes confirm the new target, then the interval
    assert starts[1] - starts[0] == pytest.approx(0.25)
    assert starts[2] - starts[1] == pytest.approx(0.25)
    assert starts[3] - starts[2] == pytest.approx(2.0)
    assert h.wakes == wakes


def rs_spec(target: str, port: int, check: str = "c") -> ResolvedCheck:
    tcp = TcpCheck.model_validate({"type": "tcp", "name": check})
    address = ipaddress.ip_address(target_address(target))
    return ResolvedCheck(CheckKey("web", target, check), tcp, address, port)


async def test_a_real_server_whose_port_changed_is_a_target_change(h: Harness) -> None:
    configure(h, rs_spec("10.0.0.5:80", 80), rs_spec("10.0.0.6:80", 80))
    await h.clock.advance(3.0)
    configure(h, rs_spec("10.0.0.5:81", 81), rs_spec("10.0.0.7:80", 80))
    snap = h.runner.snapshot()
    moved = snap[CheckKey("web", "10.0.0.5:81", "c")]
    assert moved.status is UP
    assert (moved.successes, moved.failures) == (0, 0)
    assert snap[CheckKey("web", "10.0.0.7:80", "c")].status is DOWN  # another address: new
    assert set(snap) == {CheckKey("web", "10.0.0.5:81", "c"), CheckKey("web", "10.0.0.7:80", "c")}


def test_target_address_of_every_hostport_form() -> None:
    assert target_address("10.0.0.5:80") == "10.0.0.5"
    assert target_address("[2001:db8::5]:80") == "2001:db8::5"
    assert target_address("2001:db8::5") == "2001:db8::5"
    assert target_address("10.0.0.5") == "10.0.0.5"


async def test_target_change_of_a_down_check_keeps_it_down_until_rise(h: Harness) -> None:
    h.prober.mode["c"] = "dead"
    configure(h, spec(port=80))
    await h.clock.advance(3.0)
    assert h.state().status is DOWN
    h.prober.mode["c"] = "ok"
    configure(h, spec(port=81))
    assert h.state().status is DOWN
    up_at = await h.until("c", UP, 2.0)
    starts = h.prober.starts["c"]
    assert up_at == pytest.approx(starts[-1])
    assert starts[-1] - starts[-3] == pytest.approx(2 * 0.25)  # rise = 3, fast


async def test_configure_before_run_then_run() -> None:
    h = Harness()
    configure(h, spec())
    task = asyncio.create_task(h.runner.run())
    await h.until("c", UP, 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    probes = len(h.prober.starts["c"])
    await h.clock.advance(5.0)
    assert len(h.prober.starts["c"]) == probes  # the check tasks stopped with run()


async def test_on_result_sees_every_result_and_wake_only_changes(h: Harness) -> None:
    configure(h, spec())
    await h.clock.advance(5.0)
    h.prober.mode["c"] = "dead"
    await h.clock.advance(5.0)
    assert len(h.results) == len(h.prober.starts["c"])
    assert all(s.last is r for _, r, s in h.results)
    flips = sum(
        1 for a, b in zip(h.results, h.results[1:], strict=False) if a[2].status != b[2].status
    )
    assert h.wakes == flips == 2  # DOWN->UP, UP->DOWN
    last = h.results[-1][1]
    assert not last.ok
    assert last.error == "connection refused"
    assert last.latency == 0.0


async def test_prober_exception_is_a_failure_not_a_crash(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    configure(h, spec())
    await h.until("c", UP, 2.0)
    h.prober.mode["c"] = "crash"
    with caplog.at_level(logging.ERROR, "bgplb.health"):
        await h.until("c", DOWN, 2.0)
        await h.clock.advance(10.0)
    last = h.state().last
    assert last is not None
    assert last.error == "probe crashed: ValueError: prober bug"
    crashed = [r for r in caplog.records if getattr(r, "event", "") == "health_probe_crashed"]
    assert len(crashed) == 1  # rate-limited
    h.prober.mode["c"] = "ok"
    await h.until("c", UP, 2.0)


async def test_repeated_failures_are_logged_once_a_minute(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    configure(h, spec())
    h.prober.mode["c"] = "dead"
    with caplog.at_level(logging.INFO, "bgplb.health"):
        await h.clock.advance(59.0)
        assert len(h.prober.starts["c"]) > 50
        failed = [r for r in caplog.records if getattr(r, "event", "") == "health_check_failed"]
        assert len(failed) == 1
        assert failed[0].__dict__["service"] == "web"
        assert failed[0].__dict__["check"] == "c"
        await h.clock.advance(2.0)
        failed = [r for r in caplog.records if getattr(r, "event", "") == "health_check_failed"]
        assert len(failed) == 2


async def test_failing_hook_does_not_stop_checks(h: Harness) -> None:
    def broken(key: CheckKey, result: CheckResult, state: CheckState) -> None:
        raise RuntimeError("metrics bug")

    h.runner.on_result = broken
    configure(h, spec())
    await h.until("c", UP, 2.0)


async def test_last_progress_ticks_and_stops_when_a_check_is_stuck(h: Harness) -> None:
    if h.flavour == "callback":
        pytest.skip("a callback-driven probe is cut by the tick (next test)")
    configure(h, spec(timeout=1.0))
    await h.clock.advance(3.0)
    assert h.runner.last_progress >= h.clock.now() - 0.5
    h.prober.mode["c"] = "stuck"  # ignores its timeout (in fake time the backstop cannot fire)
    await h.clock.advance(1.0)
    stuck_at = h.prober.starts["c"][-1]
    await h.clock.advance(10.0)
    assert h.runner.last_progress <= stuck_at + 1.0 + BACKSTOP + STALL_GRACE + 0.5
    assert h.clock.now() - h.runner.last_progress > 5.0


async def test_a_stuck_callback_probe_is_cut_by_the_tick_and_checks_go_on() -> None:
    """The backstop of callback-driven checks is the supervisor tick: a probe that never
    reports is cancelled after timeout + BACKSTOP (+ one tick), counted as a failure, and the
    check keeps its schedule; progress never stops."""
    h = Harness("callback")
    task = asyncio.create_task(h.runner.run())
    configure(h, spec(timeout=1.0, fall=1))
    await h.until("c", UP, 4.0)
    h.prober.mode["c"] = "stuck"
    await h.clock.advance(1.0)
    stuck_at = h.prober.starts["c"][-1]
    down_at = await h.until("c", DOWN, 4.0)
    assert stuck_at + 1.0 + BACKSTOP < down_at <= stuck_at + 1.0 + BACKSTOP + 0.5 + EPS
    assert h.state().last is not None
    assert h.state().last.error == "timeout after 1s (prober overran)"
    assert h.prober.cancelled >= 1
    assert h.clock.now() - h.runner.last_progress <= 0.5 + EPS
    h.prober.mode["c"] = "ok"
    await h.until("c", UP, 5.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_reconfigure_and_stop_cancel_callback_probes_in_flight() -> None:
    h = Harness("callback")
    task = asyncio.create_task(h.runner.run())
    configure(h, spec("a"), spec("b"))
    h.prober.mode["a"] = h.prober.mode["b"] = "slow:0.5"
    await h.clock.advance(1.0)  # both have a probe in flight (each takes 0.5 of every 1 s)
    while not (h.prober.running.get("a") and h.prober.running.get("b")):
        await h.clock.advance(0.05)
    configure(h, spec("b"))  # a removed while probing
    await h.clock.settle()
    assert h.prober.running["a"] == 0
    assert h.prober.cancelled == 1
    results_a = sum(1 for k, _, _ in h.results if k.check == "a")
    await h.clock.advance(3.0)
    assert sum(1 for k, _, _ in h.results if k.check == "a") == results_a  # nothing late
    while not h.prober.running.get("b"):
        await h.clock.advance(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await h.clock.settle()
    assert h.prober.running["b"] == 0
    assert h.prober.cancelled == 2


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
async def test_a_dying_check_task_ends_run(flavour: str) -> None:
    h = Harness(flavour)

    def bad_wake() -> None:
        raise RuntimeError("wake bug")

    h.runner = HealthRunner(h.clock, bad_wake, h.prober)
    configure(h, spec(rise=1))  # the first result wakes: the check's driver dies
    task = asyncio.create_task(h.runner.run())
    await h.clock.advance(2.0)
    assert task.done()
    with pytest.raises(RuntimeError, match="a health check task died"):
        await task


async def test_run_twice_is_refused(h: Harness) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        await h.runner.run()


async def test_a_flapping_check_does_not_spam(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    configure(h, spec())
    with caplog.at_level(logging.INFO, "bgplb.health"):
        for _ in range(50):
            h.prober.mode["c"] = "once"
            await h.clock.advance(1.0)
    assert sum(1 for _, r, _ in h.results if not r.ok) == 50
    failed = [r for r in caplog.records if getattr(r, "event", "") == "health_check_failed"]
    assert len(failed) == 1


async def test_a_poke_probes_at_once_unless_a_probe_is_running() -> None:
    """``watch_connection``: the prober pokes when the held connection drops; the runner
    probes at once (not at the next tick of a 5 s interval), and ignores a poke while a
    probe is running (its result is on the way). Stopping closes the check's starter."""
    h = Harness("callback")
    task = asyncio.create_task(h.runner.run())
    configure(h, spec(interval=5.0, rise=1, fall=1))
    await h.until("c", UP, 6.0)
    await h.clock.advance(1.0)
    starts = h.prober.starts["c"]
    before, poked_at = len(starts), h.clock.now()
    h.prober.mode["c"] = "dead"
    h.prober.pokes["c"]()
    await h.clock.advance(0.0)
    assert len(starts) == before + 1
    assert starts[-1] == poked_at
    assert h.state().status is DOWN
    assert h.state().changed_at == poked_at
    h.prober.mode["c"] = "slow:0.5"
    await h.clock.advance(5.0)  # the schedule restarted at the poke
    assert len(starts) == before + 2
    h.prober.pokes["c"]()  # while that probe runs
    await h.clock.advance(0.4)
    assert len(starts) == before + 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert h.prober.closed == ["c"]


async def test_a_carry_over_prepared_before_a_result_keeps_that_result(h: Harness) -> None:
    """A reload computes the carry-over before its switch (HealthRunner.carry_steps, run
    cooperatively); a result that lands in between is not lost: the retimed check is built
    from the entry's state at the switch. A preparation made for other entries is ignored."""
    from bgplb.cooperative import run_to_end

    configure(h, spec(interval=1.0, fall=3))
    await h.until("c", UP, 3.0)
    retimed = spec(interval=0.5, timeout=0.4, fast_interval=0.2, fall=3)
    prepared = run_to_end(h.runner.carry_steps({retimed.key: retimed}))
    h.prober.mode["c"] = "once"  # one failure lands after the preparation
    await h.until_result(lambda s: s.failures == 1, 3.0)
    h.runner.configure_checks({retimed.key: retimed}, prepared)
    assert h.state().failures == 1  # the result that came in between is kept
    assert h.state().status is UP
    # stale: the entries changed since; the carry-over is computed again (a new key: DOWN)
    other = spec(check="d")
    h.runner.configure_checks({other.key: other}, prepared)
    assert set(h.runner.snapshot()) == {other.key}
    assert h.runner.snapshot()[other.key].status is DOWN
