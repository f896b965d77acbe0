"""ExaBGP's supervision: spawn it, forward its log, watch its start, restart it with backoff.

The speaker (exabgp.py) owns the API channel and the route state; this module owns the
process. The speaker tells it when the API relay connected (``connected()``) and asks it to
replace a process it no longer trusts (``restart(why)``); the supervisor calls ``on_exit``
after every exit it did not cause through ``stop()``, then waits the backoff and spawns again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..clock import Clock
from . import process

log = logging.getLogger("bgplb.bgp")
exa_log = logging.getLogger("bgplb.exabgp")


def exabgp_binary() -> str:
    local = Path(sys.executable).parent / "exabgp"
    return str(local) if local.exists() else (shutil.which("exabgp") or "exabgp")


class Supervisor:
    """One ExaBGP at a time. ``argv()`` is read at every spawn; ``scrub`` cleans its output."""

    def __init__(
        self,
        clock: Clock,
        argv: Callable[[], Sequence[str]],
        scrub: Callable[[str], str],
        on_exit: Callable[[int | str], None],
        *,
        connect_timeout: float,
        stop_timeout: float,
        backoff: tuple[float, float, float],
    ) -> None:
        self._clock = clock
        self._argv = argv
        self._scrub = scrub
        self._on_exit = on_exit
        self._connect_timeout = connect_timeout
        self._stop_timeout = stop_timeout
        self._backoff = backoff
        self._proc: asyncio.subprocess.Process | None = None
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._stopping = False
        self.restarts = 0

    @property
    def proc(self) -> asyncio.subprocess.Process | None:
        return self._proc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="exabgp-supervisor")

    def connected(self) -> None:
        """The API relay of the current process connected."""
        self._connected = True

    def restart(self, why: str) -> None:
        """Replace the running process (SIGTERM, SIGKILL after the grace); no-op when stopping."""
        proc = self._proc
        if proc is not None and proc.returncode is None and not self._stopping:
            log.warning("exabgp: %s; restarting exabgp", why)
            task: asyncio.Task[object] = asyncio.ensure_future(
                process.terminate(proc, self._stop_timeout)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        self._stopping = True
        if self._proc is not None:
            code = await process.terminate(self._proc, self._stop_timeout)
            log.info("exabgp stopped (exit %s)", code)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._tasks):
            task.cancel()

    async def _supervise(self) -> None:
        delay = self._backoff[0]
        while not self._stopping:
            started = self._clock.now()
            code = await self._run_once()
            if self._stopping:
                return
            self.restarts += 1
            self._on_exit(code)
            wait, delay = process.backoff(delay, self._clock.now() - started, *self._backoff)
            log.warning("exabgp exited with %s; restart #%d in %.2fs", code, self.restarts, wait)
            await self._clock.sleep(wait)

    async def _run_once(self) -> int | str:
        try:
            proc = await process.spawn(self._argv(), process.exabgp_env())
        except OSError as e:
            return f"spawn failed: {e}"
        self._proc = proc
        self._connected = False
        log.info("exabgp started (pid %s)", proc.pid)
        assert proc.stdout is not None
        forward = asyncio.create_task(process.forward_output(proc.stdout, exa_log, self._scrub))
        watchdog = asyncio.create_task(self._connect_watchdog(proc))
        try:
            return await proc.wait()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(forward, 1.0)
            self._proc = None

    async def _connect_watchdog(self, proc: asyncio.subprocess.Process) -> None:
        await self._clock.sleep(self._connect_timeout)
        if not self._connected and proc.returncode is None:
            log.warning("exabgp api relay did not connect; restarting exabgp")
            await process.terminate(proc, self._stop_timeout)
