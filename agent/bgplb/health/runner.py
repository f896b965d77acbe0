"""Scheduling: every check runs in its own task on the agent's event loop.

- A slow or hung backend never delays another check: each check awaits only its own probe.
- Deadlines are absolute (``next = previous deadline + interval``), so intervals do not drift;
  a probe that overruns its next deadline is waited for (it is bounded by its timeout), the
  next probe then starts at once and the missed ticks are skipped, never burst.
- ``fast_interval`` is used while a state is changing (some results point the other way but
  not yet ``rise``/``fall`` of them).
- First deadlines are spread over the first interval by a hash of the key (deterministic).
- Time comes from the injected clock only (``FakeClock`` drives the whole thing in tests);
  the prober's real I/O is bounded by its own timeout, with a backstop here.
- A check the prober can run without a coroutine (:class:`~.checks.CallbackProber`: plain
  http and tcp) has no task: a clock timer starts its probe, the probe's completion records
  the result and arms the next timer. Same schedule and results; at 1,000 probes a second the
  per-probe task, future and timers were about a third of the agent's CPU (bench/). Its
  backstop is enforced by the supervisor tick (every ``TICK``), not by a timer per probe.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..clock import Clock
from ..config import Config
from ..cooperative import Steps
from .checks import CallbackProber, Prober, RealProber
from .schedule import BACKSTOP as BACKSTOP  # re-exported: reload.py, tests
from .schedule import Carries, Entry, carry_over, carry_steps
from .schedule import splay as splay  # re-exported: tests
from .targets import ResolvedCheck, resolve_checks
from .tracker import CheckKey, CheckResult, CheckState, HealthSnapshot, advance

log = logging.getLogger("bgplb.health")

TICK = 0.5  # seconds between supervisor ticks (``last_progress``)
STALL_GRACE = 2.0  # a check this late on its schedule means the runner is stuck
LOG_EVERY = 60.0  # repeated identical errors are logged at most this often per key

ResultHook = Callable[[CheckKey, CheckResult, CheckState], None]
WatchHook = Callable[[CheckKey, bool], None]  # a watched connection dropped: probed at once?


class ErrorLimiter:
    """Says whether to log an error: when it differs from the last one logged for the key,
    or ``every`` seconds have passed since."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        self._every = every
        self._last: dict[object, tuple[str, float]] = {}

    def allow(self, key: object, error: str, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and last[0] == error and now - last[1] < self._every:
            return False
        self._last[key] = (error, now)
        return True

    def forget(self, key: object) -> None:
        self._last.pop(key, None)


@dataclass(frozen=True)
class PreparedChecks:
    """:meth:`HealthRunner.carry_steps`' result: valid for the entries it was computed from."""

    entries: Mapping[CheckKey, Entry]
    carries: Carries


class HealthRunner:
    """Runs the checks of the current config; ``snapshot()`` is their state.

    ``wake`` is called whenever a check's status changes; ``on_result`` (set by the agent)
    for every result, after the state was updated; ``on_watch_lost`` whenever a check's
    watched connection drops (``watch_connection``), with whether that started a probe.
    """

    def __init__(
        self,
        clock: Clock,
        wake: Callable[[], None],
        prober: Prober | None = None,
        *,
        limiter: ErrorLimiter | None = None,
    ) -> None:
        self._clock = clock
        self._wake = wake
        self._owned: RealProber | None = None
        if prober is None:
            prober = self._owned = RealProber()
        self._prober: Prober = prober
        self._starter: CallbackProber | None = (
            prober if isinstance(prober, CallbackProber) else None
        )
        self._limiter = limiter or ErrorLimiter()
        self._entries: dict[CheckKey, Entry] = {}
        self._running = False
        self._crash: BaseException | None = None
        self.on_result: ResultHook | None = None
        self.on_watch_lost: WatchHook | None = None
        self.last_progress: float = clock.now()

    # ------------------------------------------------------------------ configuration

    def configure(self, config: Config) -> None:
        """Rebuild the set of checks from ``config``."""
        self.configure_checks(resolve_checks(config))

    def carry_steps(self, specs: Mapping[CheckKey, ResolvedCheck]) -> Steps[PreparedChecks]:
        """The costly half of :meth:`configure_checks`, as steps the loop can interleave
        (a reload runs them before its switch; schedule.carry_steps)."""
        entries = self._entries
        carries = yield from carry_steps(entries, specs)
        return PreparedChecks(entries, carries)

    def configure_checks(
        self, specs: Mapping[CheckKey, ResolvedCheck], prepared: PreparedChecks | None = None
    ) -> None:
        """Switch to ``specs`` (a reload: docs/config.md, "Reloading"). Per key:

        - unchanged spec: untouched (state, schedule, probe in flight);
        - only timing fields changed (:attr:`~bgplb.config.CheckBase.TIMING_FIELDS`): state
          and counters kept; the new timing applies from the next probe, which a shorter
          interval brings forward (never later than the old schedule);
        - the target changed (:meth:`ResolvedCheck.same_target` is false): the status is kept
          (UP stays UP), the counters restart, it is probed at once and at the fast interval
          until ``rise`` successes or ``fall`` failures in a row settle it;
        - a real server whose port changed (its checks' keys change, e.g. the service's
          target port changed): its checks are target changes of the old ones (same service,
          check name and address; one old key for one new key);
        - a new key (a new check, a renamed service or check) starts DOWN, first probe within
          one interval; a removed one stops and is forgotten.

        Configuring wakes nobody: no status changes here. ``prepared``: :meth:`carry_steps`
        of the same specs (ignored if the checks were configured since)."""
        carries = prepared.carries if prepared and prepared.entries is self._entries else None
        entries = carry_over(self._entries, specs, self._clock.now(), carries)
        for key, old in self._entries.items():
            if entries.get(key) is not old:
                old.stop()
                self._limiter.forget(key)
        self._entries = entries
        if self._running:
            self._start_tasks()

    @property
    def prober(self) -> Prober:
        """The prober the checks use (a probe reload probes the new checks with it)."""
        return self._prober

    def snapshot(self) -> HealthSnapshot:
        return types.MappingProxyType({k: e.state for k, e in self._entries.items()})

    def specs(self) -> Mapping[CheckKey, ResolvedCheck]:
        return types.MappingProxyType({k: e.spec for k, e in self._entries.items()})

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Run every check until cancelled. Raises if a check task dies of a bug."""
        if self._running:
            raise RuntimeError("HealthRunner.run() is already running")
        self._running = True
        try:
            self._start_tasks()
            while True:
                if self._crash is not None:
                    raise RuntimeError("a health check task died") from self._crash
                self._tick()
                await self._clock.sleep(TICK)
        finally:
            self._running = False
            tasks = [e.task for e in self._entries.values() if e.task is not None]
            for entry in self._entries.values():
                entry.stop()
                entry.stopped = False  # a later run() starts it again
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._owned is not None:
                await self._owned.close()

    def _tick(self) -> None:
        now = self._clock.now()
        self._cut_overruns(now)
        stalled = [
            key
            for key, e in self._entries.items()
            if e.started and now > e.late_after() + STALL_GRACE
        ]
        if not stalled:
            self.last_progress = now
            return
        error = f"{len(stalled)} check(s) behind schedule, first {stalled[0]}"
        if self._limiter.allow("stalled", error, now):
            log.error(
                "health checks are stuck: %s",
                error,
                extra={"event": "health_stalled", "check": str(stalled[0])},
            )

    def _start_tasks(self) -> None:
        starter = self._starter
        for key, entry in self._entries.items():
            if entry.started and (entry.task is None or not entry.task.done()):
                continue
            if entry.start is None and starter is not None:
                try:
                    entry.start = starter.starter(entry.spec, functools.partial(self._poke, entry))
                except Exception as exc:  # then the task path; its probes say what fails
                    log.error("health check %s: no lean probe: %r", key, exc)
            if entry.start is not None:
                self._arm(entry)
            else:
                entry.task = asyncio.create_task(self._loop(entry), name=f"health {key}")
                entry.task.add_done_callback(self._on_task_done)

    # ------------------------------------------------------------------ callback-driven checks

    def _arm(self, entry: Entry) -> None:
        entry.timer = self._clock.call_at(entry.due, self._fire, entry)

    def _fire(self, entry: Entry) -> None:
        entry.timer = None
        if entry.stopped or entry.start is None:
            return
        entry.probing_since = self._clock.now()
        entry.flight = flight = entry.flight + 1
        try:
            cancel = entry.start(lambda error: self._landed(entry, flight, error))
        except Exception as exc:
            self._landed(entry, flight, self._crashed(entry.spec, exc))
            return
        if entry.flight == flight and entry.probing_since is not None:  # not landed at once
            entry.cancel = cancel

    def _landed(self, entry: Entry, flight: int, error: str | Exception | None) -> None:
        started = entry.probing_since
        if flight != entry.flight or started is None or entry.stopped:
            return  # stopped, cut by the backstop, or a second call
        entry.cancel = None
        try:
            if isinstance(error, Exception):
                error = self._crashed(entry.spec, error)
            self._finish(entry, started, error)
            if self._running:
                self._arm(entry)
        except Exception as exc:  # a bug after the probe (e.g. in wake): like a dying task
            if self._crash is None:
                self._crash = exc

    def _poke(self, entry: Entry) -> None:
        """The check's watched connection dropped (``watch_connection``): probe now, unless
        a probe is running (its result is on the way) or a drop started one less than an
        interval ago: a target that closes idle connections at once would otherwise spin
        drop -> probe -> new watch -> drop (the scheduled probes go on meanwhile)."""
        if entry.stopped:
            return
        now = self._clock.now()
        probe = entry.timer is not None and now - entry.poked_at >= entry.spec.interval
        self._watch_lost(entry.spec.key, probe)
        if not probe or entry.timer is None:
            return
        entry.timer.cancel()
        entry.due = entry.poked_at = now
        log.debug(
            "health check %s: watched connection dropped, probing now",
            entry.spec.key,
            extra=self._extra("health_connection_dropped", entry.spec.key),
        )
        self._fire(entry)  # not a timer: the clock's timers may run up to 10 ms late

    def _watch_lost(self, key: CheckKey, probed: bool) -> None:
        try:
            if self.on_watch_lost is not None:
                self.on_watch_lost(key, probed)
        except Exception as exc:
            if self._limiter.allow(("watch hook", key), repr(exc), self._clock.now()):
                log.exception("health hook failed", extra=self._extra("health_hook_failed", key))

    def _cut_overruns(self, now: float) -> None:
        """The backstop of callback-driven probes that ignore their own timeout."""
        for entry in self._entries.values():
            started = entry.probing_since
            if entry.cancel is None or started is None:
                continue
            if now > started + entry.spec.timeout + BACKSTOP:
                cancel, entry.cancel = entry.cancel, None
                cancel()
                self._landed(entry, entry.flight, self._overran(entry.spec))

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self._crash is None:
            self._crash = task.exception()

    # ------------------------------------------------------------------ task-driven checks

    async def _loop(self, entry: Entry) -> None:
        spec, clock = entry.spec, self._clock
        while True:
            await clock.sleep(entry.due - clock.now())
            started = entry.probing_since = clock.now()
            error = await self._probe(spec)
            self._finish(entry, started, error)

    async def _probe(self, spec: ResolvedCheck) -> str | None:
        try:
            async with asyncio.timeout(spec.timeout + BACKSTOP):
                return await self._prober.probe(spec)
        except TimeoutError:
            return self._overran(spec)
        except Exception as exc:
            return self._crashed(spec, exc)

    # ------------------------------------------------------------------ results

    def _overran(self, spec: ResolvedCheck) -> str:
        return self._unexpected(spec, f"timeout after {spec.timeout:g}s (prober overran)")

    def _crashed(self, spec: ResolvedCheck, exc: BaseException) -> str:
        return self._unexpected(spec, f"probe crashed: {type(exc).__name__}: {exc}")

    def _unexpected(self, spec: ResolvedCheck, error: str) -> str:
        if self._limiter.allow(("prober", spec.key), error, self._clock.now()):
            log.error(
                "health probe failed unexpectedly: %s",
                error,
                extra=self._extra("health_probe_crashed", spec.key),
            )
        return error

    def _finish(self, entry: Entry, started: float, error: str | None) -> None:
        entry.probing_since = None
        finished = self._clock.now()
        result = CheckResult(error is None, finished, finished - started, error)
        self._record(entry, result)
        spec, state = entry.spec, entry.state
        if entry.verifying and (state.successes >= spec.rise or state.failures >= spec.fall):
            entry.verifying = False  # the changed target is confirmed (or went down)
        # absolute deadlines; after an overrun start at once and skip the missed ticks
        entry.due = max(entry.due + entry.next_interval(), finished)

    def _record(self, entry: Entry, result: CheckResult) -> None:
        key, before = entry.spec.key, entry.state
        entry.state = after = advance(before, result, entry.spec.rise, entry.spec.fall)
        if result.error is not None and self._limiter.allow(key, result.error, result.time):
            log.info(
                "health check %s failed: %s",
                key,
                result.error,
                extra=self._extra("health_check_failed", key),
            )  # a flapping check logs its (identical) error once a minute, not every flap
        if self.on_result is not None:
            try:
                self.on_result(key, result, after)
            except Exception as exc:
                if self._limiter.allow(("hook", key), repr(exc), result.time):
                    log.exception(
                        "health on_result hook failed", extra=self._extra("health_hook_failed", key)
                    )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "health check %s: %s",
                key,
                "ok" if result.ok else result.error,
                extra={
                    **self._extra("health_check_result", key),
                    "ok": result.ok,
                    "latency": round(result.latency, 6),
                    "successes": after.successes,
                    "failures": after.failures,
                },
            )
        if after.status is not before.status:
            log.info(
                "health check %s is %s",
                key,
                after.status.value,
                extra={
                    **self._extra("health_check_changed", key),
                    "status": after.status.value,
                    "successes": after.successes,
                    "failures": after.failures,
                },
            )
            self._wake()

    @staticmethod
    def _extra(event: str, key: CheckKey) -> dict[str, object]:
        return {"event": event, "service": key.service, "target": key.target, "check": key.check}
