"""The composition root: builds the agent from its parts and runs it until told to stop.

Tasks: the health runner, the reconciler, the watchdog and the HTTP API. Signals: SIGTERM/SIGINT
withdraw everything, wait ``shutdown_grace``, clean up (another SIGTERM/SIGINT meanwhile ends
the grace at once); SIGHUP reloads the config file (handlers: signals.py). A crashed internal
task ends the agent with exit 1 after a best-effort withdraw. The process entry (``bgp-lb run``:
the real adapters, the host check, the API listeners) is entry.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from . import __version__
from .admin import AdminStore
from .apitoken import ApiToken
from .bfd.base import Bfd
from .bgp.base import Speaker
from .buildinfo import exabgp_version
from .clock import Clock
from .config import Config
from .cooperative import run_cooperatively
from .dataplane.base import Dataplane
from .dataplane.knobs import desired_knobs
from .dataplane.prereq import Prerequisite, check_prerequisites
from .gocompat import GoFlags
from .health.checks import Prober
from .health.runner import HealthRunner
from .health.tracker import CheckKey, CheckResult, CheckState
from .heap import freeze_heap
from .hostlinks import host_issues
from .knobkeeper import KnobKeeper
from .logs import log_event, register_secret
from .looplag import LoopLagMonitor
from .metrics import Metrics
from .model import CheckStatus, DataplaneState
from .policy import desired_state
from .reconciler import PassResult, Reconciler
from .reload import ReloadRefused, prepare_reload, reload_outcome
from .sdnotify import notify
from .signals import install_signals
from .statefile import ADMIN, API_TOKEN, EXABGP_CONFIG, OWNERSHIP, FileHealth
from .status import AgentControl, ReloadResult, ReloadStatus, StatusResponse, TrafficResponse
from .status_document import status_json
from .status_view import build_status
from .stopguard import bounded_phase, cancel_tasks, emergency_withdraw, stop_bfd
from .traffic import service_vips, traffic_response, vip_services

log = logging.getLogger("bgplb.agent")

EXIT_CRASH = 1
EXIT_CONFIG = 2
TASKS_BUDGET = 10.0  # seconds for the cancelled tasks to end, the dataplane to close
PERSIST_WAIT = 1.0  # seconds a pass waits for a retried admin.json write (it goes on after)

Notify = Callable[[str], object]


class Agent(AgentControl):
    """One LB node: health, reconcile, speaker, dataplane, API state."""

    def __init__(
        self,
        config: Config,
        *,
        dataplane: Dataplane,
        speaker: Speaker,
        clock: Clock,
        config_path: Path | None = None,
        prober: Prober | None = None,
        metrics: Metrics | None = None,
        notifier: Notify = notify,
        watchdog_seconds: float | None = None,
        check_node: bool = False,
        knobs: KnobKeeper | None = None,
        image_version: str = "",
        config_adjust: Callable[[Config], Config] | None = None,
        legacy_metrics: bool = False,
        bfd: Bfd | None = None,
        go_flags: GoFlags | None = None,
    ) -> None:
        self.config = config
        self.go_flags = go_flags  # started from the Go command line (status node.go_flags)
        self.config_adjust = config_adjust  # applied to every reloaded file (gocompat)
        self.image_version = image_version  # buildinfo.image_version(); "" off the image
        self.config_path = config_path
        self.dataplane = dataplane
        self.speaker = speaker
        self.clock = clock
        self.metrics = metrics or Metrics(
            per_real_server=config.node.metrics_per_real_server,
            exabgp_version=exabgp_version(),
            image_version=image_version,
            legacy_path_gauge=legacy_metrics,
        )
        self.notifier = notifier
        self.watchdog_seconds = watchdog_seconds
        self.check_node = check_node
        self.started_at = clock.now()
        self.admin = AdminStore(
            config.node.state_dir,
            clock,
            start_drained=config.node.start_drained,
            deferred_writes=True,  # persist() fsyncs in a worker thread, off the event loop
        )
        self.health = HealthRunner(clock, self._wake, prober)
        self.health.on_result = self._on_check_result
        self.health.on_watch_lost = self.metrics.watch_lost
        self.knobs = knobs  # sysctls, IPVS timeouts, sync daemons (knobkeeper.py)
        self.bfd = bfd  # FRR's bfdd for peers with bfd set (bfd/); None: no peer has it
        self.reconciler = Reconciler(
            config,
            dataplane,
            speaker,
            self.health,
            self.admin,
            clock,
            on_pass=self._on_pass,
            knobs=knobs,
            bfd=bfd,
        )
        self.api_token: ApiToken | None = None  # set by _serve
        adopt = getattr(dataplane, "set_desired_source", None)
        if adopt is not None:  # a lost ownership record adopts what is exactly as desired
            adopt(self._desired_dataplane)
        self.stopping = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._commands_seen = 0
        self.prerequisites: list[Prerequisite] = []
        self.loop_lag = LoopLagMonitor(self.metrics.event_loop_lag, config.node.loop_lag_interval)
        self.last_reload: ReloadStatus | None = None

    # ------------------------------------------------------------------ wiring

    def _wake(self) -> None:
        self.reconciler.wake()

    def _desired_dataplane(self) -> DataplaneState:
        now = self.clock.now()
        return desired_state(self.config, self.health.snapshot(), self.admin.state, now).dataplane

    def state_files(self) -> dict[str, FileHealth]:
        """Every state file's health (statefile.FILES), for status and metrics."""
        files = {ADMIN: self.admin.health}
        record = getattr(self.dataplane, "record_health", None)
        if isinstance(record, FileHealth):
            files[OWNERSHIP] = record
        speaker = getattr(self.speaker, "config_health", None)  # the rendered ExaBGP config
        if isinstance(speaker, FileHealth):
            files[EXABGP_CONFIG] = speaker
        if self.api_token is not None:
            files[API_TOKEN] = self.api_token.health
        return files

    def _on_check_result(self, key: CheckKey, result: CheckResult, state: CheckState) -> None:
        self.metrics.record_check(key, result, state)
        if state.status is CheckStatus.DOWN and state.changed_at == result.time:
            self.reconciler.check_went_down(key.service)  # this result took it down

    async def _on_pass(self, result: PassResult) -> None:
        """Awaited by the reconciler after each pass: metrics follow the new state. The loop
        gets a turn between the per-service families (each walks every service)."""
        await asyncio.sleep(0)  # after the pass's own last piece (announce, logs)
        self.metrics.reconcile_pass(result)
        self.metrics.set_peers(self.speaker.peers())
        if self.bfd is not None:
            self.metrics.set_bfd(self.bfd.sessions(), self.bfd.restarts())
        self.metrics.set_routes(self.speaker.advertised())
        await asyncio.sleep(0)
        self.metrics.set_path_advertisement(self.config, self.speaker.advertised())
        await asyncio.sleep(0)
        self.metrics.set_speaker(self.speaker)
        sent = int(getattr(self.speaker, "commands_sent", 0))
        if sent > self._commands_seen:
            self.metrics.speaker_commands(sent - self._commands_seen)
            self._commands_seen = sent
        self.metrics.set_check_states(self.health.snapshot())
        await asyncio.sleep(0)
        self.metrics.set_decisions(result.decisions)
        await asyncio.sleep(0)
        self.metrics.set_pool_tables(result.pools)
        self.admin.retry()  # a drain the disk refused is written once it allows
        await self.admin.persist(wait=PERSIST_WAIT)
        self.metrics.set_state_files(self.state_files())
        if self.knobs is not None:
            self.metrics.set_knobs(self.knobs.states(), self.knobs.errors, self.knobs.daemon_up())

    async def start(self) -> None:
        for peer in self.config.peers:
            if peer.md5_password_file is not None:
                with contextlib.suppress(OSError):
                    register_secret(peer.md5_password_file.read_text().strip())
        if self.check_node:
            self.prerequisites = check_prerequisites(self.config)
        if self.knobs is not None:  # what the keeper sets is reported as kernel_knobs
            kept = {f"sysctl {key}" for key, _ in desired_knobs(self.config).sysctls}
            self.prerequisites = [p for p in self.prerequisites if p.name not in kept]
        for p in self.prerequisites:
            if not p.ok:
                log_event(
                    log,
                    "prerequisite_missing",
                    level=logging.WARNING,
                    name=p.name,
                    detail=p.detail,
                    fix=p.fix,
                )
        self.metrics.set_observed_source(lambda: getattr(self.reconciler.last, "observed", None))
        self.loop_lag.start()  # bgplb_event_loop_lag_seconds
        await self.dataplane.start(self._wake)
        if self.bfd is not None:  # before the speaker: its routes wait for BFD Up
            await self.bfd.start(self.config, self._wake)
        await self.speaker.start(self.config, self._wake)
        self.health.configure(self.config)
        self.metrics.set_drained(self.admin.state, self.config)
        self.metrics.set_vip_services(vip_services(self.config.services))
        self.metrics.set_state_files(self.state_files())
        self.metrics.config_reloaded(True, self.clock.wall())  # the file in force loaded fine
        freeze_heap()
        log_event(log, "agent_started", version=__version__, services=len(self.config.services))

    async def run(self) -> int:
        """Run until SIGTERM-like stop (returns 0) or a crashed task (returns 1)."""
        await self.start()
        self._tasks = [
            asyncio.create_task(self.health.run(), name="health"),
            asyncio.create_task(self.reconciler.run(), name="reconciler"),
            asyncio.create_task(self._watchdog(), name="watchdog"),
        ]
        stop_wait = asyncio.create_task(self.stopping.wait(), name="stop")
        ready_task = asyncio.create_task(self._notify_ready(), name="ready")
        done, _ = await asyncio.wait([stop_wait, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        crashed = [t for t in done if t is not stop_wait]
        ready_task.cancel()
        if crashed:
            task = crashed[0]
            exc = task.exception() if not task.cancelled() else None
            log_event(
                log, "task_crashed", level=logging.CRITICAL, task=task.get_name(), error=repr(exc)
            )
            await emergency_withdraw(self.speaker)
            await stop_bfd(self.bfd)
            await cancel_tasks(self._tasks, stop_wait)
            self.loop_lag.stop()
            return EXIT_CRASH
        self.notifier("STOPPING=1")
        log_event(log, "agent_stopping", grace=self.config.node.shutdown_grace)
        # every phase bounded (stopguard.py): a stuck one is logged with stacks, the stop goes on
        await bounded_phase("cancel the tasks", cancel_tasks(self._tasks, stop_wait), TASKS_BUDGET)
        grace = self.config.node.shutdown_grace
        if not await bounded_phase(
            "withdraw, grace, teardown",
            self.reconciler.shutdown(grace, self.config.node.keep_dataplane_on_exit),
            self.reconciler.shutdown_budget(grace),
        ):  # the speaker's stop (last) may not have run: ExaBGP must not outlive us
            await bounded_phase("stop the speaker", self.speaker.stop(), TASKS_BUDGET)
        await stop_bfd(self.bfd)  # only now: the speaker closed its sessions first (bounded)
        await bounded_phase("close the dataplane", self.dataplane.close(), TASKS_BUDGET)
        log_event(log, "agent_stopped")
        self.loop_lag.stop()
        return 0

    def request_stop(self) -> None:
        """SIGTERM/SIGINT. The first stops the agent (withdraw, ``shutdown_grace``, teardown);
        a later one ends the grace at once (an operator who does not want to wait)."""
        if not self.stopping.is_set():
            self.stopping.set()
            return
        log_event(log, "shutdown_grace_ended", level=logging.WARNING, by="signal")
        self.reconciler.end_grace()

    async def _notify_ready(self) -> None:
        while not self.reconciler.ready:
            await self.clock.sleep(0.05)
        self.notifier("READY=1")
        log_event(log, "agent_ready")

    # ------------------------------------------------------------------ watchdog

    def progressing(self) -> bool:
        """Both the reconciler and the check scheduler moved recently."""
        now = self.clock.now()
        node = self.config.node
        limit = max(self.watchdog_seconds or 0.0, 2 * node.resync_interval + 5.0)
        return (
            now - self.reconciler.last_progress < limit and now - self.health.last_progress < limit
        )

    async def _watchdog(self) -> None:
        if not self.watchdog_seconds:
            await asyncio.Event().wait()  # nothing to ping; park forever
            return
        while True:
            if self.progressing():
                self.notifier("WATCHDOG=1")
            else:
                log_event(log, "watchdog_stalled", level=logging.ERROR)
            await self.clock.sleep(self.watchdog_seconds / 2)

    # ------------------------------------------------------------------ AgentControl

    def ready(self) -> bool:
        return self.reconciler.ready

    def status(self) -> StatusResponse:
        return build_status(self)

    async def status_json(self) -> str:
        return await status_json(self)

    async def drain(self, service: str | None) -> str | None:
        """In force at once even when state_dir refuses the write (returns why)."""
        self._known(service)
        self.admin.drain(service)
        return await self._admin_changed("drain", service)

    async def undrain(self, service: str | None) -> str | None:
        self._known(service)
        self.admin.undrain(service)
        return await self._admin_changed("undrain", service)

    async def _admin_changed(self, action: str, service: str | None) -> str | None:
        """The change is in force: the reconciler acts on it while the file is written (in a
        worker thread, AdminStore.persist), then metrics, the log line and the answer say
        whether it reached the disk."""
        self.reconciler.wake()
        await self.admin.persist()
        self.metrics.set_drained(self.admin.state, self.config)
        self.metrics.set_state_files(self.state_files())
        not_persisted = None if self.admin.persisted else self.admin.problem
        log_event(log, action, service=service or "*", persisted=not_persisted is None)
        return not_persisted

    def _known(self, service: str | None) -> None:
        if service is not None and self.config.service(service) is None:
            raise KeyError(service)

    async def traffic(self, service: str) -> TrafficResponse:
        svc = self.config.service(service)
        if svc is None:
            raise KeyError(service)
        keys = [k for keys in service_vips(svc).values() for k in keys]
        counters = await self.dataplane.read_counters(keys) if keys else {}
        return traffic_response(svc, counters, self.clock.now())

    async def reload(self, probe: bool = False) -> ReloadResult:
        """Prepare, then switch all or nothing (one reload at a time). The reload runs to its
        end even if the caller stops waiting (an API timeout): never half-applied."""
        return await asyncio.shield(asyncio.ensure_future(self._serialized_reload(probe)))

    async def _serialized_reload(self, probe: bool) -> ReloadResult:
        async with self._reload_lock:
            try:
                result = await self._reload(probe)
            except Exception as exc:  # a bug: still a clean failed reload, the old config stays
                result = ReloadResult(ok=False, errors=[f"{type(exc).__name__}: {exc}"])
            token = self.api_token  # a fixed (or changed) token file is read again
            if token is not None and (secret := token.load(self.config.node.api.token_file)):
                register_secret(secret)
            self.last_reload = reload_outcome(result, self.metrics, self.clock.wall())
            return result

    async def _reload(self, probe: bool) -> ReloadResult:
        if self.config_path is None:
            return ReloadResult(ok=False, errors=["the agent was started without a file"])
        old = self.config
        try:
            prepared = await prepare_reload(
                self.config_path,
                old,
                self.health.specs(),
                self.health.prober,
                host_issues=host_issues if self.check_node else None,
                adjust=self.config_adjust,
                probe=probe,
            )
        except ReloadRefused as refused:
            return ReloadResult(
                ok=False,
                errors=refused.errors,
                probed_checks=refused.probed,
                failed_checks=refused.failed,
            )
        new = prepared.config
        # the checks' carry-over, computed before the switch (cooperatively; issue 13 item 8)
        carried = await run_cooperatively(self.health.carry_steps(prepared.checks))
        if new.peers != old.peers or new.node != old.node:
            # the one step that can fail, before anything else switched
            try:
                await self.speaker.reconfigure(new)
            except Exception as exc:
                errors = [f"speaker: {exc}"]
                try:
                    await self.speaker.reconfigure(old)
                except Exception as again:
                    errors.append(f"speaker: restoring the previous peers failed: {again}")
                return ReloadResult(ok=False, errors=errors)
            if self.bfd is not None:  # logs and falls back to a bfdd restart by itself
                await self.bfd.reconfigure(new)
        self.config = new
        self.loop_lag.interval = new.node.loop_lag_interval  # from the next tick on
        self.health.configure_checks(prepared.checks, carried)  # prepared before the switch
        self.reconciler.set_config(new)
        await asyncio.sleep(0)  # switched; what follows is bookkeeping, in pieces of its own
        self.metrics.set_drained(self.admin.state, new)
        self.metrics.set_vip_services(vip_services(new.services))
        # the new config is not frozen: a freeze now would keep in-flight cycles (heap.py)
        return ReloadResult(
            ok=True,
            changed_services=prepared.changed_services,
            probed_checks=prepared.probed_checks,
        )


# re-exported: the tests install the signal handlers from here
_install_signals = install_signals
