"""Keeps the kernel knobs a config wants (dataplane/knobs.py) in the agent's namespace.

Level-triggered, from every reconcile pass: read each knob, set it if it differs, read it
back. Sysctls go through :class:`~.dataplane.sysctl.Sysctls`, timeouts and sync daemons
through :class:`~.dataplane.ipvsknobs.IpvsKnobs`. A daemon missing or running with other
parameters is (re)started; one no longer configured that this agent started (or adopted) is
stopped. A sysctl or the timeouts no longer wanted get back the value found before the
first change. Nothing here raises: a failure is a knob state (status, metrics), logged once
per distinct error, and the whole pass is bounded by ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from .clock import Clock
from .config import Config
from .dataplane.bounded import KernelCallError
from .dataplane.ipvsknobs import IpvsKnobs
from .dataplane.knobs import IpvsTimeouts, Knobs, SyncDaemon, SyncRole, desired_knobs, sysctl_holds
from .dataplane.sysctl import SysctlError, Sysctls
from .logs import log_event

log = logging.getLogger(__name__)

TIMEOUTS = "ipvs.timeouts"
DEFAULT_TIMEOUT = 10.0  # seconds for one whole pass over the knobs
MIN_INTERVAL = 1.0  # seconds between two looks at the same config


def daemon_knob(role: SyncRole) -> str:
    return f"sync.{role.value}"


@dataclass(frozen=True)
class KnobState:
    """One knob: ``want`` and ``got`` as text; ``error``: the last failure (file, errno)."""

    knob: str
    want: str
    got: str | None
    ok: bool
    error: str | None = None


def _timeouts_text(t: IpvsTimeouts | None) -> str | None:
    return None if t is None else f"tcp {t.tcp}s, tcp_fin {t.tcp_fin}s, udp {t.udp}s"


def _daemon_text(d: SyncDaemon | None) -> str | None:
    if d is None:
        return None
    maxlen = f", maxlen {d.maxlen}" if d.maxlen is not None else ""
    return f"{d.interface} id {d.sync_id} group {d.group} port {d.port} ttl {d.ttl}{maxlen}"


class KnobKeeper:
    """``clock`` and ``min_interval``: passes come in bursts (a check flapping on 1,000
    services); with the same config the knobs are looked at no more than once per
    ``min_interval`` seconds. Without a clock, every pass looks."""

    def __init__(
        self,
        sysctls: Sysctls,
        ipvs: IpvsKnobs,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        clock: Clock | None = None,
        min_interval: float = MIN_INTERVAL,
    ):
        self._sysctls = sysctls
        self._ipvs = ipvs
        self._timeout = timeout
        self._clock = clock
        self._min_interval = min_interval
        self._last: tuple[Config, float] | None = None  # the config and time of the last look
        self._states: dict[str, KnobState] = {}
        self._logged: dict[str, str | None] = {}
        self.errors: dict[str, int] = {}  # failures per knob since the start
        self._original_sysctls: dict[str, int] = {}
        self._original_timeouts: IpvsTimeouts | None = None
        self._ours: set[SyncRole] = set()  # sync daemons this agent started or adopted

    def states(self) -> list[KnobState]:
        return [self._states[k] for k in sorted(self._states)]

    def daemon_up(self) -> dict[str, bool]:
        """Per role of a configured daemon: running with the configured parameters."""
        return {
            r.value: self._states[daemon_knob(r)].ok
            for r in SyncRole
            if daemon_knob(r) in self._states
        }

    async def reconcile(self, config: Config) -> None:
        if self._clock is not None:
            now = self._clock.now()
            last = self._last
            if last is not None and last[0] is config and now - last[1] < self._min_interval:
                return  # looked a moment ago, at this very config
            self._last = (config, now)
        knobs = desired_knobs(config)
        if knobs.empty and not self._holding():
            return  # nothing wanted, nothing of ours to undo: no kernel call at all
        try:
            async with asyncio.timeout(self._timeout):
                await self._reconcile(knobs)
        except TimeoutError:
            self._failed("knobs", "", f"no answer within {self._timeout:g}s")
        except Exception as e:  # a bug must not end the pass
            self._failed("knobs", "", f"{type(e).__name__}: {e}")
        else:
            self._clear("knobs")

    async def stop(self) -> None:
        """Agent exit (without keep_dataplane_on_exit): stop the daemons we run."""
        try:
            async with asyncio.timeout(self._timeout):
                for role in sorted(self._ours, key=lambda r: r.value):
                    await self._ipvs.stop_daemon(role)
                    log_event(log, "sync_daemon_stopped", role=role.value)
                self._ours.clear()
        except (TimeoutError, KernelCallError) as e:
            log_event(log, "sync_daemon_stop_failed", logging.ERROR, error=str(e) or repr(e))
        finally:
            self._ipvs.close()

    # ------------------------------------------------------------------ internals

    def _holding(self) -> bool:
        return bool(self._original_sysctls or self._original_timeouts or self._ours)

    async def _reconcile(self, knobs: Knobs) -> None:
        # the timeouts first: opening IPVS loads ip_vs, which creates /proc/sys/net/ipv4/vs
        await self._keep_timeouts(knobs.timeouts)
        await self._keep_sysctls(dict(knobs.sysctls))
        await self._keep_daemons(knobs.daemons)

    async def _keep_timeouts(self, want: IpvsTimeouts | None) -> None:
        if want is None and self._original_timeouts is None:
            self._states.pop(TIMEOUTS, None)
            return
        target = want or self._original_timeouts
        assert target is not None
        try:
            got = await self._ipvs.timeouts()
            if got != target:
                if self._original_timeouts is None:
                    self._original_timeouts = got
                await self._ipvs.set_timeouts(target)
                got = await self._ipvs.timeouts()
        except KernelCallError as e:
            self._failed(TIMEOUTS, _timeouts_text(target) or "", str(e))
            return
        if want is None:  # restored: no longer ours
            self._original_timeouts = None
            self._states.pop(TIMEOUTS, None)
            log_event(log, "kernel_knob_restored", knob=TIMEOUTS, value=_timeouts_text(got))
            return
        self._set(TIMEOUTS, _timeouts_text(want) or "", _timeouts_text(got), got == want)

    async def _keep_sysctls(self, want: dict[str, int]) -> None:
        for key in [k for k in self._original_sysctls if k not in want]:
            try:
                await self._sysctls.write(key, self._original_sysctls[key])
            except SysctlError as e:
                self._failed(key, str(self._original_sysctls[key]), str(e))
                continue
            log_event(log, "kernel_knob_restored", knob=key, value=self._original_sysctls[key])
            del self._original_sysctls[key]
            self._states.pop(key, None)
        for key in [k for k in self._states if k.startswith("net.") and k not in want]:
            self._states.pop(key)
        for key, value in want.items():
            try:
                got = await self._sysctls.read(key)
                if not sysctl_holds(key, value, got):
                    self._original_sysctls.setdefault(key, got)
                    await self._sysctls.write(key, value)
                    got = await self._sysctls.read(key)
            except SysctlError as e:
                self._failed(key, str(value), str(e))
                continue
            self._set(key, str(value), str(got), sysctl_holds(key, value, got))

    async def _keep_daemons(self, want: tuple[SyncDaemon, ...]) -> None:
        if not want and not self._ours:
            return
        try:
            running = {d.role: d for d in await self._ipvs.daemons()}
        except KernelCallError as e:
            for d in want:
                self._failed(daemon_knob(d.role), _daemon_text(d) or "", str(e))
            return
        wanted = {d.role: d for d in want}
        for role in sorted(self._ours - set(wanted), key=lambda r: r.value):
            await self._stop(role, running)
        changed = False
        failed: set[SyncRole] = set()  # their error stays their state for this pass
        for role, d in wanted.items():
            have = running.get(role)
            if have is not None and d.matches(have):
                self._ours.add(role)  # adopted: a restart with keep_dataplane_on_exit
                continue
            changed = True
            try:
                if have is not None:
                    await self._ipvs.stop_daemon(role)
                    log_event(log, "sync_daemon_drift", role=role.value, was=_daemon_text(have))
                await self._ipvs.start_daemon(d)
            except KernelCallError as e:
                self._failed(daemon_knob(role), _daemon_text(d) or "", str(e))
                failed.add(role)
                continue
            self._ours.add(role)
            log_event(log, "sync_daemon_started", role=role.value, daemon=_daemon_text(d))
        if changed:
            try:
                running = {d.role: d for d in await self._ipvs.daemons()}
            except KernelCallError as e:
                for d in want:
                    self._failed(daemon_knob(d.role), _daemon_text(d) or "", str(e))
                return
        for role, d in wanted.items():
            if role in failed:
                continue
            have = running.get(role)
            ok = have is not None and d.matches(have)
            self._set(daemon_knob(role), _daemon_text(d) or "", _daemon_text(have), ok)

    async def _stop(self, role: SyncRole, running: dict[SyncRole, SyncDaemon]) -> None:
        knob = daemon_knob(role)
        try:
            if role in running:
                await self._ipvs.stop_daemon(role)
        except KernelCallError as e:
            self._failed(knob, "stopped", str(e))
            return
        self._ours.discard(role)
        self._states.pop(knob, None)
        self._logged.pop(knob, None)
        log_event(log, "sync_daemon_stopped", role=role.value)

    def _set(self, knob: str, want: str, got: str | None, ok: bool) -> None:
        self._states[knob] = KnobState(knob, want, got, ok)
        self._clear(knob)

    def _clear(self, knob: str) -> None:
        if self._logged.get(knob) is not None:
            log_event(log, "kernel_knob_recovered", knob=knob)
        self._logged[knob] = None

    def _failed(self, knob: str, want: str, error: str) -> None:
        old = self._states.get(knob)
        if knob != "knobs":
            got = old.got if old is not None else None
            self._states[knob] = KnobState(knob, want, got, False, error)
        self.errors[knob] = self.errors.get(knob, 0) + 1
        if self._logged.get(knob) != error:  # once per distinct error
            log_event(log, "kernel_knob_failed", logging.WARNING, knob=knob, error=error)
            self._logged[knob] = error
