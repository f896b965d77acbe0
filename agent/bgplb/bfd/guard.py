"""``python -m bgplb.bfd.guard DAEMON ARGS...``: runs one FRR daemon and never lets it
outlive the agent.

The agent's PR_SET_PDEATHSIG does not survive FRR's drop to user ``frr`` (the kernel clears
it on a credential change), so this small guard stays between them: it asks for SIGTERM when
the agent dies (checking the agent is still there after asking), starts the daemon as its
child, and on SIGTERM/SIGINT (the agent's stop, or the agent's death) SIGTERMs the daemon,
SIGKILLs it after ``GRACE`` seconds, and exits with its code. It exits when the daemon does.
Belt and braces: a thread also watches the parent pid every ``WATCH`` seconds and sends the
guard that SIGTERM itself if the agent is gone without it (a daemon outlived a SIGKILLed agent
once in CI, 1 run in ~40; never reproduced since).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
GRACE = 1.0
WATCH = 0.25  # seconds between two looks at the parent pid


def main(argv: list[str]) -> int:
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0 or os.getppid() != parent:
        return 1
    if not argv:
        print("usage: python -m bgplb.bfd.guard DAEMON [ARGS...]", file=sys.stderr)
        return 2
    children: list[subprocess.Popen[bytes]] = []
    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        # the agent died (pdeathsig) or asked: SIGTERM now, SIGKILL after GRACE. The main
        # thread's wait() returns as soon as the daemon is gone (it holds the wait lock:
        # polling here would not see the exit).
        if stopping.is_set():
            return
        stopping.set()
        for child in children:
            _end(child)

    signal.signal(signal.SIGTERM, stop)  # before the daemon exists: no window without it
    signal.signal(signal.SIGINT, stop)
    threading.Thread(
        target=watch_parent,
        args=(parent, os.getppid, lambda: os.kill(os.getpid(), signal.SIGTERM), stopping),
        daemon=True,
    ).start()
    child = subprocess.Popen(argv)  # inherits stdout/stderr: the agent reads them
    children.append(child)
    if stopping.is_set():  # a signal came while it was being started
        _end(child)
    code = child.wait()
    return code if code >= 0 else 128 - code


def watch_parent(
    parent: int,
    getppid: Callable[[], int],
    gone: Callable[[], None],
    stopping: threading.Event,
    interval: float = WATCH,
) -> None:
    """Call ``gone()`` once when ``getppid()`` is no longer ``parent`` (the agent died: the
    guard was reparented); return when ``stopping`` is set."""
    while not stopping.wait(interval):
        if getppid() != parent:
            gone()
            return


def _end(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signal.SIGTERM)
    timer = threading.Timer(GRACE, lambda: _kill(child))
    timer.daemon = True
    timer.start()


def _kill(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.kill()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
