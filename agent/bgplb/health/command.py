"""Running a check's command: argv (no shell), scrubbed environment, no agent privileges.

When the agent runs as root the child runs as ``nobody`` (uid, gid, no supplementary groups:
``setuid`` from 0 clears every capability, ambient ones included). When the agent is not root
but holds ambient capabilities, the child clears them (``PR_CAP_AMBIENT_CLEAR_ALL``) before
``exec``. The child leads its own session; on timeout its whole process group is SIGKILLed,
and so is anything it left running after it exited.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import pwd
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

SAFE_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
UNPRIVILEGED_USER = "nobody"
REAP_TIMEOUT = 2.0  # after SIGKILL, how long to wait for the child to be reaped

PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


@dataclass(frozen=True)
class Identity:
    """Who the child runs as. ``None`` fields: unchanged."""

    uid: int | None = None
    gid: int | None = None
    clear_ambient: bool = False
    extra_groups: tuple[int, ...] = field(default=())


def ambient_capabilities(status_path: str = "/proc/self/status") -> int:
    """This process's ambient capability mask (0 when unknown)."""
    try:
        with open(status_path, encoding="ascii") as f:
            for line in f:
                if line.startswith("CapAmb:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        return 0
    return 0


def unprivileged_identity() -> Identity:
    """The identity a check command runs as, given who the agent is."""
    if os.geteuid() == 0:
        pw = pwd.getpwnam(UNPRIVILEGED_USER)
        return Identity(uid=pw.pw_uid, gid=pw.pw_gid)
    return Identity(clear_ambient=ambient_capabilities() != 0)


def check_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """Only ``PATH`` plus the check's own variables: nothing leaks from the agent."""
    return {"PATH": SAFE_PATH, **extra}


def _clear_ambient_capabilities() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_CLEAR_ALL) failed")


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def describe_exit(returncode: int) -> str | None:
    if returncode == 0:
        return None
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"killed by signal {name}"
    return f"exit status {returncode}"


async def run_command(
    argv: Sequence[str],
    env: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 - the child is killed on timeout, not just abandoned
    identity: Identity | None = None,
) -> str | None:
    """Run ``argv`` and return None when it exits 0 within ``timeout``, else the reason.

    ``identity`` None runs the child with the agent's own identity (for ``ping``); pass
    :func:`unprivileged_identity` for operator-supplied commands.
    """
    who = identity or Identity()
    preexec: Callable[[], None] | None = _clear_ambient_capabilities if who.clear_ambient else None
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=check_environment(env),
            cwd="/",
            start_new_session=True,
            user=who.uid,
            group=who.gid,
            extra_groups=list(who.extra_groups) if who.uid is not None else None,
            preexec_fn=preexec,
        )
    except FileNotFoundError:
        return f"command not found: {argv[0]}"
    except PermissionError as exc:
        return f"cannot run {argv[0]}: {exc.strerror or exc}"
    except OSError as exc:
        return f"cannot run {argv[0]}: {exc}"
    try:
        async with asyncio.timeout(timeout):
            returncode = await proc.wait()
    except TimeoutError:
        kill_group(proc.pid)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REAP_TIMEOUT):
                await proc.wait()
        return f"timeout after {timeout:g}s (process group killed)"
    except asyncio.CancelledError:
        kill_group(proc.pid)
        raise
    kill_group(proc.pid)  # whatever it left behind in its group
    return describe_exit(returncode)
