"""Prometheus metrics: one registry, ``bgplb_*`` names, base units, update methods for agent.py.

Labels only ever carry bounded values (service / check / peer names from the config, enum
values); free text such as check errors never becomes a label. IPVS statistics are read at
scrape time from a callback returning the last :class:`ObservedDataplane`.

The families with a series per service, check or peer are ``exposition`` families (dicts,
rendered by our own code): prometheus_client's rendering took ~1 s per scrape at 1,000
services. ``exposition()`` is what ``/metrics`` serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest
from prometheus_client.registry import Collector

from . import __version__, exposition
from .model import (
    CheckStatus,
    Decision,
    IPVSCounters,
    ObservedDataplane,
    PeerKey,
    PeerState,
    PeerStatus,
    Reason,
    RouteSet,
)

if TYPE_CHECKING:  # types only: metrics must not pull the core in at import time
    from .admin import AdminState
    from .health.tracker import CheckKey, CheckResult, CheckState
    from .policy import ServiceDecision
    from .reconciler import PassResult

CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RECONCILE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class NamedLike(Protocol):
    @property
    def name(self) -> str: ...


class ConfigLike(Protocol):
    """``config.Config`` (only the service names are read)."""

    @property
    def services(self) -> Sequence[NamedLike]: ...


class SpeakerLike(Protocol):
    def restarts(self) -> int: ...


DataplaneSource = Callable[[], ObservedDataplane | None]


def _by_text(item: tuple[object, object]) -> str:
    """Sort key for mixed IPv4/IPv6 keys (ipaddress refuses to compare across versions)."""
    return str(item[0])


def _target_label(target: str | None) -> str:
    return target if target is not None else ""


class IPVSCollector(Collector):
    """Kernel IPVS statistics, read from ``source()`` when Prometheus scrapes."""

    def __init__(self, source: DataplaneSource | None, per_real_server: bool) -> None:
        self.source = source
        self.per_real_server = per_real_server

    def describe(self) -> Iterable[Metric]:
        return []  # dynamic: no name clash checks needed at registration

    def collect(self) -> Iterable[Metric]:
        observed = self.source() if self.source is not None else None
        if observed is None:
            return []
        vs_labels = ["vip", "port", "protocol"]
        out = list(
            _families(
                "bgplb_ipvs",
                "virtual service",
                vs_labels,
                (
                    ([str(k.vip), str(k.port), str(k.protocol)], c)
                    for k, c in sorted(observed.service_counters.items(), key=_by_text)
                ),
            )
        )
        if self.per_real_server:
            rs = (
                ([str(k.service.vip), str(k.service.port), str(k.service.protocol), str(k)], c)
                for k, c in sorted(observed.real_server_counters.items(), key=_by_text)
            )
            out += _families(
                "bgplb_ipvs_real_server", "real server", [*vs_labels, "real_server"], rs
            )
        return out


def _families(
    prefix: str,
    what: str,
    labels: list[str],
    rows: Iterable[tuple[list[str], IPVSCounters]],
) -> Iterator[Metric]:
    active = GaugeMetricFamily(
        f"{prefix}_active_connections", f"IPVS active connections per {what}.", labels=labels
    )
    inactive = GaugeMetricFamily(
        f"{prefix}_inactive_connections", f"IPVS inactive connections per {what}.", labels=labels
    )
    conns = CounterMetricFamily(
        f"{prefix}_connections", f"IPVS connections scheduled per {what}.", labels=labels
    )
    dir_labels = [*labels, "direction"]
    packets = CounterMetricFamily(
        f"{prefix}_packets", f"IPVS packets per {what} and direction.", labels=dir_labels
    )
    octets = CounterMetricFamily(
        f"{prefix}_bytes", f"IPVS bytes per {what} and direction.", labels=dir_labels
    )
    for values, c in rows:
        active.add_metric(values, c.active_connections)
        inactive.add_metric(values, c.inactive_connections)
        conns.add_metric(values, c.connections)
        packets.add_metric([*values, "in"], c.packets_in)
        packets.add_metric([*values, "out"], c.packets_out)
        octets.add_metric([*values, "in"], c.bytes_in)
        octets.add_metric([*values, "out"], c.bytes_out)
    yield from (active, inactive, conns, packets, octets)


class Metrics:
    """The agent's metrics. ``registry`` is private to this object unless one is passed in."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        dataplane: DataplaneSource | None = None,
        per_real_server: bool = True,
        exabgp_version: str = "",
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.per_real_server = per_real_server
        r = self._base = CollectorRegistry()  # the families prometheus_client renders
        fast = self.fast = exposition.FastCollector()  # per service/check: rendered by us
        svc_check = ["service", "target", "check"]
        self.check_up = fast.add(
            exposition.Gauge(
                "bgplb_check_up", "1 while the check's tracker status is up.", svc_check
            )
        )
        self.check_result = fast.add(
            exposition.Counter(
                "bgplb_check_result_total", "Health check probe results.", [*svc_check, "result"]
            )
        )
        self.check_duration = fast.add(
            exposition.Histogram(
                "bgplb_check_duration_seconds",
                "Health check probe duration.",
                ["service", "check"],
                CHECK_BUCKETS,
            )
        )
        self.service_healthy = fast.add(
            exposition.Gauge(
                "bgplb_service_healthy", "1 while the service's checks pass.", ["service"]
            )
        )
        self.service_decision = fast.add(
            exposition.StateSet(
                "bgplb_service_decision",
                "1 for the service's current route decision, 0 for the others.",
                ["service", "decision"],
                [d.value for d in Decision],
            )
        )
        self.service_reason = fast.add(
            exposition.StateSet(
                "bgplb_service_reason",
                "1 for the reason of the service's current decision, 0 for the others.",
                ["service", "reason"],
                [x.value for x in Reason],
            )
        )
        self.admin_drained = fast.add(
            exposition.Gauge(
                "bgplb_admin_drained", "1 while the operator has drained the service.", ["service"]
            )
        )
        self.node_drained = Gauge(
            "bgplb_node_drained", "1 while the operator has drained the whole node.", registry=r
        )
        self.real_server_healthy = fast.add(
            exposition.Gauge(
                "bgplb_real_server_healthy",
                "1 while all checks of the real server pass.",
                ["service", "real_server"],
            )
        )
        self.routes_advertised = fast.add(
            exposition.Gauge(
                "bgplb_routes_advertised",
                "Routes the speaker has announced to the peer for the service.",
                ["service", "peer"],
            )
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
        self.speaker_commands_total = Counter(
            "bgplb_speaker_commands", "Commands written to the BGP speaker.", registry=r
        )
        self.speaker_restarts = Counter(
            "bgplb_speaker_restarts", "Restarts of the BGP speaker process.", registry=r
        )
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
        self.build_info = Gauge(
            "bgplb_build_info",
            "Always 1; labels carry the agent, Python and ExaBGP versions.",
            ["version", "python", "exabgp"],
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version(), exabgp_version).set(1)
        self.ipvs = IPVSCollector(dataplane, per_real_server)
        r.register(self.ipvs)
        self.registry.register(self._base)
        self.registry.register(fast)
        self._checks: set[tuple[str, str, str]] = set()
        self._services: set[str] = set()
        self._real_servers: set[tuple[str, str]] = set()
        self._route_series: set[tuple[str, str]] = set()
        self._peer_up: dict[PeerKey, bool] = {}
        self._speaker_restarts_seen = 0

    # ------------------------------------------------------------------ sources

    def exposition(self, openmetrics: bool = False) -> bytes:
        """The ``/metrics`` body: the Prometheus text format, or OpenMetrics 1.0."""
        if openmetrics:
            head = bytes(om_generate_latest(self._base)).removesuffix(b"# EOF\n")  # type: ignore[no-untyped-call]
            return head + self.fast.render(openmetrics=True).encode() + b"# EOF\n"
        return generate_latest(self._base) + self.fast.render().encode()

    def set_observed_source(self, source: DataplaneSource | None) -> None:
        """Where the IPVS collector reads counters at scrape time (the last observation)."""
        self.ipvs.source = source
        with contextlib.suppress(RuntimeError):  # called on the agent's loop (Agent.start)
            self.event_loop = asyncio.get_running_loop()

    # ------------------------------------------------------------------ health

    def record_check(self, key: CheckKey, result: CheckResult, state: CheckState) -> None:
        """One probe finished: count it, time it, and set the tracker status."""
        target = _target_label(key.target)
        outcome = "success" if result.ok else "failure"
        self.check_result.inc((key.service, target, key.check, outcome))
        self.check_duration.observe((key.service, key.check), max(0.0, result.latency))
        self._set_check_up(key, state)

    def set_check_states(self, states: Mapping[CheckKey, CheckState]) -> None:
        """The whole health snapshot: sets ``check_up`` and ``real_server_healthy`` and
        removes the series of checks that are gone."""
        seen: set[tuple[str, str, str]] = set()
        rs_ok: dict[tuple[str, str], bool] = {}
        for key, state in states.items():
            seen.add(self._set_check_up(key, state))
            if key.target is not None:
                rs = (key.service, key.target)
                rs_ok[rs] = rs_ok.get(rs, True) and state.status is CheckStatus.UP
        gone_checks, self._checks = self._checks - seen, seen
        for gone in gone_checks:
            self._remove_check(gone)
        if self.per_real_server:
            for rs, ok in rs_ok.items():
                self.real_server_healthy.set(rs, 1 if ok else 0)
            for rs in self._real_servers - rs_ok.keys():
                self.real_server_healthy.remove(rs)
            self._real_servers = set(rs_ok)

    def _set_check_up(self, key: CheckKey, state: CheckState) -> tuple[str, str, str]:
        labels = (key.service, _target_label(key.target), key.check)
        self.check_up.set(labels, 1 if state.status is CheckStatus.UP else 0)
        self._checks.add(labels)
        return labels

    def _remove_check(self, labels: tuple[str, str, str]) -> None:
        self.check_up.remove(labels)
        for outcome in ("success", "failure"):
            self.check_result.remove((*labels, outcome))
        if not any(c[0] == labels[0] and c[2] == labels[2] for c in self._checks):
            self.check_duration.remove((labels[0], labels[2]))

    # ------------------------------------------------------------------ services

    def set_decisions(
        self,
        decisions: Mapping[str, ServiceDecision],
        healthy: Mapping[str, bool] | None = None,
    ) -> None:
        """Every configured service's decision. Services missing here are forgotten.

        ``healthy`` overrides ``bgplb_service_healthy`` (default: reason is ``healthy``)."""
        for name, d in decisions.items():
            self.service_decision.set((name,), d.decision.value)
            self.service_reason.set((name,), d.reason.value)
            ok = healthy[name] if healthy and name in healthy else d.reason is Reason.HEALTHY
            self.service_healthy.set((name,), 1 if ok else 0)
        for gone in self._services - decisions.keys():
            self.forget_service(gone)
        self._services = set(decisions)

    def set_drained(self, admin: AdminState, config: ConfigLike) -> None:
        """Operator drains: per configured service, and the node-wide flag."""
        for svc in config.services:
            self.admin_drained.set((svc.name,), 1 if svc.name in admin.drained else 0)
        self.node_drained.set(1 if admin.node_drained_at is not None else 0)

    def forget_service(self, name: str) -> None:
        """Remove every series labelled with a service that left the config."""
        self.service_decision.remove((name,))
        self.service_reason.remove((name,))
        self.service_healthy.remove((name,))
        self.admin_drained.remove((name,))
        for check in [c for c in self._checks if c[0] == name]:
            self._checks.discard(check)
            self._remove_check(check)
        for rs in [r for r in self._real_servers if r[0] == name]:
            self._real_servers.discard(rs)
            self.real_server_healthy.remove(rs)
        for series in [s for s in self._route_series if s[0] == name]:
            self._route_series.discard(series)
            self.routes_advertised.remove(series)
        self._services.discard(name)

    # ------------------------------------------------------------------ BGP

    def set_routes(self, routes: RouteSet) -> None:
        """What the speaker advertised, per peer. Known services with no route show 0."""
        counts: dict[tuple[str, str], int] = {}
        for peer, peer_routes in routes.items():
            for name in self._services:
                counts[(name, peer)] = 0
            for route in peer_routes:
                if route.service:
                    counts[(route.service, peer)] = counts.get((route.service, peer), 0) + 1
        for series, n in counts.items():
            self.routes_advertised.set(series, n)
        for gone in self._route_series - counts.keys():
            self.routes_advertised.remove(gone)
        self._route_series = set(counts)

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

    # ------------------------------------------------------------------ agent

    def reconcile_pass(self, result: PassResult) -> None:
        """One reconcile pass ended (``reconciler.PassResult``)."""
        self.reconcile_runs.inc()
        self.reconcile_duration.observe(max(0.0, result.duration))
        if result.errors:
            self.reconcile_errors.inc(len(result.errors))

    def config_reloaded(self, ok: bool, timestamp: float) -> None:
        self.reload_success.set(1 if ok else 0)
        self.reload_timestamp.set(timestamp)


def _discard(metric: Gauge | Counter | Histogram, labels: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)
