"""ExaBGP as a child process: spawn with fate sharing, forward its log, terminate it.

Fate sharing: every spawn sets PR_SET_PDEATHSIG=SIGKILL in the child (preexec_fn), so ExaBGP
is killed by the kernel when the agent dies, even by SIGKILL: no orphan keeps announcing. The
death signal fires when the *thread* that forked exits, so spawn only from the event-loop
thread (asyncio.create_subprocess_exec does the fork there). The child re-checks its parent
after prctl, closing the race with a parent that died in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import getpass
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def _pdeathsig_preexec(parent: int) -> Callable[[], None]:
    def preexec() -> None:
        if _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def exabgp_argv(exabgp: Sequence[str], conf: Path, netns: str | None) -> list[str]:
    argv = [*exabgp, "server", str(conf)]
    return ["ip", "netns", "exec", netns, *argv] if netns else argv  # ip execs: same pid


# ExaBGP's idle loop polls every speed/100 s: at its default (1.0) that is 100 turns a second
# of Python doing nothing, ~0.9 % of a core (bench/). Input from the API or a peer ends the
# poll at once, so withdraws are not delayed (bench/: API line -> UPDATE unchanged).
REACTOR_SPEED = "5.0"


def exabgp_env() -> dict[str, str]:
    """Our environment plus ExaBGP's settings (docs/bgp.md): no privilege drop, no CLI
    pipes, acks on, log to stdout (we capture it) at WARNING, no global listener, and an idle
    poll of 50 ms instead of 10 (ExaBGP wakes at once on API input or BGP data either way)."""
    env = dict(os.environ)
    env.update(
        exabgp_daemon_user=getpass.getuser(),
        exabgp_daemon_daemonize="false",
        exabgp_api_cli="false",
        exabgp_api_ack="true",
        exabgp_log_destination="stdout",
        exabgp_log_level="WARNING",
        exabgp_tcp_bind="",
        exabgp_reactor_speed=REACTOR_SPEED,
        PYTHONUNBUFFERED="1",
    )
    return env


async def spawn(argv: Sequence[str], env: Mapping[str, str]) -> asyncio.subprocess.Process:
    """Start ``argv`` with stdout+stderr piped (merged), stdin closed, in its own session
    (a terminal's ^C reaches the agent, which withdraws first), dying with the agent."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
        preexec_fn=_pdeathsig_preexec(os.getpid()),
    )


def backoff(
    delay: float, healthy_for: float, initial: float, maximum: float, stable_after: float
) -> tuple[float, float]:
    """(wait now, delay for the next failure): doubling up to ``maximum``, back to ``initial``
    once the process had been healthy (its API connected) for ``stable_after`` seconds. Time
    spent starting does not count: on a slow node a long start is not a stable run."""
    wait = initial if healthy_for >= stable_after else delay
    return wait, min(wait * 2, maximum)


def cpu_ticks(pid: int) -> int | None:
    """CPU time (clock ticks) used by ``pid`` and its live descendants, from /proc: the
    cheap "is it doing anything" signal for a process that has not connected yet (a wrapper
    that runs ExaBGP as its child counts through the child). None once ``pid`` is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    total = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tasks = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                children = f.read().split()
        except OSError:
            continue
        for child in children:
            total += cpu_ticks(int(child)) or 0
    return total


def exited(pid: int) -> bool:
    """True once ``pid`` is dead or a zombie (exited, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in (b"Z", b"X")


async def forward_output(
    stream: asyncio.StreamReader,
    logger: logging.Logger,
    scrub: Callable[[str], str],
    on_line: Callable[[], None] = lambda: None,
) -> None:
    """Every line ExaBGP prints goes to ``logger`` at WARNING, secrets scrubbed; ``on_line``
    is called for each (a sign of life while it starts)."""
    while True:
        try:
            line = await stream.readline()
        except (ValueError, OSError):  # an over-long line or a closed pipe
            on_line()
            continue
        if not line:
            return
        on_line()
        text = scrub(line.decode("utf-8", errors="replace").rstrip())
        if text:
            logger.warning("%s", text)


async def terminate(proc: asyncio.subprocess.Process, grace: float) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds (at once with ``grace`` 0: a stopped or
    wedged process never acts on SIGTERM); always reaps. Returns the exit code."""
    if proc.returncode is None and grace <= 0:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    elif proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            return await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    return await proc.wait()
