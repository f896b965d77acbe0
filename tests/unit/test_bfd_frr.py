"""bfd/frr.py without FRR: what ``show bfd peers json`` answers becomes the sessions (a change
wakes the reconciler, no answer is ``unknown`` with the reason), and the poll slows down once
every session is Up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from bgplb.bfd.base import BfdState
from bgplb.bfd.frr import FrrBfd, frr_dir
from bgplb.bfd.spec import PeerRoute
from bgplb.clock import FakeClock
from bgplb.config import parse_config

from .fixtures import node


class ScriptedFrr(FrrBfd):
    """FrrBfd whose bfdd answers from ``self.answer`` (an exception is raised) and which
    starts no daemon."""

    def __init__(self, clock: FakeClock) -> None:
        async def lookup(address: str, netns: str | None) -> PeerRoute:
            return PeerRoute("eth0", "10.0.1.2")

        super().__init__(clock, lookup=lookup)
        self.answer: str | Exception = "[]"
        self.calls: list[float] = []

    async def _spawn(self) -> None:
        self._poller = asyncio.create_task(self._poll())

    async def _bfdd(self, commands: Sequence[str]) -> str:
        self.calls.append(self._clock.now())
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def show(status: str) -> str:
    return json.dumps([{"peer": "10.0.1.1", "multihop": False, "status": status}])


async def test_sessions_follow_bfdd_and_the_poll_slows_once_all_are_up(tmp_path: Path) -> None:
    clock = FakeClock()
    config = parse_config(
        {
            "node": node(runtime_dir=str(tmp_path / "run")),
            "peers": [{"address": "10.0.1.1", "asn": 65000, "bfd": {"interval_ms": 100}}],
        }
    )
    assert frr_dir(config.node.runtime_dir) == tmp_path / "run-frr"
    bfd = ScriptedFrr(clock)
    wakes: list[float] = []
    bfd.answer = show("down")
    await bfd.start(config, lambda: wakes.append(clock.now()))
    await clock.advance(0)
    assert bfd.sessions()["10.0.1.1"].state is BfdState.DOWN
    await clock.advance(3.0)
    assert len(bfd.calls) == 4  # every second while not Up
    assert len(wakes) == 1  # unknown -> down
    bfd.answer = show("up")
    await clock.advance(1.0)
    assert bfd.sessions()["10.0.1.1"].state is BfdState.UP
    assert len(wakes) == 2
    before = len(bfd.calls)
    await clock.advance(10.0)
    assert len(bfd.calls) - before == 2  # every 5 s once all are Up
    bfd.answer = RuntimeError("vtysh exit 1: bfdd is not running")
    await clock.advance(5.0)
    s = bfd.sessions()["10.0.1.1"]
    assert s.state is BfdState.UNKNOWN
    assert s.detail == "no answer from bfdd: vtysh exit 1: bfdd is not running"
    assert len(wakes) == 3
    await bfd.stop()


def test_a_slow_host_raises_the_poll_interval_and_vtysh_timeout_by_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lab's TCG guest (tests/lab/runner.py): vtysh there takes seconds; with the fixed
    2 s timeout every poll failed, every session stayed unknown and no node announced."""
    plain = FrrBfd(FakeClock())
    assert (plain._poll_interval, plain._vtysh_timeout) == (1.0, 2.0)
    monkeypatch.setenv("BGPLB_BFD_POLL_INTERVAL", "3")
    monkeypatch.setenv("BGPLB_BFD_VTYSH_TIMEOUT", "30")
    slow = FrrBfd(FakeClock())
    assert (slow._poll_interval, slow._vtysh_timeout) == (3.0, 30.0)
    explicit = FrrBfd(FakeClock(), poll_interval=0.5, vtysh_timeout=1.0)  # arguments win
    assert (explicit._poll_interval, explicit._vtysh_timeout) == (0.5, 1.0)
    for bad in ("", "x", "0", "-1"):
        monkeypatch.setenv("BGPLB_BFD_VTYSH_TIMEOUT", bad)
        assert FrrBfd(FakeClock())._vtysh_timeout == 2.0, bad
