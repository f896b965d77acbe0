"""The one loop that makes the kernel and the BGP announcements match the config.

Every wake-up source (health change, admin call, reload, netlink event, speaker restart, the
periodic resync) only calls ``wake()``. A pass is level-triggered and the same whatever woke it:

    desired (pure) -> observe -> plan (pure) -> withdraw what a removal takes away
    -> claim (one durable ownership write for every object the actions may create)
    -> apply actions one by one -> observe again -> announce what is really there.

A VIP that drifted away is re-added in the same pass and stays announced (no needless withdraw,
which would rehash flows on the other nodes); it is withdrawn only if the repair fails.

One shortcut: ``check_went_down(service)`` withdraws a service that stopped announcing at
once, outside the pass lock (a pass over 1,000 services first spends ~12 ms on the desired
state, and may be running already); it only removes routes, and a pass that overlapped it
re-reads health before announcing (``_announce``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from .admin import AdminState
from .bgp.base import Speaker
from .clock import Clock
from .config import Config
from .dataplane.base import Dataplane, DataplaneError
from .health.tracker import HealthSnapshot
from .logs import log_event
from .model import (
    DataplaneAction,
    DataplaneState,
    Decision,
    IPNetwork,
    ObservedDataplane,
    PeerKey,
    Reason,
    RouteSet,
)
from .plan import batches, describe, plan
from .policy import (
    Desired,
    ServiceDecision,
    announceable,
    desired_state,
    prefixes_given_up,
    vip_owners,
)
from .routeset import kept_routes, prefix_sets, prefix_texts, same_routes

log = logging.getLogger(__name__)
T = TypeVar("T")

# seconds before a pass starts. 0 still yields once, so wake-ups raised in the same loop
# iteration make one pass, and wake-ups during a pass make one more. bench/ measured the old
# 10 ms as most of the check-down -> withdraw-command time (goal p99 <= 10 ms).
DEBOUNCE = 0.0
PASS_TIMEOUT = 60.0  # seconds: a pass that takes longer is abandoned (and counted)
IO_TIMEOUT = 10.0  # seconds: any single adapter call
ADD_BATCH = 32  # AddAddress actions in flight at once (well within a netlink socket's buffer)


class ReconcilerStopped(Exception):
    """``reconcile_once`` was called after ``shutdown`` began: no more passes."""


class HealthSource(Protocol):
    def snapshot(self) -> HealthSnapshot: ...


class AdminSource(Protocol):
    @property
    def state(self) -> AdminState: ...


@dataclass(frozen=True)
class PassResult:
    decisions: Mapping[str, ServiceDecision]
    observed: ObservedDataplane  # after the actions were applied
    routes: RouteSet  # what the speaker was given at the end of the pass
    actions: tuple[DataplaneAction, ...]  # applied successfully, in order
    errors: tuple[str, ...]  # actions that failed (the pass went on)
    duration: float
    withdrew_first: bool = False  # routes were withdrawn before removals
    conflicts: Mapping[str, str] = field(default_factory=dict)


class Reconciler:
    def __init__(
        self,
        config: Config,
        dataplane: Dataplane,
        speaker: Speaker,
        health: HealthSource,
        admin: AdminSource,
        clock: Clock,
        on_pass: Callable[[PassResult], None] | None = None,
        *,
        debounce: float = DEBOUNCE,
        pass_timeout: float = PASS_TIMEOUT,
        io_timeout: float = IO_TIMEOUT,
    ) -> None:
        self._config = config
        self._owners = vip_owners(config)
        self._dataplane = dataplane
        self._speaker = speaker
        self._health = health
        self._admin = admin
        self._clock = clock
        self._on_pass = on_pass
        self._debounce = debounce
        self._pass_timeout = pass_timeout
        self._io_timeout = io_timeout
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        # every speaker.set_routes goes through this lock: the fast withdraw runs outside
        # the pass lock, and a pass must not announce over a withdraw it did not see
        self._speaker_lock = asyncio.Lock()
        self._fast_withdrawals = 0  # bumped by each fast withdraw; a pass compares it
        self._fast_tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._next_change: float | None = None
        self.last_progress: float = clock.now()
        self.last: PassResult | None = None
        self.passes = 0
        self.failed_passes = 0
        self.last_error: str | None = None

    @property
    def config(self) -> Config:
        return self._config

    @property
    def ready(self) -> bool:
        """True once a pass has completed."""
        return self.last is not None

    def wake(self) -> None:
        """Ask for a pass soon. Cheap and safe from any callback on the loop's thread."""
        self._wakeup.set()

    def check_went_down(self, service: str) -> None:
        """A check of ``service`` just went down: withdraw its prefixes now if the service no
        longer announces, without waiting for a pass (which may be running, and at 1,000
        services recomputes everything first). The pass that ``wake()`` also asks for does the
        rest; it re-checks health before it announces (see ``_announce``)."""
        if not self._stopping:
            # scheduled before wake(): the woken pass computes the whole desired state
            # without yielding (~12 ms at 1,000 services) and would run first otherwise
            task = asyncio.ensure_future(self._fast_withdraw(service))
            self._fast_tasks.add(task)
            task.add_done_callback(self._fast_done)
        self.wake()

    def _fast_done(self, task: asyncio.Task[None]) -> None:
        self._fast_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log_event(log, "fast_withdraw_failed", logging.WARNING, error=repr(task.exception()))

    def set_config(self, config: Config) -> None:
        """Use ``config`` from the next pass on (the speaker is reconfigured by the caller)."""
        self._config, self._owners = config, vip_owners(config)
        self.wake()

    async def run(self) -> None:
        """Pass on every wake-up and every ``resync_interval``, until ``shutdown``."""
        self.wake()  # the first pass right away
        while not self._stopping:
            await self._wait()
            if self._stopping:
                break
            await self._clock.sleep(self._debounce)
            self._wakeup.clear()
            if self._stopping:
                break
            try:
                await self.reconcile_once()
            except ReconcilerStopped:
                break
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a failed pass never ends the loop
                self.failed_passes += 1
                self.last_error = f"{type(e).__name__}: {e}"
                log_event(log, "reconcile_failed", logging.ERROR, error=self.last_error)
            self.last_progress = self._clock.now()

    async def reconcile_once(self) -> PassResult:
        """One pass (waits for a pass or shutdown in progress; raises ReconcilerStopped after
        shutdown began: a late pass must not re-announce what shutdown withdrew)."""
        async with self._lock:
            if self._stopping:
                raise ReconcilerStopped("the reconciler is shutting down")
            async with asyncio.timeout(self._pass_timeout):
                return await self._pass()

    async def shutdown(self, grace: float, keep_dataplane: bool) -> None:
        """Withdraw everything, wait ``grace`` with the sessions up, tear down, stop the speaker.

        Every step runs even if an earlier one failed; failures are logged.
        """
        self._stopping = True
        self.wake()
        async with self._lock:
            async with self._speaker_lock:
                await self._best_effort("withdraw all routes", self._speaker.set_routes({}))
            self._mark_shutting_down()
            await self._clock.sleep(grace)
            if not keep_dataplane:
                await self._best_effort("tear down the dataplane", self._teardown())
            await self._best_effort("stop the speaker", self._speaker.stop())

    # ------------------------------------------------------------------ internals

    async def _wait(self) -> None:
        if self._wakeup.is_set():
            return
        waiter = asyncio.ensure_future(self._wakeup.wait())
        timeout = self._config.node.resync_interval
        if self._next_change is not None:  # e.g. a drain delay ends: withdraw on time
            timeout = min(timeout, max(0.0, self._next_change - self._clock.now()))
        sleeper = asyncio.ensure_future(self._clock.sleep(timeout))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()
            await asyncio.gather(waiter, sleeper, return_exceptions=True)

    async def _io(self, call: Awaitable[T]) -> T:
        async with asyncio.timeout(self._io_timeout):
            return await call

    async def _pass(self) -> PassResult:
        started = self._clock.now()
        config = self._config
        fast_seen = self._fast_withdrawals
        desired = desired_state(config, self._health.snapshot(), self._admin.state, started)
        self._next_change = desired.next_change
        await self._withdraw_early(desired)
        observed = await self._io(self._dataplane.observe())
        advertised = self._speaker.advertised()
        steps = plan(desired, observed, advertised)
        withdrew = not same_routes(steps.withdraw, advertised)
        if withdrew:
            stay = prefix_sets(steps.withdraw)
            await self._narrow(lambda peer, prefix: prefix in stay.get(peer, ()))
            gone = prefix_texts(advertised) - prefix_texts(steps.withdraw)
            log_event(log, "routes_withdrawn_before_removal", prefixes=" ".join(sorted(gone)))
        applied: list[DataplaneAction] = []
        errors: list[str] = []
        if steps.actions:
            await self._claim(steps.actions)
        for group in batches(steps.actions, ADD_BATCH):
            outcomes = await asyncio.gather(*(self._apply(a) for a in group))
            for action, error in zip(group, outcomes, strict=True):
                if error is not None:
                    errors.append(f"{type(action).__name__}: {error}")
                    log_event(
                        log,
                        "dataplane_action_failed",
                        logging.WARNING,
                        action=type(action).__name__,
                        object=describe(action),
                        error=error,
                    )
                else:
                    applied.append(action)
                    log_event(
                        log,
                        "dataplane_changed",
                        action=type(action).__name__,
                        object=describe(action),
                    )
        if steps.actions:
            observed = await self._io(self._dataplane.observe())
        routes, decisions = announceable(desired, observed, steps.conflicts)
        routes = await self._announce(routes, fast_seen)
        result = PassResult(
            decisions=decisions,
            observed=observed,
            routes=routes,
            actions=tuple(applied),
            errors=tuple(errors),
            duration=self._clock.now() - started,
            withdrew_first=withdrew,
            conflicts=steps.conflicts,
        )
        self._log_changes(result)
        self.last = result
        self.passes += 1
        self.last_progress = self._clock.now()
        if self._on_pass is not None:
            self._on_pass(result)
        return result

    async def _withdraw_early(self, desired: Desired) -> None:
        """Withdraw advertised prefixes that nothing wants any more (a check went down)
        before the dataplane dump: that dump grows with the services and is not needed to
        know a route must go. Routes whose attributes change (drain) are left to the normal
        path, which replaces them without a withdraw."""
        wanted = prefix_sets(desired.routes)
        await self._narrow(lambda peer, prefix: prefix in wanted.get(peer, ()))

    async def _narrow(self, keep: Callable[[PeerKey, IPNetwork], bool]) -> bool:
        """A withdraw-only update: of what the speaker advertises *now* (read under the
        speaker lock, so a fast withdraw that just ran is never undone), keep the routes
        ``keep`` accepts. True if something was withdrawn."""
        async with self._speaker_lock:
            advertised = self._speaker.advertised()
            kept = kept_routes(advertised, keep)
            if same_routes(kept, advertised):
                return False
            await self._io(self._speaker.set_routes(kept))
            return True

    async def _apply(self, action: DataplaneAction) -> str | None:
        """None, or why ``action`` failed."""
        try:
            await self._io(self._dataplane.apply(action))
        except (DataplaneError, TimeoutError) as e:
            return str(e) or "timed out"
        return None

    async def _claim(self, actions: tuple[DataplaneAction, ...]) -> None:
        """One ownership write for the whole batch. If it fails, each apply writes its own
        (slower, as safe), so the pass goes on."""
        try:
            await self._io(self._dataplane.claim(actions))
        except (DataplaneError, TimeoutError) as e:
            log_event(log, "dataplane_claim_failed", logging.WARNING, error=str(e) or "timed out")

    async def _announce(self, routes: RouteSet, fast_seen: int) -> RouteSet:
        """Give the speaker the pass's routes; if a fast withdraw happened during the pass,
        first drop what the health of *now* no longer wants (the pass decided on older
        health and would otherwise re-announce it)."""
        async with self._speaker_lock:
            if self._fast_withdrawals != fast_seen:
                now = desired_state(
                    self._config, self._health.snapshot(), self._admin.state, self._clock.now()
                )
                wanted = prefix_sets(now.routes)
                routes = kept_routes(routes, lambda peer, prefix: prefix in wanted.get(peer, ()))
            await self._io(self._speaker.set_routes(routes))
        return routes

    async def _fast_withdraw(self, name: str) -> None:
        """Withdraw the prefixes of service ``name`` if it no longer announces and no other
        announcing service shares them (policy.prefixes_given_up)."""
        gone = prefixes_given_up(
            self._config,
            name,
            self._health.snapshot(),
            self._admin.state,
            self._clock.now(),
            self._owners,
        )
        if not gone:
            return
        if self._stopping or not await self._narrow(lambda peer, prefix: prefix not in gone):
            return
        self._fast_withdrawals += 1
        log_event(
            log,
            "routes_withdrawn_fast",
            service=name,
            prefixes=" ".join(sorted(str(p) for p in gone)),
        )

    def _mark_shutting_down(self) -> None:
        if self.last is None:
            return
        decisions = {
            name: replace(d, decision=Decision.WITHDRAW, reason=Reason.SHUTTING_DOWN, detail="")
            for name, d in self.last.decisions.items()
        }
        self.last = replace(self.last, decisions=decisions, routes={})

    async def _teardown(self) -> None:
        observed = await self._io(self._dataplane.observe())
        nothing = Desired(dataplane=DataplaneState(), services={}, routes={})
        actions = plan(nothing, observed, {}).actions
        if actions:
            await self._claim(actions)
        for action in actions:
            await self._best_effort(f"{type(action).__name__}", self._dataplane.apply(action))

    async def _best_effort(self, what: str, call: Awaitable[None]) -> None:
        try:
            await self._io(call)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log_event(
                log, "shutdown_step_failed", logging.ERROR, step=what, error=str(e) or repr(e)
            )

    def _log_changes(self, result: PassResult) -> None:
        before = self.last.decisions if self.last is not None else {}
        for name, d in result.decisions.items():
            old = before.get(name)
            if old is None or (old.decision, old.reason) != (d.decision, d.reason):
                log_event(
                    log,
                    "service_decision",
                    service=name,
                    decision=d.decision.value,
                    reason=d.reason.value,
                    detail=d.detail,
                )
