"""bfd/guard.py and bfd/daemons.py: an FRR daemon never outlives the agent (even when the
agent is SIGKILLed, although FRR's drop to user frr clears PR_SET_PDEATHSIG), and a daemon
that exits is restarted with backoff until the agent stops it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

from bgplb.bfd.daemons import Daemon, guarded
from bgplb.clock import SystemClock

AGENT = """
import asyncio, sys
from bgplb.bfd.daemons import guarded
from bgplb.bgp import process

async def main():
    proc = await process.spawn(guarded(["sleep", "60"]), {"PATH": "/usr/bin:/bin"})
    print(proc.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def test_the_daemon_dies_when_the_agent_is_sigkilled() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", AGENT], stdout=subprocess.PIPE, text=True
    ) as agent:
        assert agent.stdout is not None
        guard = int(agent.stdout.readline())
        deadline = time.monotonic() + 10
        while not _children(guard) and time.monotonic() < deadline:
            time.sleep(0.02)
        [daemon] = _children(guard)
        agent.kill()
        agent.wait()
        deadline = time.monotonic() + 5
        while (_alive(daemon) or _alive(guard)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(daemon)
        assert not _alive(guard)


def test_the_guard_passes_the_exit_code_and_forwards_sigterm() -> None:
    assert subprocess.run(guarded(["sh", "-c", "exit 7"]), check=False).returncode == 7
    with subprocess.Popen(guarded(["sleep", "60"])) as guard:
        time.sleep(0.5)
        t0 = time.monotonic()
        guard.send_signal(signal.SIGTERM)
        assert guard.wait(5) == 128 + signal.SIGTERM  # the daemon's death by SIGTERM
        assert time.monotonic() - t0 < 1.0  # not the SIGKILL grace


async def test_a_daemon_that_exits_is_restarted_with_backoff_until_stopped() -> None:
    exits: list[tuple[str, int | str]] = []
    third = asyncio.Event()

    def exited(name: str, code: int | str) -> None:
        exits.append((name, code))
        if len(exits) >= 3:
            third.set()

    daemon = Daemon(
        "bfdd",
        SystemClock(),
        lambda: [sys.executable, "-c", "import sys; sys.exit(3)"],
        exited,
        backoff=(0.01, 0.04, 60.0),
    )
    daemon.start()
    await asyncio.wait_for(third.wait(), 20)
    await daemon.stop()
    assert exits[:3] == [("bfdd", 3)] * 3
    seen = len(exits)
    await asyncio.sleep(0.2)
    assert len(exits) == seen  # stopped: no more restarts
    assert daemon.restarts == seen


def test_the_guard_also_notices_a_parent_gone_without_its_signal() -> None:
    """The fallback to PR_SET_PDEATHSIG: the parent pid changes (reparented) -> gone() once."""
    import threading

    from bgplb.bfd.guard import watch_parent

    ppids = iter([100, 100, 1, 1])
    calls: list[str] = []
    stopping = threading.Event()
    watch_parent(100, lambda: next(ppids), lambda: calls.append("gone"), stopping, 0.001)
    assert calls == ["gone"]
    stopping.set()  # once stopping, it returns without looking
    watch_parent(100, lambda: 1, lambda: calls.append("again"), stopping, 0.001)
    assert calls == ["gone"]
