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
re-reads health before announcing (routegate.py). The dataplane side (claim, apply in
batches) is applier.py.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from .admin import AdminState
from .applier import ADD_BATCH, Applier
from .bfd.base import BfdSession
from .bfd.hold import held_peers, hold_routes
from .bgp.base import Speaker
from .clock import Clock
from .config import Config
from .cooperative import run_cooperatively
from .dataplane.base import Dataplane
from .health.tracker import HealthSnapshot
from .linkbw import BandwidthHold, VipBandwidth, VipKey, capacities
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
    VirtualServiceKey,
)
from .passlog import PassTimer, log_changes, log_pools
from .plan import plan, plan_steps
from .policy import (
    Desired,
    ServiceDecision,
    announceable_steps,
    desired_steps,
    prefixes_given_up,
    vip_owners,
)
from .pool import PoolView, pool_views
from .routegate import RouteGate, Wanted
from .routeset import prefix_sets, prefix_texts, same_routes

log = logging.getLogger(__name__)
__all__ = ["ADD_BATCH", "PassResult", "Reconciler", "ReconcilerStopped"]

# seconds before a pass starts. 0 still yields once, so wake-ups raised in the same loop
# iteration make one pass, and wake-ups during a pass make one more. bench/ measured the old
# 10 ms as most of the check-down -> withdraw-command time (goal p99 <= 10 ms).
DEBOUNCE = 0.0
PASS_TIMEOUT = 60.0  # seconds: a pass that takes longer is abandoned (and counted)
IO_TIMEOUT = 10.0  # seconds: any single adapter call


class ReconcilerStopped(Exception):
    """``reconcile_once`` was called after ``shutdown`` began: no more passes."""


class HealthSource(Protocol):
    def snapshot(self) -> HealthSnapshot: ...


class AdminSource(Protocol):
    @property
    def state(self) -> AdminState: ...


class BfdSource(Protocol):
    """``bfd.base.Bfd``: the BFD session per peer with ``bfd`` set."""

    def sessions(self) -> Mapping[PeerKey, BfdSession]: ...


class KnobSource(Protocol):
    """``knobkeeper.KnobKeeper``: the node's kernel knobs (never raises, bounds itself)."""

    async def reconcile(self, config: Config) -> None: ...

    async def stop(self) -> None: ...


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
    pools: tuple[PoolView, ...] = ()  # pool-mode virtual services: order and fingerprint
    held: Mapping[PeerKey, str] = field(default_factory=dict)  # peer -> why it gets no route
    bandwidth: Mapping[VipKey, VipBandwidth] = field(default_factory=dict)  # link_bandwidth


class Reconciler:
    def __init__(
        self,
        config: Config,
        dataplane: Dataplane,
        speaker: Speaker,
        health: HealthSource,
        admin: AdminSource,
        clock: Clock,
        on_pass: Callable[[PassResult], Awaitable[None] | None] | None = None,
        *,
        debounce: float = DEBOUNCE,
        pass_timeout: float = PASS_TIMEOUT,
        io_timeout: float = IO_TIMEOUT,
        knobs: KnobSource | None = None,
        bfd: BfdSource | None = None,
    ) -> None:
        self._config = config
        self._knobs = knobs
        self._bfd = bfd
        self._owners = vip_owners(config)
        self._dataplane = dataplane
        self._speaker = speaker
        # every speaker.set_routes goes through the gate (one lock): the fast withdraw runs
        # outside the pass lock, and a pass must not announce over a withdraw it did not see
        self._gate = RouteGate(speaker, io_timeout)
        self._health = health
        self._admin = admin
        self._clock = clock
        self._on_pass = on_pass
        self._debounce = debounce
        self._pass_timeout = pass_timeout
        self._io_timeout = io_timeout
        self._wakeup = asyncio.Event()
        self._grace_over = asyncio.Event()  # end_grace(): a second SIGTERM
        self._lock = asyncio.Lock()
        self._stopping = False
        self._next_change: float | None = None
        self.last_progress: float = clock.now()
        self.last: PassResult | None = None
        self.passes = 0
        self.failed_passes = 0
        self.last_error: str | None = None
        self._order_warned: set[VirtualServiceKey] = set()
        self._bandwidth = BandwidthHold()  # link_bandwidth's hold-down (linkbw.py)

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
        rest; it re-checks health before it announces (``RouteGate.announce``)."""
        if not self._stopping:
            # scheduled before wake(): the woken pass computes the whole desired state
            # without yielding (~12 ms at 1,000 services) and would run first otherwise
            self._gate.withdraw_soon(
                service, functools.partial(self._given_up, service), lambda: self._stopping
            )
        self.wake()

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

        Every step runs even if an earlier one failed; failures are logged. ``end_grace()``
        (before or during the grace) cuts the wait short.
        """
        self._stopping = True
        self.wake()
        async with self._lock:
            await self._best_effort("withdraw all routes", self._gate.withdraw_all())
            self._mark_shutting_down()
            await self._first(self._grace_over, grace)
            if not keep_dataplane:
                await self._best_effort("tear down the dataplane", self._io(self._teardown()))
                if self._knobs is not None:
                    await self._best_effort("stop the sync daemons", self._knobs.stop())
            await self._best_effort("stop the speaker", self._io(self._speaker.stop()))

    def shutdown_budget(self, grace: float) -> float:
        """How long ``shutdown`` may take: its four steps bounded by the I/O timeout, the
        grace, and one more for the lock (the reconciler task, the only one that runs
        passes, is cancelled before)."""
        return 5 * self._io_timeout + grace + 5.0

    def end_grace(self) -> None:
        """End the shutdown grace now (or skip it, if it has not begun): an operator's second
        SIGTERM. The teardown that follows it runs as usual."""
        self._grace_over.set()

    # ------------------------------------------------------------------ internals

    async def _wait(self) -> None:
        timeout = self._config.node.resync_interval
        if self._next_change is not None:  # e.g. a drain delay ends: withdraw on time
            timeout = min(timeout, max(0.0, self._next_change - self._clock.now()))
        await self._first(self._wakeup, timeout)

    async def _first(self, event: asyncio.Event, seconds: float) -> None:
        """Until ``event`` is set or ``seconds`` have passed (on the clock)."""
        if event.is_set():
            return
        waiter = asyncio.ensure_future(event.wait())
        sleeper = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            sleeper.cancel()
            await asyncio.gather(waiter, sleeper, return_exceptions=True)

    @property
    def _applier(self) -> Applier:
        return Applier(self._dataplane, self._io_timeout)

    async def _io(self, call: Awaitable[None]) -> None:
        async with asyncio.timeout(self._io_timeout):
            await call

    async def _pass(self) -> PassResult:
        timer = PassTimer(self._clock.now)
        started = timer.started
        config = self._config
        fast_seen = self._gate.fast_withdrawals
        health = self._health.snapshot()
        bandwidth = self._bandwidth.update(config, capacities(config, health), started)
        # the loop gets a turn every ~2 ms of it (cooperative.py): 0.1-0.5 s at 1,000 services
        desired = await run_cooperatively(
            desired_steps(config, health, self._admin.state, started, bandwidth)
        )
        self._next_change = min(
            (t for t in (desired.next_change, self._bandwidth.next_change) if t is not None),
            default=None,
        )
        timer.mark("desired")
        await self._withdraw_early(desired)
        timer.mark("withdraw_early")
        observed = await self._applier.observe()
        timer.mark("observe")
        if self._knobs is not None:  # sysctls, IPVS timeouts, sync daemons (knobkeeper.py)
            await self._knobs.reconcile(config)
            timer.mark("knobs")
        advertised = self._gate.advertised()  # a snapshot: the plan's inputs never change
        steps = await run_cooperatively(plan_steps(desired, observed, advertised))
        withdrew = not same_routes(steps.withdraw, advertised)
        if withdrew:
            stay = prefix_sets(steps.withdraw)
            await self._gate.narrow(lambda peer, prefix: prefix in stay.get(peer, ()))
            gone = prefix_texts(advertised) - prefix_texts(steps.withdraw)
            log_event(log, "routes_withdrawn_before_removal", prefixes=" ".join(sorted(gone)))
        applied: list[DataplaneAction] = []
        errors: list[str] = []
        if steps.actions:
            await self._applier.claim(steps.actions)
            applied, errors = await self._applier.apply_all(steps.actions)
            observed = await self._applier.observe()
        timer.mark("plan_apply")
        routes, decisions = await run_cooperatively(
            announceable_steps(desired, observed, steps.conflicts)
        )
        held = held_peers(config, self._bfd.sessions()) if self._bfd is not None else {}
        routes = await self._gate.announce(hold_routes(routes, held), fast_seen, self._wanted_now)
        timer.mark("announce")
        result = PassResult(
            decisions=decisions,
            observed=observed,
            routes=routes,
            actions=tuple(applied),
            errors=tuple(errors),
            duration=self._clock.now() - started,
            withdrew_first=withdrew,
            conflicts=steps.conflicts,
            pools=pool_views(desired.pools, observed),
            held=held,
            bandwidth=dict(self._bandwidth.vips),
        )
        self._order_warned = log_pools(result.pools, steps.rebuilt, self._order_warned)
        timer.log_if_slow()
        log_changes(self.last.decisions if self.last is not None else {}, result.decisions)
        self.last = result
        self.passes += 1
        self.last_progress = self._clock.now()
        if self._on_pass is not None:
            done = self._on_pass(result)  # a coroutine (the agent's metrics) is awaited
            if done is not None:
                await done
        return result

    async def _withdraw_early(self, desired: Desired) -> None:
        """Withdraw advertised prefixes that nothing wants any more (a check went down)
        before the dataplane dump: that dump grows with the services and is not needed to
        know a route must go. Routes whose attributes change (drain) are left to the normal
        path, which replaces them without a withdraw."""
        wanted = prefix_sets(desired.routes)
        await self._gate.narrow(lambda peer, prefix: prefix in wanted.get(peer, ()))

    async def _wanted_now(self) -> Wanted:
        """The prefixes per peer the health of *now* wants announced."""
        now = await run_cooperatively(
            desired_steps(
                self._config, self._health.snapshot(), self._admin.state, self._clock.now()
            )
        )
        return prefix_sets(now.routes)

    def _given_up(self, name: str) -> frozenset[IPNetwork]:
        """The prefixes of service ``name`` to withdraw at once, if it no longer announces:
        those no other announcing service shares (policy.prefixes_given_up)."""
        return prefixes_given_up(
            self._config,
            name,
            self._health.snapshot(),
            self._admin.state,
            self._clock.now(),
            self._owners,
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
        observed = await self._applier.observe()
        nothing = Desired(dataplane=DataplaneState(), services={}, routes={})
        actions = plan(nothing, observed, {}).actions
        if actions:
            await self._applier.claim(actions)
        for action in actions:
            await self._best_effort(f"{type(action).__name__}", self._applier.apply_one(action))

    async def _best_effort(self, what: str, call: Awaitable[None]) -> None:
        """Await ``call`` (which bounds itself); log a failure instead of raising it."""
        try:
            await call
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log_event(
                log, "shutdown_step_failed", logging.ERROR, step=what, error=str(e) or repr(e)
            )
