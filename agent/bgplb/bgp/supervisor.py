"""ExaBGP's supervision: spawn it, forward its log, watch its start, restart it with backoff.

The speaker (exabgp.py) owns the API channel and the route state; this module owns the
process. The speaker tells it when the API relay connected (``connected()``) and asks it to
replace a process it no longer trusts (``restart(why, reason)``); the supervisor calls
``on_exit`` after every exit it did not cause through ``stop()``, then waits the backoff and
spawns again. Every restart is counted under one of :data:`REASONS` (a bounded label).

Start: there is no fixed "connect within N s" kill. Until its API relay connects, ExaBGP is
judged by progress: its (and its children's) CPU time advancing or a line printed. Only a
process that made no progress for ``stall_timeout`` seconds is killed (``start_stalled``), so
a slow start on a loaded node or a cold cache is left alone. ``start_limit`` is a last-resort
ceiling for a process that keeps busy but never connects.

Backoff: 0.5 s doubling to 30 s, back to 0.5 s once a process had been *connected* for
``stable_after`` seconds (the time it took to start does not count as a good run).
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

REASONS = (
    "exited",  # it exited or crashed on its own
    "spawn_failed",  # it could not be started at all
    "start_stalled",  # started, made no progress and never connected its API
    "relay_lost",  # its API relay closed or a write to it failed
    "ack_timeout",  # commands or the heartbeat not acknowledged within the deadline
    "withdraw_refused",  # a withdraw kept being refused: a fresh ExaBGP holds nothing
    "reload_failed",  # a reload was not acknowledged: back to the last good config
)


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
        stall_timeout: float,
        stop_timeout: float,
        backoff: tuple[float, float, float],
        start_limit: float = 600.0,
        start_tick: float = 1.0,
    ) -> None:
        self._clock = clock
        self._argv = argv
        self._scrub = scrub
        self._on_exit = on_exit
        self._stall_timeout = stall_timeout
        self._start_limit = start_limit
        self._start_tick = start_tick
        self._stop_timeout = stop_timeout
        self._backoff = backoff
        self._proc: asyncio.subprocess.Process | None = None
        self._connected_at: float | None = None
        self._output_seen = False
        self._reason: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._stopping = False
        self.restarts = 0
        self.restart_reasons: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.last_wait = 0.0  # the last backoff waited (status, tests)

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
        self._connected_at = self._clock.now()

    def restart(self, why: str, reason: str, *, kill: bool = False) -> None:
        """Replace the running process: SIGTERM, SIGKILL after the grace (at once with
        ``kill``: a wedged or stopped process never acts on SIGTERM). No-op when stopping."""
        assert reason in REASONS, reason
        proc = self._proc
        if proc is not None and proc.returncode is None and not self._stopping:
            if reason == "relay_lost" and process.exited(proc.pid):
                return  # it died on its own (its relay died with it): "exited"
            if self._reason is None:
                self._reason = reason
            log.warning("exabgp: %s; restarting exabgp (%s)", why, reason)
            grace = 0.0 if kill else self._stop_timeout
            task: asyncio.Task[object] = asyncio.ensure_future(process.terminate(proc, grace))
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
            self._reason = None
            self._connected_at = None
            code = await self._run_once()
            if self._stopping:
                return
            healthy = self._clock.now() - self._connected_at if self._connected_at else 0.0
            reason = self._reason or ("spawn_failed" if isinstance(code, str) else "exited")
            self.restarts += 1
            self.restart_reasons[reason] += 1
            self._on_exit(code)
            wait, delay = process.backoff(delay, healthy, *self._backoff)
            self.last_wait = wait
            log.warning(
                "exabgp exited with %s (%s); restart #%d in %.2fs",
                code,
                reason,
                self.restarts,
                wait,
            )
            await self._clock.sleep(wait)

    async def _run_once(self) -> int | str:
        try:
            proc = await process.spawn(self._argv(), process.exabgp_env())
        except OSError as e:
            return f"spawn failed: {e}"
        self._proc = proc
        log.info("exabgp started (pid %s)", proc.pid)
        assert proc.stdout is not None
        forward = asyncio.create_task(
            process.forward_output(proc.stdout, exa_log, self._scrub, self._on_output)
        )
        watchdog = asyncio.create_task(self._start_watch(proc))
        try:
            return await proc.wait()
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(forward, 1.0)
            self._proc = None

    def _on_output(self) -> None:
        self._output_seen = True

    async def _start_watch(self, proc: asyncio.subprocess.Process) -> None:
        """Until the API connects: kill only a process that stopped making progress."""
        started = progress = self._clock.now()
        ticks = process.cpu_ticks(proc.pid)
        self._output_seen = False
        while self._connected_at is None and proc.returncode is None:
            await self._clock.sleep(self._start_tick)
            now = self._clock.now()
            if self._connected_at is not None or proc.returncode is not None:
                return
            seen = process.cpu_ticks(proc.pid)
            if seen != ticks or self._output_seen:
                progress, ticks, self._output_seen = now, seen, False
            if now - progress >= self._stall_timeout:
                why = f"no progress for {now - progress:.0f}s and its API did not connect"
            elif now - started >= self._start_limit:
                why = f"its API did not connect within {self._start_limit:.0f}s"
            else:
                continue
            self.restart(why, "start_stalled", kill=True)
            return
