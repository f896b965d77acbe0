"""One FRR daemon (zebra or bfdd) as a supervised child: spawned through the guard (it dies
with the agent), its output forwarded to the log, restarted with backoff after any exit the
agent did not ask for (0.5 s doubling to 30 s, back to 0.5 s after 60 s of good run)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from ..bgp import process
from ..clock import Clock

log = logging.getLogger("bgplb.bfd")

BACKOFF = (0.5, 30.0, 60.0)  # initial, maximum, stable after
STOP_TIMEOUT = 3.0


def guarded(argv: Sequence[str]) -> list[str]:
    """``argv`` run under ``bgplb.bfd.guard`` (see there why)."""
    return [sys.executable, "-m", "bgplb.bfd.guard", *argv]


class Daemon:
    def __init__(
        self,
        name: str,
        clock: Clock,
        argv: Callable[[], Sequence[str]],
        on_exit: Callable[[str, int | str], None],
        *,
        backoff: tuple[float, float, float] = BACKOFF,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.name = name
        self._clock = clock
        self._argv = argv
        self._on_exit = on_exit
        self._backoff = backoff
        self._stop_timeout = stop_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._logger = logging.getLogger(f"bgplb.frr.{name}")
        self.restarts = 0
        self.started = asyncio.Event()  # set at each spawn

    @property
    def pid(self) -> int | None:
        """The guard's pid (the daemon is its only child)."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"frr-{self.name}")

    async def restart(self) -> None:
        """Replace the running daemon (the supervise loop spawns a new one at once)."""
        proc = self._proc
        if proc is not None and not self._stopping:
            await process.terminate(proc, self._stop_timeout)

    async def stop(self) -> None:
        self._stopping = True
        if self._proc is not None:
            code = await process.terminate(self._proc, self._stop_timeout)
            log.info("%s stopped (exit %s)", self.name, code)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _supervise(self) -> None:
        delay = self._backoff[0]
        while not self._stopping:
            started = self._clock.now()
            code = await self._run_once()
            if self._stopping:
                return
            self.restarts += 1
            self._on_exit(self.name, code)
            wait, delay = process.backoff(delay, self._clock.now() - started, *self._backoff)
            log.warning(
                "%s exited with %s; restart #%d in %.2fs", self.name, code, self.restarts, wait
            )
            await self._clock.sleep(wait)

    async def _run_once(self) -> int | str:
        try:
            proc = await process.spawn(self._argv(), dict(os.environ))
        except OSError as e:
            return f"spawn failed: {e}"
        self._proc = proc
        self.started.set()
        log.info("%s started (guard pid %s)", self.name, proc.pid)
        assert proc.stdout is not None
        forward = asyncio.create_task(
            process.forward_output(proc.stdout, self._logger, lambda line: line)
        )
        try:
            return await proc.wait()
        finally:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(forward, 1.0)
            self._proc = None
