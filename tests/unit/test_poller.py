"""The lean probes' epoll set (bgplb/health/poller.py): a dispatch with many ready sockets
gives the event loop turns in between and loses no event (edge-triggered: an event taken
from the set and not handled would never be reported again)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from bgplb.health.poller import Poller


async def test_many_ready_sockets_are_all_handled_over_several_turns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bgplb.health.poller.BUDGET", 0.002)
    loop = asyncio.get_running_loop()
    poller = Poller()
    pairs = [socket.socketpair() for _ in range(60)]
    handled: list[int] = []
    turns: list[int] = []
    try:
        for ours, _ in pairs:
            ours.setblocking(False)
            fd = ours.fileno()

            def handler(events: int, fd: int = fd) -> None:
                time.sleep(0.0005)  # 0.5 ms of work each: 60 of them are ~15 budgets
                handled.append(fd)

            poller.watch(fd, handler, writable=False)

        def ticker() -> None:
            turns.append(len(handled))
            if len(handled) < len(pairs):
                loop.call_soon(ticker)

        for _, theirs in pairs:
            theirs.send(b"x")  # every socket readable at once
        loop.call_soon(ticker)
        for _ in range(200):
            if len(handled) == len(pairs):
                break
            await asyncio.sleep(0.005)
        assert sorted(handled) == sorted(s.fileno() for s, _ in pairs)  # none lost, none twice
        assert any(0 < n < len(pairs) for n in turns), turns  # the loop ran in between
    finally:
        poller.close()
        for a, b in pairs:
            a.close()
            b.close()
