"""The families with a series per service, check, real server or (service, peer).

They are ``exposition`` families (dicts, rendered by our own code): prometheus_client's
rendering took ~1 s per scrape at 1,000 services. :class:`ServiceMetrics` defines them and
keeps them in step with the config (series of services, checks and real servers that left it
are removed); :class:`bgplb.metrics.Metrics` inherits it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from .. import exposition
from ..model import CheckStatus, Decision, Reason, RouteSet

if TYPE_CHECKING:  # types only: metrics must not pull the core in at import time
    from ..admin import AdminState
    from ..health.tracker import CheckKey, CheckResult, CheckState
    from ..policy import ServiceDecision
    from ..pool import PoolView

CHECK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class NamedLike(Protocol):
    @property
    def name(self) -> str: ...


class ConfigLike(Protocol):
    """``config.Config`` (only the service names are read)."""

    @property
    def services(self) -> Sequence[NamedLike]: ...


def _target_label(target: str | None) -> str:
    return target if target is not None else ""


class ServiceMetrics:
    """The per-service families, held by ``fast`` (an :class:`exposition.FastCollector`)."""

    def __init__(self, per_real_server: bool) -> None:
        self.per_real_server = per_real_server
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
        self.check_watch_lost = fast.add(
            exposition.Counter(
                "bgplb_check_watch_lost_total",
                "Watched connections (watch_connection) the target dropped; action: whether "
                "that probed at once or was skipped (a probe running, or one an interval ago).",
                [*svc_check, "action"],
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
        self.link_bandwidth = fast.add(
            exposition.Gauge(
                "bgplb_link_bandwidth_bytes_per_second",
                "link_bandwidth (UCMP): the link-bandwidth community's value the node advertises "
                "for the VIP, in bytes/s (the largest over its peers); absent while the VIP is "
                "not advertised or carries none.",
                ["service", "vip"],
            )
        )
        pool = ["service", "vip", "port", "protocol"]
        self.ipvs_table_order_ok = fast.add(
            exposition.SparseGauge(
                "bgplb_ipvs_table_order_ok",
                "Pool mode: 1 while the kernel lists the virtual service's real servers in the "
                "config's order (the Maglev table's input), 0 if not.",
                pool,
            )
        )
        self.ipvs_table_fingerprint = fast.add(
            exposition.SparseGauge(
                "bgplb_ipvs_table_fingerprint_info",
                "Pool mode: 1, labelled with a hash of the Maglev table's inputs (real server "
                "order, intended weights, flags, scheduler, table size); equal on every node.",
                [*pool, "fingerprint"],
            )
        )
        self._pool_series: set[tuple[str, ...]] = set()
        self._checks: set[tuple[str, str, str]] = set()
        self._services: set[str] = set()
        self._real_servers: set[tuple[str, str]] = set()
        self._route_series: set[tuple[str, str]] = set()
        self._bandwidth_series: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ health

    def record_check(self, key: CheckKey, result: CheckResult, state: CheckState) -> None:
        """One probe finished: count it, time it, and set the tracker status."""
        target = _target_label(key.target)
        outcome = "success" if result.ok else "failure"
        self.check_result.inc((key.service, target, key.check, outcome))
        self.check_duration.observe((key.service, key.check), max(0.0, result.latency))
        self._set_check_up(key, state)

    def watch_lost(self, key: CheckKey, probed: bool) -> None:
        """A check's watched connection dropped (health runner ``on_watch_lost``)."""
        action = "probed" if probed else "skipped"
        self.check_watch_lost.inc((key.service, _target_label(key.target), key.check, action))

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
        for action in ("probed", "skipped"):
            self.check_watch_lost.remove((*labels, action))
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

    def set_services_drained(self, admin: AdminState, config: ConfigLike) -> None:
        """Operator drains per configured service (``Metrics.set_drained`` adds the node)."""
        for svc in config.services:
            self.admin_drained.set((svc.name,), 1 if svc.name in admin.drained else 0)

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
        for series in [s for s in self._bandwidth_series if s[0] == name]:
            self._bandwidth_series.discard(series)
            self.link_bandwidth.remove(series)
        kept = {s for s in self._pool_series if s[0] != name}
        self._drop_pool_series(self._pool_series - kept)
        self._pool_series = kept
        self._services.discard(name)

    def set_pool_tables(self, views: Sequence[PoolView]) -> None:
        """Pool-mode virtual services of the last pass (``pool.pool_views``): one series
        each; those of tables that left (or changed fingerprint) are removed."""
        seen: set[tuple[str, ...]] = set()
        for v in views:
            labels = (v.service, str(v.key.vip), str(v.key.port), str(v.key.protocol))
            self.ipvs_table_order_ok.set(labels, 1 if v.order_ok else 0)
            self.ipvs_table_fingerprint.set((*labels, v.fingerprint), 1)
            seen |= {labels, (*labels, v.fingerprint)}
        self._drop_pool_series(self._pool_series - seen)
        self._pool_series = seen

    def _drop_pool_series(self, series: set[tuple[str, ...]]) -> None:
        for gone in series:
            family = self.ipvs_table_order_ok if len(gone) == 4 else self.ipvs_table_fingerprint
            family.remove(gone)

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
        self._set_bandwidth(routes)

    def _set_bandwidth(self, routes: RouteSet) -> None:
        """``bgplb_link_bandwidth_bytes_per_second`` from what was advertised: the value the
        routers see, not what the agent wanted."""
        rates: dict[tuple[str, str], float] = {}
        for peer_routes in routes.values():
            for route in peer_routes:
                for text in route.attributes.extended_communities:
                    if route.service and text.startswith("bandwidth:"):
                        series = (route.service, str(route.prefix.network_address))
                        rate = float(text.rsplit(":", 1)[1])
                        rates[series] = max(rate, rates.get(series, 0.0))
        for series, rate in rates.items():
            self.link_bandwidth.set(series, rate)
        for gone in self._bandwidth_series - rates.keys():
            self.link_bandwidth.remove(gone)
        self._bandwidth_series = set(rates)
