"""The Go bgp-lb's one metric, for alerts written against it (docs/migrating-from-bgp-lb.md).

``bgp_lb_path_advertisement{prefix,prefix_length,next_hop}``: 1 while the VIP is announced
(the speaker holds its route for at least one peer), else 0; one series per configured VIP,
``next_hop`` the router id as in the Go tool. Exported when the agent runs from the Go command
line (gocompat); the name does not follow ``bgplb_*`` on purpose."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge

from ..model import IPAddress, RouteSet

Labels = tuple[str, str, str]


class _Node(Protocol):
    @property
    def router_id(self) -> object: ...


class _Service(Protocol):
    @property
    def vips(self) -> Iterable[IPAddress]: ...


class LegacyConfig(Protocol):
    @property
    def node(self) -> _Node: ...
    @property
    def services(self) -> Iterable[_Service]: ...


class LegacyPathGauge:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.gauge = Gauge(
            "bgp_lb_path_advertisement",
            "Info about whether a path is advertised via the bgp daemon. It can be 0 or 1.",
            ["prefix", "prefix_length", "next_hop"],
            registry=registry,
        )
        self._series: set[Labels] = set()

    def set(self, config: LegacyConfig, advertised: RouteSet) -> None:
        announced = {r.prefix for routes in advertised.values() for r in routes}
        next_hop = str(config.node.router_id)
        series: set[Labels] = set()
        for svc in config.services:
            for vip in svc.vips:
                labels = (str(vip), str(vip.max_prefixlen), next_hop)
                series.add(labels)
                up = any(
                    p.network_address == vip and p.prefixlen == vip.max_prefixlen for p in announced
                )
                self.gauge.labels(*labels).set(1 if up else 0)
        for gone in self._series - series:
            self.gauge.remove(*gone)
        self._series = series
