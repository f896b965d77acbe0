"""UCMP: the link-bandwidth community from this node's healthy capacity (docs/bgp.md, "UCMP").

Pure functions (capacity, the community's text) plus :class:`BandwidthHold`, the one piece of
state: the hold-down that keeps a flapping real server from sending an UPDATE per flap. The
reconciler owns the hold and hands ``desired_state`` the held capacities.

- Capacity of a VIP: with ``real_servers``, the sum of the weights of the healthy real servers of
  the VIP's address family; without (local backend, announce mode), ``capacity`` (default 1)
  while the service is healthy (the service checks decide that, as for any service).
- Quantized (config/bandwidth.py: 5 significant bits), then x ``unit`` bytes/s.
- Zero capacity withdraws the VIP: a bandwidth of 0 is weight 1 at FRR, not a drain.
- The community's AS field is 2 bytes: a 4-byte local AS is sent as AS_TRANS (23456).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from .config import Config, ServiceConfig
from .config.bandwidth import U32, quantize
from .health.targets import real_server_target
from .health.tracker import CheckKey, HealthSnapshot
from .model import CheckStatus, IPAddress, RouteAttributes

AS_TRANS = 23456  # RFC 6793
VipKey = tuple[str, IPAddress]  # (service, VIP)


def vip_capacity(svc: ServiceConfig, vip: IPAddress, health: HealthSnapshot) -> int:
    """The quantized healthy capacity of ``vip`` of ``svc`` (which has link_bandwidth)."""
    lb = svc.link_bandwidth
    if lb is None:
        return 0
    if not svc.real_servers:
        return quantize(lb.capacity or 1)
    total = 0
    for rs in svc.real_servers:
        if rs.address.version != vip.version:
            continue
        target = real_server_target(svc, rs)
        states = [health.get(CheckKey(svc.name, target, c.label)) for c in rs.checks]
        if all(s is not None and s.status is CheckStatus.UP for s in states):
            total += rs.weight
    return quantize(total)


def capacities(config: Config, health: HealthSnapshot) -> dict[VipKey, int]:
    """Every link_bandwidth VIP's quantized capacity now (before the hold-down)."""
    return {
        (svc.name, vip): vip_capacity(svc, vip, health)
        for svc in config.services
        if svc.link_bandwidth is not None
        for vip in svc.vips
    }


def bandwidth_bytes(svc: ServiceConfig, capacity: int) -> int:
    """Bytes/s announced for ``capacity`` (capped at what the community can carry)."""
    unit = svc.link_bandwidth.unit if svc.link_bandwidth is not None else 1
    return min(capacity * unit, U32)


def community_as(local_as: int) -> int:
    """The community's 2-byte AS field: our AS, or AS_TRANS for a 4-byte AS."""
    return local_as if local_as <= 0xFFFF else AS_TRANS


def bandwidth_community(local_as: int, bytes_per_second: int) -> str:
    """ExaBGP's named form: type 0x40 subtype 0x04, ``!Hf`` (AS, IEEE float32 bytes/s)."""
    return f"bandwidth:{community_as(local_as)}:{bytes_per_second}"


def with_bandwidth(attrs: RouteAttributes, community: str) -> RouteAttributes:
    return dataclasses.replace(attrs, extended_communities=(*attrs.extended_communities, community))


@dataclass(frozen=True)
class VipBandwidth:
    """One VIP's UCMP state after a pass (the status shows it)."""

    capacity: int  # healthy capacity at the pass (quantized), before the hold-down
    held: int  # the capacity announced (after the hold-down; 0: the VIP is withdrawn)
    due: float | None  # clock time a held-down change is applied; None: nothing waits


@dataclass(frozen=True)
class Held:
    value: int
    since: float  # when ``value`` was taken (the hold-down runs from here)


class BandwidthHold:
    """The hold-down: a changed capacity is taken at once unless the VIP's last change is
    younger than its service's ``hold_down``; then it waits until that has passed (and the
    value taken is the one wanted *then*). Zero (withdraw) and the way back from zero, and a
    VIP's first value, never wait: withdrawing a VIP with no healthy backend must not lag."""

    def __init__(self) -> None:
        self._held: dict[VipKey, Held] = {}
        self.next_change: float | None = None  # when a waiting change is due
        self.vips: dict[VipKey, VipBandwidth] = {}  # per VIP after the last update

    def update(self, config: Config, wanted: Mapping[VipKey, int], now: float) -> dict[VipKey, int]:
        holds = {
            s.name: s.link_bandwidth.hold_down
            for s in config.services
            if s.link_bandwidth is not None
        }
        held: dict[VipKey, Held] = {}
        due: dict[VipKey, float] = {}
        for key, value in wanted.items():
            old = self._held.get(key)
            if old is None:  # the first value does not start a hold-down
                held[key] = Held(value, -math.inf)
            elif old.value == value:
                held[key] = old
            elif value == 0 or old.value == 0 or now - old.since >= holds.get(key[0], 0.0):
                held[key] = Held(value, now)
            else:
                held[key] = old
                due[key] = old.since + holds[key[0]]
        self._held = held
        self.next_change = min(due.values(), default=None)
        self.vips = {
            key: VipBandwidth(wanted[key], h.value, due.get(key)) for key, h in held.items()
        }
        return {key: h.value for key, h in held.items()}


def vip_communities(
    config: Config,
    svc: ServiceConfig,
    health: HealthSnapshot,
    capacities: Mapping[VipKey, int] | None = None,
) -> dict[IPAddress, str | None]:
    """Per VIP of ``svc``: its community, or None when it has no capacity (withdraw it);
    {} when ``svc`` has no link_bandwidth. ``capacities``: held values (else health now)."""
    if svc.link_bandwidth is None:
        return {}
    out: dict[IPAddress, str | None] = {}
    for vip in svc.vips:
        cap = capacities.get((svc.name, vip)) if capacities is not None else None
        if cap is None:
            cap = vip_capacity(svc, vip, health)
        rate = bandwidth_bytes(svc, cap)
        out[vip] = bandwidth_community(config.node.local_as, rate) if cap else None
    return out
