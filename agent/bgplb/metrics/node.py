"""The agent's metrics object: node-wide families (prometheus_client) plus the per-service ones.

:class:`Metrics` owns one registry. The node-wide families (speaker, reconcile, reload, build,
sessions per peer) are prometheus_client metrics defined here; the per-service families are
defined in ``services.py`` (inherited), the IPVS ones in ``ipvs.py``.

``/metrics`` is rendered in a worker thread (~15-20 ms at 1,000 services) while the event loop
keeps updating the metrics. So the handler takes a :class:`Scrape` on the loop
(:meth:`Metrics.snapshot`, ~1 ms: copies of the per-service dicts and the current IPVS
observation) and the thread renders only that and the prometheus_client families, which
guard their own values with locks. :meth:`Metrics.exposition` does both on the caller's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest
from prometheus_client.registry import Collector

from .. import __version__
from ..bfd.base import BfdSession
from ..exposition import FastSnapshot
from ..logs import bad_requests_seen
from ..model import ObservedDataplane, PeerKey, PeerState, PeerStatus, RouteSet
from .bfd import BfdMetrics
from .ipvs import DataplaneSource, IPVSCollector, VipServices
from .ipvs import render as render_ipvs
from .legacy import LegacyConfig, LegacyPathGauge
from .services import ConfigLike, ServiceMetrics

if TYPE_CHECKING:  # types only: metrics must not pull the core in at import time
    from ..admin import AdminState
    from ..reconciler import PassResult

RECONCILE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# fine around the 5 ms goal (p99 <= 5 ms: the share of ticks above the 0.005 bucket <= 1 %)
LOOP_LAG_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class SpeakerLike(Protocol):
    def restarts(self) -> int: ...


class FileHealthLike(Protocol):
    """``statefile.FileHealth``."""

    @property
    def problem(self) -> str | None: ...

    @property
    def errors(self) -> int: ...


class KnobLike(Protocol):
    """``knobkeeper.KnobState``."""

    @property
    def knob(self) -> str: ...

    @property
    def ok(self) -> bool: ...


class Metrics(ServiceMetrics):
    """The agent's metrics. ``registry`` is private to this object unless one is passed in."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        dataplane: DataplaneSource | None = None,
        per_real_server: bool = True,
        exabgp_version: str = "",
        image_version: str = "",
        legacy_path_gauge: bool = False,
        bad_requests: Callable[[], int] = bad_requests_seen,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        super().__init__(per_real_server)
        r = self._base = CollectorRegistry()  # the families prometheus_client renders
        fast = self.fast
        self.node_drained = Gauge(
            "bgplb_node_drained", "1 while the operator has drained the whole node.", registry=r
        )
        self.session_up = Gauge(
            "bgplb_bgp_session_up",
            "1 while the BGP session with the peer is established.",
            ["peer"],
            registry=r,
        )
        self.session_transitions = Counter(
            "bgplb_bgp_session_transitions",
            "BGP session state changes seen per peer.",
            ["peer"],
            registry=r,
        )
        self.bfd = BfdMetrics(r)
        self.speaker_commands_total = Counter(
            "bgplb_speaker_commands", "Commands written to the BGP speaker.", registry=r
        )
        self.speaker_restarts = Counter(
            "bgplb_speaker_restarts", "Restarts of the BGP speaker process.", registry=r
        )
        # ExaBGP supervision (bgp/base.py Supervision), followed by set_speaker
        self.speaker_restarts_by_reason = Counter(
            "bgplb_speaker_restarts_by_reason",
            "Restarts of the BGP speaker process by reason (bgp/supervisor.py REASONS).",
            ["reason"],
            registry=r,
        )
        self.speaker_ack_timeouts = Counter(
            "bgplb_speaker_ack_timeouts",
            "Times the speaker missed its ack deadline or a heartbeat (it was restarted).",
            registry=r,
        )
        self.speaker_command_retries = Counter(
            "bgplb_speaker_command_retries", "Refused speaker commands sent again.", registry=r
        )
        self.speaker_commands_refused = Counter(
            "bgplb_speaker_commands_refused",
            "Speaker commands answered with an error.",
            registry=r,
        )
        self._supervision_seen: dict[str, int] = {}
        self.reconcile_duration = Histogram(
            "bgplb_reconcile_duration_seconds",
            "Duration of a reconcile pass.",
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.reconcile_errors = Counter(
            "bgplb_reconcile_errors", "Errors met during reconcile passes.", registry=r
        )
        self.reconcile_runs = Counter("bgplb_reconcile_runs", "Reconcile passes run.", registry=r)
        # Read at scrape time, from whichever thread renders: all_tasks(loop) copes with the
        # task set changing while it copies it. The loop is the one set_observed_source ran on.
        self.event_loop: asyncio.AbstractEventLoop | None = None
        self.asyncio_tasks = Gauge(
            "bgplb_asyncio_tasks", "Asyncio tasks not done on the agent's event loop.", registry=r
        )
        self.asyncio_tasks.set_function(
            lambda: float(len(asyncio.all_tasks(self.event_loop))) if self.event_loop else 0.0
        )
        self.reload_success = Gauge(
            "bgplb_config_reload_success", "1 if the last config (re)load succeeded.", registry=r
        )
        self.reload_timestamp = Gauge(
            "bgplb_config_reload_timestamp_seconds",
            "Wall-clock time of the last config (re)load attempt.",
            registry=r,
        )
        self.loop_lag = Histogram(
            "bgplb_event_loop_lag_seconds",
            "How late a callback due every 10 ms ran on the agent's event loop.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.build_info = Gauge(
            "bgplb_build_info",
            "Always 1; labels carry the agent, Python, ExaBGP and appliance image versions "
            "(image_version: IMAGE_VERSION in /etc/os-release, empty off the image).",
            ["version", "python", "exabgp", "image_version"],
            registry=r,
        )
        self.build_info.labels(
            __version__, platform.python_version(), exabgp_version, image_version
        ).set(1)
        self.legacy = LegacyPathGauge(r) if legacy_path_gauge else None  # the Go tool's gauge
        self.state_file_ok = Gauge(
            "bgplb_state_file_ok",
            "1 while the state file is as it should be; 0 while it needs an operator.",
            ["file"],
            registry=r,
        )
        self.state_file_errors = Counter(
            "bgplb_state_file_errors",
            "Bad reads (set aside, rebuilt) and failed writes of the state file.",
            ["file"],
            registry=r,
        )
        self._state_file_errors_seen: dict[str, int] = {}
        self.kernel_knob_ok = Gauge(
            "bgplb_kernel_knob_ok",
            "1 while the kernel knob (a sysctl, the IPVS timeouts, a sync daemon) holds the "
            "value the config wants; 0 while it does not or cannot be read.",
            ["knob"],
            registry=r,
        )
        self.kernel_knob_errors = Counter(
            "bgplb_kernel_knob_errors",
            "Failed reads and writes of the kernel knob.",
            ["knob"],
            registry=r,
        )
        self._knob_errors_seen: dict[str, int] = {}
        self._knobs_shown: set[str] = set()
        self.sync_daemon_up = Gauge(
            "bgplb_connection_sync_daemon_up",
            "1 while the configured IPVS sync daemon of the role runs with the configured "
            "parameters (node.connection_sync).",
            ["role"],
            registry=r,
        )
        self._roles_shown: set[str] = set()
        self.http_bad_requests = FunctionCounter(
            "bgplb_http_bad_requests",
            "HTTP requests the API could not parse (answered 4xx), logged or not.",
            bad_requests,
        )
        r.register(self.http_bad_requests)
        self.ipvs = IPVSCollector(dataplane, per_real_server)
        self.registry.register(self._base)
        self.registry.register(self.ipvs)
        self.registry.register(fast)
        self._peer_up: dict[PeerKey, bool] = {}
        self._speaker_restarts_seen = 0

    # ------------------------------------------------------------------ sources

    def snapshot(self) -> Scrape:
        """What a scrape renders, taken on the thread that updates the metrics (the loop)."""
        return Scrape(
            self._base,
            self.ipvs,
            self.ipvs.observed(),
            self.fast.snapshot(),
            self.ipvs.vip_services,
        )

    def exposition(self, openmetrics: bool = False) -> bytes:
        """The ``/metrics`` body now (snapshot and render on this thread)."""
        return self.snapshot().render(openmetrics)

    def set_observed_source(self, source: DataplaneSource | None) -> None:
        """Where the IPVS collector reads counters at scrape time (the last observation)."""
        self.ipvs.source = source
        with contextlib.suppress(RuntimeError):  # called on the agent's loop (Agent.start)
            self.event_loop = asyncio.get_running_loop()

    def set_vip_services(self, vips: VipServices) -> None:
        """Which virtual services carry each service VIP (``traffic.vip_services``): the
        per-VIP inbound rate sums their counters. Call at start and after each reload."""
        self.ipvs.vip_services = dict(vips)

    def set_drained(self, admin: AdminState, config: ConfigLike) -> None:
        """Operator drains: per configured service, and the node-wide flag."""
        self.set_services_drained(admin, config)
        self.node_drained.set(1 if admin.node_drained_at is not None else 0)

    # ------------------------------------------------------------------ BGP

    def set_path_advertisement(self, config: LegacyConfig, advertised: RouteSet) -> None:
        """The Go bgp-lb's ``bgp_lb_path_advertisement`` (only when it is exported)."""
        if self.legacy is not None:
            self.legacy.set(config, advertised)

    def set_peers(self, peers: Mapping[PeerKey, PeerStatus]) -> None:
        """Session state per peer; counts up/down transitions; forgets removed peers."""
        for key, status in peers.items():
            up = status.state is PeerState.UP
            before = self._peer_up.get(key)
            if before is not None and before != up:
                self.session_transitions.labels(key).inc()
            elif before is None:
                self.session_transitions.labels(key).inc(0)
            self.session_up.labels(key).set(1 if up else 0)
            self._peer_up[key] = up
        for gone in self._peer_up.keys() - peers.keys():
            _discard(self.session_up, (gone,))
            _discard(self.session_transitions, (gone,))
            del self._peer_up[gone]

    def set_bfd(self, sessions: Mapping[PeerKey, BfdSession], restarts: int) -> None:
        self.bfd.set_sessions(sessions, restarts)

    def speaker_commands(self, n: int = 1) -> None:
        if n > 0:
            self.speaker_commands_total.inc(n)

    def speaker_restarted(self, n: int = 1) -> None:
        if n > 0:
            self.speaker_restarts.inc(n)

    def set_speaker(self, speaker: SpeakerLike) -> None:
        """Follow the speaker's own restart count (counts only the increase)."""
        total = speaker.restarts()
        self.speaker_restarted(total - self._speaker_restarts_seen)
        self._speaker_restarts_seen = max(total, self._speaker_restarts_seen)
        supervision = getattr(speaker, "supervision", None)
        if supervision is None:
            return
        sup = supervision()
        followed = [
            (f"reason:{k}", v, self.speaker_restarts_by_reason.labels(k))
            for k, v in sup.restart_reasons.items()
        ]
        followed += [
            ("ack_timeouts", sup.ack_timeouts, self.speaker_ack_timeouts),
            ("command_retries", sup.command_retries, self.speaker_command_retries),
            ("commands_refused", sup.commands_refused, self.speaker_commands_refused),
        ]
        for key, total, counter in followed:  # counters follow the speaker's own totals
            seen = self._supervision_seen.get(key, 0)
            counter.inc(max(total - seen, 0))
            self._supervision_seen[key] = max(total, seen)

    # ------------------------------------------------------------------ agent

    def reconcile_pass(self, result: PassResult) -> None:
        """One reconcile pass ended (``reconciler.PassResult``)."""
        self.reconcile_runs.inc()
        self.reconcile_duration.observe(max(0.0, result.duration))
        if result.errors:
            self.reconcile_errors.inc(len(result.errors))

    def event_loop_lag(self, seconds: float) -> None:
        """One tick of the loop lag monitor (``looplag.LoopLagMonitor``) ran this late."""
        self.loop_lag.observe(max(0.0, seconds))

    def config_reloaded(self, ok: bool, timestamp: float) -> None:
        self.reload_success.set(1 if ok else 0)
        self.reload_timestamp.set(timestamp)

    def set_state_files(self, files: Mapping[str, FileHealthLike]) -> None:
        """``statefile.FileHealth`` per file: ok while no problem; errors counted as they grow."""
        for name, health in files.items():
            self.state_file_ok.labels(name).set(0 if health.problem else 1)
            seen = self._state_file_errors_seen.get(name, 0)
            self.state_file_errors.labels(name).inc(max(0, health.errors - seen))
            self._state_file_errors_seen[name] = max(seen, health.errors)

    def set_knobs(
        self, states: Sequence[KnobLike], errors: Mapping[str, int], daemons: Mapping[str, bool]
    ) -> None:
        """``knobkeeper.KnobKeeper``: its states, error counts and sync daemons."""
        shown = {s.knob for s in states}
        for knob in self._knobs_shown - shown:  # no longer wanted
            _discard(self.kernel_knob_ok, (knob,))
        for state in states:
            self.kernel_knob_ok.labels(state.knob).set(1 if state.ok else 0)
        self._knobs_shown = shown
        for knob, n in errors.items():
            seen = self._knob_errors_seen.get(knob, 0)
            self.kernel_knob_errors.labels(knob).inc(max(0, n - seen))
            self._knob_errors_seen[knob] = max(seen, n)
        for role in self._roles_shown - set(daemons):
            _discard(self.sync_daemon_up, (role,))
        for role, up in daemons.items():
            self.sync_daemon_up.labels(role).set(1 if up else 0)
        self._roles_shown = set(daemons)


class Scrape:
    """One scrape's data: render it on any thread (it reads no mutable agent state)."""

    def __init__(
        self,
        base: CollectorRegistry,
        ipvs: IPVSCollector,
        observed: ObservedDataplane | None,
        fast: FastSnapshot,
        vips: VipServices | None = None,
    ) -> None:
        self.base, self.ipvs, self.observed, self.fast = base, ipvs, observed, fast
        self.vips: VipServices = vips or {}

    def render(self, openmetrics: bool = False) -> bytes:
        """The ``/metrics`` body: the Prometheus text format, or OpenMetrics 1.0."""
        ipvs = render_ipvs(self.observed, self.ipvs.per_real_server, openmetrics, self.vips)
        if not openmetrics:
            return generate_latest(self.base) + (ipvs + self.fast.render()).encode()
        head = bytes(om_generate_latest(self.base)).removesuffix(b"# EOF\n")  # type: ignore[no-untyped-call]
        return head + (ipvs + self.fast.render(openmetrics=True)).encode() + b"# EOF\n"


class FunctionCounter(Collector):
    """A counter whose total is read at scrape time from ``read`` (kept elsewhere, e.g. by
    the logging filter that sees aiohttp's bad requests: ``logs.bad_requests_seen``)."""

    def __init__(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        self.name, self.documentation, self.read = name, documentation, read

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.read())


def _discard(metric: Gauge | Counter | Histogram, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
