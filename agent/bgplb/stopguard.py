"""A stop that always ends: every shutdown phase runs under a deadline, and the process exits
even when Python's own exit would wait on a stuck worker thread.

Each step of the shutdown (withdraw, grace, teardown, speaker stop) bounds its own kernel and
ExaBGP calls, but the phases around them wait on other code: cancelled tasks must finish, the
reconciler's lock must be free, the dataplane's sockets must close; and ``asyncio.run`` joins
the default executor's threads before it returns, with no deadline in Python 3.11. A SIGTERM
that hangs there keeps the node's VIPs and IPVS services (and holds up systemd's stop until
its SIGKILL), so:

- :func:`bounded_phase` gives a phase ``seconds``; past them it logs ``shutdown_phase_timed_out``
  with the stacks of every task and thread (what was stuck), and the stop goes on.
- :func:`arm_exit` starts a daemon timer when the agent has finished: if the interpreter has not
  exited ``seconds`` later (a worker thread that never returns), it logs ``exit_forced`` with
  the threads' stacks and ends the process with the agent's exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import io
import logging
import os
import sys
import threading
import traceback
from collections.abc import Awaitable, Iterable
from typing import Any

from .bfd.base import Bfd
from .bgp.base import Speaker
from .logs import log_event

log = logging.getLogger("bgplb.agent")

EXIT_GRACE = 15.0  # seconds between the agent's return and a forced exit


def task_stacks() -> str:
    """Every asyncio task of the running loop and where it waits."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        out.write(f"task {task.get_name()}:\n")
        for frame in task.get_stack():
            out.write("".join(traceback.format_stack(frame, limit=1)))
    return out.getvalue()


def thread_stacks() -> str:
    """Every thread's Python stack."""
    frames = sys._current_frames()
    out = io.StringIO()
    for thread in threading.enumerate():
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            out.write(f"thread {thread.name} (daemon={thread.daemon}):\n")
            out.write("".join(traceback.format_stack(frame)))
    return out.getvalue()


async def bounded_phase(what: str, call: Awaitable[None], seconds: float) -> bool:
    """Await ``call`` for at most ``seconds``; False (logged, with stacks) if it did not end."""
    task = asyncio.ensure_future(call)
    try:
        await asyncio.wait_for(asyncio.shield(task), seconds)
        return True
    except TimeoutError:
        log_event(
            log,
            "shutdown_phase_timed_out",
            level=logging.ERROR,
            phase=what,
            seconds=seconds,
            tasks=task_stacks(),
            threads=thread_stacks(),
        )
        task.cancel()  # abandoned: the stop goes on without it
        return False


def arm_exit(code: int, seconds: float = EXIT_GRACE) -> threading.Timer:
    """Exit with ``code`` if the process still runs ``seconds`` from now."""

    def force() -> None:
        log_event(
            log,
            "exit_forced",
            level=logging.ERROR,
            seconds=seconds,
            code=code,
            threads=thread_stacks(),
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        faulthandler.dump_traceback(all_threads=True)  # also to stderr, if logging is gone
        os._exit(code)

    timer = threading.Timer(seconds, force)
    timer.daemon = True  # never what keeps the process alive
    timer.start()
    return timer


# ------------------------------------------------------------------ the agent's stop steps


async def cancel_tasks(tasks: Iterable[asyncio.Task[None]], *extra: asyncio.Task[bool]) -> None:
    """Cancel the agent's tasks (and ``extra``) and wait for each to end."""
    every: list[asyncio.Task[Any]] = [*tasks, *extra]
    for t in every:
        t.cancel()
    for t in every:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t


async def emergency_withdraw(speaker: Speaker) -> None:
    """A crashed task ends the agent: stop the speaker (its routes go) within 5 s."""
    try:
        async with asyncio.timeout(5):
            await speaker.stop()
    except Exception as exc:  # best effort: we are going down anyway
        log_event(log, "emergency_withdraw_failed", level=logging.ERROR, error=repr(exc))


async def stop_bfd(bfd: Bfd | None) -> None:
    """Stop FRR's bfdd (if the agent runs one) within 10 s."""
    if bfd is None:
        return
    try:
        async with asyncio.timeout(10):
            await bfd.stop()
    except Exception as exc:  # best effort: the guards kill the daemons with us anyway
        log_event(log, "bfd_stop_failed", level=logging.ERROR, error=repr(exc))
