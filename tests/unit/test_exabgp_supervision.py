"""Supervision of ExaBGP against the fake (tests/harness/fake_exabgp.py): the ack deadline,
the heartbeat, bounded retries of refused commands, escalation, slow starts, backoff."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator

import pytest

from bgplb.bgp.base import SpeakerError, Supervision
from bgplb.bgp.channel import AckDeadline
from bgplb.bgp.exabgp import ExaBGPSpeaker
from bgplb.bgp.supervisor import REASONS
from bgplb.metrics import Metrics
from bgplb.model import PeerState
from tests.harness.netns import tempdir

from .test_exabgp_speaker import FAKE, PEER, PEER2, Env, cfg, routes, until

FAST = AckDeadline(base=0.5, per_command=0.001)


def speaker(**kw: object) -> ExaBGPSpeaker:
    return ExaBGPSpeaker(exabgp=[sys.executable, str(FAKE)], backoff_initial=0.05, **kw)  # type: ignore[arg-type]


async def up(env: Env, s: ExaBGPSpeaker, within: float = 10.0) -> None:
    await s.start(cfg(env.rundir), env.wake)
    await until(lambda: s.peers()[PEER].state is PeerState.UP, within)


@pytest.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    base = tempdir("u")
    e = Env(base / "run")
    monkeypatch.setenv("FAKE_EXABGP_LOG", str(e.log))
    yield e
    shutil.rmtree(base, ignore_errors=True)


def cont(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


async def test_stopped_exabgp_with_commands_waiting_is_replaced(env: Env) -> None:
    s = speaker(ack_deadline=FAST, heartbeat=60.0)
    await up(env, s)
    old = s.pid
    try:
        await s.set_routes({PEER: routes(5)})
        await until(lambda: len(env.lines()) == 5)
        assert old is not None
        os.kill(old, signal.SIGSTOP)
        await s.set_routes({PEER: routes(8)})  # 3 commands that will never be acked
        await until(lambda: s.restarts() == 1 and s.pid not in (None, old), 5)
        assert s.supervision().ack_timeouts == 1
        assert s.supervision().restart_reasons["ack_timeout"] == 1
        new = s.pid
        await until(lambda: len([c for p, c in env.lines() if p == new]) >= 8)  # all re-sent
        await until(lambda: s.advertised().get(PEER) == routes(8))
    finally:
        cont(old)
        await s.stop()


async def test_idle_stopped_exabgp_is_caught_by_the_heartbeat(env: Env) -> None:
    s = speaker(ack_deadline=FAST, heartbeat=0.3)
    await up(env, s)
    old = s.pid
    try:
        await s.set_routes({PEER: routes(2)})
        await until(lambda: any(c == "version" for _, c in env.lines()), 5)  # heartbeats flow
        assert s.commands_sent == 2  # a heartbeat is not a route command
        assert s.restarts() == 0
        assert old is not None
        os.kill(old, signal.SIGSTOP)  # nothing else is sent: only the heartbeat can tell
        await until(lambda: s.restarts() == 1 and s.pid not in (None, old), 5)
        assert s.supervision().ack_timeouts == 1
        new = s.pid
        await until(lambda: len([c for p, c in env.lines() if p == new and "announce" in c]) >= 2)
    finally:
        cont(old)
        await s.stop()


async def test_refused_withdraw_is_retried(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_EXABGP_REFUSE", " withdraw ")
    monkeypatch.setenv("FAKE_EXABGP_REFUSE_COUNT", "2")
    s = speaker(retry_delay=0.05)
    await up(env, s)
    try:
        await s.set_routes({PEER: routes(3)})
        await s.set_routes({PEER: routes(2)})  # one withdraw: refused twice, then taken
        await until(lambda: len([c for _, c in env.lines() if " withdraw " in c]) == 3)
        assert s.command_retries == 2
        assert s.commands_failed == 2
        assert s.restarts() == 0
        assert s.advertised()[PEER] == routes(2)
    finally:
        await s.stop()


async def test_withdraw_refused_for_good_restarts_exabgp(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EXABGP_REFUSE", r"withdraw route 10\.99\.0\.2/32")
    s = speaker(retry_delay=0.05, max_retries=2)
    await up(env, s)
    old = s.pid
    try:
        await s.set_routes({PEER: routes(3)})
        await s.set_routes({PEER: routes(2)})
        await until(lambda: s.restarts() == 1 and s.pid not in (None, old), 5)
        assert len([c for p, c in env.lines() if p == old and " withdraw " in c]) == 3
        assert s.supervision().restart_reasons["withdraw_refused"] == 1
        new = s.pid  # the fresh ExaBGP gets the wanted set, without the route
        await until(lambda: len([c for p, c in env.lines() if p == new]) >= 2)
        assert not any("10.99.0.2/32" in c for p, c in env.lines() if p == new)
    finally:
        await s.stop()


async def test_refused_announce_is_retried_a_bounded_number_of_times(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EXABGP_REFUSE", r"announce route 10\.99\.0\.1/32")
    s = speaker(retry_delay=0.05, max_retries=2)
    await up(env, s)
    try:
        for _ in range(10):  # every reconcile pass hands the same set again
            await s.set_routes({PEER: routes(2)})
            await until(lambda: len(s._link.acks) == 0)
        tries = [c for _, c in env.lines() if "10.99.0.1/32" in c]
        assert len(tries) == 3  # the first attempt + 2 retries, not one per pass
        assert s.command_retries == 2
        assert s.restarts() == 0
        assert s.advertised()[PEER] == routes(1)
    finally:
        await s.stop()


async def test_slow_start_that_progresses_is_not_killed(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # io_timeout=0.3 gave 5a7e1fe a 0.9 s "relay did not connect" kill: it never came up
    monkeypatch.setenv("FAKE_EXABGP_START_DELAY", "2.5")
    monkeypatch.setenv("FAKE_EXABGP_START_MODE", "print")
    s = speaker(io_timeout=0.3)
    try:
        await up(env, s, within=15)
        assert s.restarts() == 0
    finally:
        await s.stop()


async def test_slow_start_on_cpu_only_is_not_killed(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EXABGP_START_DELAY", "2.5")
    monkeypatch.setenv("FAKE_EXABGP_START_MODE", "cpu")
    s = speaker(stall_timeout=0.9)
    try:
        await up(env, s, within=15)
        assert s.restarts() == 0
    finally:
        await s.stop()


async def test_start_without_progress_is_killed(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_EXABGP_START_DELAY", "30")
    monkeypatch.setenv("FAKE_EXABGP_START_MODE", "silent")
    s = speaker(stall_timeout=1.0)
    try:
        await s.start(cfg(env.rundir), env.wake)
        await until(lambda: s.supervision().restart_reasons["start_stalled"] >= 1, 10)
    finally:
        await s.stop()


def _waits(caplog: pytest.LogCaptureFixture) -> list[float]:
    found = (re.search(r"restart #\d+ in ([\d.]+)s", r.getMessage()) for r in caplog.records)
    return [float(m.group(1)) for m in found if m]


async def test_backoff_grows_when_a_slow_start_dies_soon_after_connecting(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Up for 1.5 s since spawn, but healthy for only 0.3 s: not a stable run.
    caplog.set_level(logging.WARNING, logger="bgplb.bgp")
    monkeypatch.setenv("FAKE_EXABGP_START_DELAY", "1.2")
    monkeypatch.setenv("FAKE_EXABGP_EXIT_AFTER", "0.3")
    s = speaker(stable_after=1.0, backoff_max=1.0)
    try:
        await s.start(cfg(env.rundir), env.wake)
        await until(lambda: s.restarts() >= 3, 20)
        assert _waits(caplog)[:3] == [0.05, 0.1, 0.2]
    finally:
        await s.stop()


async def test_backoff_resets_after_a_stable_run(
    env: Env, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bgplb.bgp")
    monkeypatch.setenv("FAKE_EXABGP_EXIT_AFTER", "2.0")  # healthy for ~1.5-2 s
    s = speaker(stable_after=0.5, backoff_max=1.0)
    try:
        await s.start(cfg(env.rundir), env.wake)
        await until(lambda: s.restarts() >= 3, 20)
        assert _waits(caplog)[:3] == [0.05, 0.05, 0.05]
    finally:
        await s.stop()


async def test_corrupt_config_is_regenerated_before_a_restart(env: Env) -> None:
    s = speaker()
    await up(env, s)
    old = s.pid
    try:
        conf = env.rundir / "exabgp.conf"
        good = conf.read_text()
        conf.write_text("neighbor {{{ garbage\n")  # 5a7e1fe restarted ExaBGP on this forever
        assert old is not None
        os.kill(old, signal.SIGKILL)
        await until(lambda: s.pid not in (None, old) and s.peers()[PEER].state is PeerState.UP)
        assert conf.read_text() == good
        assert s.restarts() == 1
    finally:
        await s.stop()


async def test_config_path_taken_by_a_directory_is_moved_aside(env: Env) -> None:
    (env.rundir / "exabgp.conf").mkdir(parents=True)
    s = speaker()
    try:
        await up(env, s)
        assert (env.rundir / "exabgp.conf").is_file()
        assert [p.name for p in env.rundir.glob("exabgp.conf.broken-*")]
    finally:
        await s.stop()


async def test_refused_reload_leaves_the_old_config_in_force(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EXABGP_REFUSE", "^reload$")
    s = speaker()
    await up(env, s)
    try:
        conf = env.rundir / "exabgp.conf"
        before = conf.read_text()
        with pytest.raises(SpeakerError):
            await s.reconfigure(cfg(env.rundir, (PEER, PEER2)))
        assert conf.read_text() == before
        assert set(s.peers()) == {PEER}
        await s.set_routes({PEER: routes(2), PEER2: routes(2)})
        await until(lambda: len(env.lines()) >= 3)  # reload + 2 announces, none for PEER2
        assert not any(PEER2 in c for _, c in env.lines())
        assert s.advertised()[PEER] == routes(2)
    finally:
        await s.stop()


class _Supervised:
    def __init__(self) -> None:
        self.sup = Supervision()

    def restarts(self) -> int:
        return sum(self.sup.restart_reasons.values())

    def supervision(self) -> Supervision:
        return self.sup


def test_metrics_follow_the_supervision_totals() -> None:
    m = Metrics()
    sp = _Supervised()
    m.set_speaker(sp)
    sample = m.registry.get_sample_value
    assert sample("bgplb_speaker_ack_timeouts_total") == 0.0
    reasons = dict.fromkeys(REASONS, 0) | {"ack_timeout": 2, "exited": 1}
    sp.sup = Supervision(
        ack_timeouts=2, command_retries=3, commands_refused=4, restart_reasons=reasons
    )
    m.set_speaker(sp)
    m.set_speaker(sp)  # totals, not increments: a second look adds nothing
    assert sample("bgplb_speaker_ack_timeouts_total") == 2.0
    assert sample("bgplb_speaker_command_retries_total") == 3.0
    assert sample("bgplb_speaker_commands_refused_total") == 4.0
    by_reason = "bgplb_speaker_restarts_by_reason_total"
    assert sample(by_reason, {"reason": "ack_timeout"}) == 2.0
    assert sample(by_reason, {"reason": "start_stalled"}) == 0.0
    assert sample("bgplb_speaker_restarts_total") == 3.0


async def test_a_crash_is_counted_as_exited_not_as_a_lost_relay(env: Env) -> None:
    s = speaker()
    await up(env, s)
    try:
        for i in range(1, 4):
            old = s.pid
            assert old is not None
            os.kill(old, signal.SIGKILL)
            await until(lambda old=old: s.pid not in (None, old))
            await until(lambda: s.peers()[PEER].state is PeerState.UP)
            assert s.supervision().restart_reasons["exited"] == i
        assert s.supervision().restart_reasons["relay_lost"] == 0
    finally:
        await s.stop()


async def test_an_unwritable_config_file_does_not_stop_the_agent(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full runtime_dir (ENOSPC on the rendered config) at start: start() returns, the
    problem is in config_health, no ExaBGP runs; once the write works ExaBGP starts."""
    from bgplb.bgp import render

    real = render.write_private
    full = True

    def write(path: os.PathLike[str], text: str) -> None:
        if full:
            raise OSError(28, "No space left on device")
        real(path, text)  # type: ignore[arg-type]

    monkeypatch.setattr(render, "write_private", write)
    s = speaker()
    try:
        await s.start(cfg(env.rundir), env.wake)  # on 5a7e1fe: SpeakerError out of start()
        assert s.config_health.problem is not None
        assert "No space left on device" in s.config_health.problem
        assert s.config_health.errors >= 1
        assert s.pid is None
        full = False
        await until(lambda: s.peers()[PEER].state is PeerState.UP, 15)
        assert s.config_health.problem is None
    finally:
        await s.stop()
