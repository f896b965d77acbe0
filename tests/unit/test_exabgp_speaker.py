"""ExaBGPSpeaker against a fake ExaBGP (tests/harness/fake_exabgp.py): the real relay, the
real unix socket, pipelining, diffs, restarts with re-send, reload, stop. No root needed."""

# Polling a file the fake writes is the point here.
# ruff: noqa: ASYNC110, ASYNC240

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bgplb.bgp.exabgp import ExaBGPSpeaker
from bgplb.config import Config
from bgplb.model import PeerState, Route, RouteAttributes
from tests.harness.netns import tempdir

FAKE = Path(__file__).resolve().parents[1] / "harness" / "fake_exabgp.py"
PEER, PEER2 = "10.0.1.1", "10.0.2.1"


def cfg(rundir: Path, peers: tuple[str, ...] = (PEER,)) -> Config:
    return Config.model_validate(
        {
            "node": {"router_id": "10.0.1.2", "local_as": 65001, "runtime_dir": str(rundir)},
            "peers": [{"address": p, "asn": 65000} for p in peers],
        }
    )


def routes(n: int, med: int | None = None) -> frozenset[Route]:
    a = RouteAttributes(med=med)
    return frozenset(
        Route(ipaddress.ip_network(f"10.99.{i // 200}.{i % 200}/32"), None, a) for i in range(n)
    )


class Env:
    def __init__(self, rundir: Path) -> None:
        self.rundir = rundir
        self.log = rundir.parent / "commands.log"
        self.wakes = 0

    def lines(self) -> list[tuple[int, str]]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            pid, _, cmd = line.partition(" ")
            out.append((int(pid), cmd))
        return out

    def wake(self) -> None:
        self.wakes += 1


async def until(pred: Callable[[], bool], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not pred():
            await asyncio.sleep(0.01)


@pytest.fixture
async def env(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    base = tempdir("u")
    e = Env(base / "run")
    monkeypatch.setenv("FAKE_EXABGP_LOG", str(e.log))
    yield e
    shutil.rmtree(base, ignore_errors=True)


async def started(env: Env, **kw: float) -> ExaBGPSpeaker:
    speaker = ExaBGPSpeaker(exabgp=[sys.executable, str(FAKE)], backoff_initial=0.05, **kw)
    await speaker.start(cfg(env.rundir), env.wake)
    await until(lambda: speaker.peers()[PEER].state is PeerState.UP)
    return speaker


async def test_pipelined_diffs_and_acks(env: Env) -> None:
    speaker = await started(env)
    try:
        await speaker.set_routes({PEER: routes(300)})
        await until(lambda: len(env.lines()) == 300)
        assert speaker.commands_sent == 300
        await speaker.set_routes({PEER: routes(300)})  # nothing changed: nothing sent
        await speaker.set_routes(
            {
                PEER: routes(299)
                | {Route(ipaddress.ip_network("10.99.1.99/32"), None, RouteAttributes(med=1))}
            }
        )
        await until(lambda: len(env.lines()) == 301)
        assert env.lines()[-1][1].endswith("10.99.1.99/32 next-hop self med 1")
        assert speaker.commands_failed == 0
        assert speaker.advertised()[PEER] == routes(299) | {
            Route(ipaddress.ip_network("10.99.1.99/32"), None, RouteAttributes(med=1))
        }
        assert speaker.commands_sent == 301
    finally:
        await speaker.stop()


async def test_restart_resends_current_routes(env: Env) -> None:
    speaker = await started(env)
    try:
        await speaker.set_routes({PEER: routes(10, med=7)})
        await until(lambda: len(env.lines()) == 10)
        old = speaker.pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        await until(lambda: speaker.restarts() == 1 and speaker.pid not in (None, old))
        new = speaker.pid
        await until(lambda: len([c for p, c in env.lines() if p == new]) >= 10)
        resent = [c for p, c in env.lines() if p == new]
        assert all("med 7" in c and "announce" in c for c in resent)
        assert env.wakes >= 1
    finally:
        await speaker.stop()


async def test_reconfigure_reloads_and_sends_the_new_peer(env: Env) -> None:
    speaker = await started(env)
    try:
        want = {PEER: routes(2), PEER2: routes(3)}
        await speaker.set_routes(want)  # PEER2 unknown yet: ignored
        await until(lambda: len(env.lines()) == 2)
        await speaker.reconfigure(cfg(env.rundir, (PEER, PEER2)))
        await speaker.set_routes(want)
        await until(
            lambda: len([c for _, c in env.lines() if c.startswith(f"neighbor {PEER2}")]) >= 3
        )
        cmds = [c for _, c in env.lines()]
        assert "reload" in cmds
        assert cmds.index("reload") < min(i for i, c in enumerate(cmds) if PEER2 in c)
        assert speaker.restarts() == 0
        assert len([c for c in cmds if c.startswith(f"neighbor {PEER} ")]) == 2  # not re-sent
    finally:
        await speaker.stop()


async def test_stop_withdraws_everything_and_reaps(env: Env) -> None:
    speaker = await started(env)
    await speaker.set_routes({PEER: routes(5)})
    await until(lambda: len(env.lines()) == 5)
    pid = speaker.pid
    await speaker.stop()
    withdraws = [c for _, c in env.lines() if " withdraw route " in c]
    assert len(withdraws) == 5
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert speaker.peers()[PEER].state is PeerState.DOWN
    assert not (env.rundir / "api.sock").exists()


async def test_relay_death_restarts_exabgp(env: Env) -> None:
    speaker = await started(env)
    try:
        await speaker.set_routes({PEER: routes(3)})
        await until(lambda: len(env.lines()) == 3)
        pid = speaker.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        assert len(children) == 1  # the relay
        os.kill(int(children[0]), signal.SIGKILL)
        await until(lambda: speaker.restarts() == 1 and speaker.pid not in (None, pid))
        new = speaker.pid
        await until(lambda: len([c for p, c in env.lines() if p == new]) >= 3)
    finally:
        await speaker.stop()


def test_backoff() -> None:
    from bgplb.bgp.process import backoff

    delay, waits = 0.5, []
    for _ in range(9):
        wait, delay = backoff(delay, 1.0, 0.5, 30.0, 60.0)
        waits.append(wait)
    assert waits == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff(30.0, 61.0, 0.5, 30.0, 60.0) == (0.5, 1.0)  # stable run: reset
