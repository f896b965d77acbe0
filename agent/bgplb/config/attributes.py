"""Effective route attributes per service state and peer: explicit config, else the defaults.

Why these defaults (measured with ExaBGP 5.0.15 -> FRR 8.4, see docs/config.md):
- eBGP drain: GRACEFUL_SHUTDOWN (65535:0) plus an AS-path prepend (own AS x3, own AS first,
  because ExaBGP sends an explicit as-path as written). The prepend drains on any router
  without policy, also when the router runs ``bgp graceful-shutdown``; GSHUT drains FRR alone.
- iBGP drain: 65535:0 plus LOCAL_PREF 0 (a prepend of our own AS would be dropped as a loop).
- degraded (``on_down: announce_degraded``): eBGP prepend own AS x3 (no GSHUT: the path
  should still be usable as a last resort); iBGP LOCAL_PREF 50.
- LOCAL_PREF is never sent to eBGP peers and MED is not used by default (only comparable
  between paths from the same neighbour AS).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..model import PeerType, RouteAttributes
from .fields import GSHUT
from .schema import AttributesConfig, PeerConfig, ServiceConfig

ServiceState = Literal["healthy", "degraded", "draining"]

DRAIN_PREPEND = 3  # copies of our own AS in the drained AS path
DEGRADED_LOCAL_PREF = 50
DRAIN_LOCAL_PREF = 0


def default_attributes(state: ServiceState, peer_type: PeerType, local_as: int) -> RouteAttributes:
    """The built-in attributes for a state toward a peer type."""
    if state == "healthy":
        return RouteAttributes()
    ebgp = peer_type is PeerType.EBGP
    if state == "draining":
        if ebgp:
            return RouteAttributes(communities=(GSHUT,), as_path=(local_as,) * DRAIN_PREPEND)
        return RouteAttributes(communities=(GSHUT,), local_pref=DRAIN_LOCAL_PREF)
    if ebgp:
        return RouteAttributes(as_path=(local_as,) * DRAIN_PREPEND)
    return RouteAttributes(local_pref=DEGRADED_LOCAL_PREF)


def route_attributes(
    service: ServiceConfig, state: ServiceState, peer: PeerConfig, local_as: int
) -> RouteAttributes:
    """Attributes to announce ``service``'s VIPs with, in ``state``, to ``peer``.

    Explicit ``service.attributes.<state>`` wins as a whole (``healthy`` is always explicit:
    its default is empty). Attributes that cannot work toward this peer type are dropped
    (LOCAL_PREF toward eBGP, a prepend toward iBGP); :func:`check_config` rejects configs where
    that would happen, so this only matters for hand-built objects.
    """
    explicit: AttributesConfig | None = getattr(service.attributes, state)
    peer_type = peer.peer_type(local_as)
    if explicit is None:
        return default_attributes(state, peer_type, local_as)
    attrs = explicit.resolve(local_as)
    if peer_type is PeerType.EBGP and attrs.local_pref is not None:
        attrs = dataclasses.replace(attrs, local_pref=None)
    if peer_type is PeerType.IBGP and attrs.as_path:
        attrs = dataclasses.replace(attrs, as_path=())
    return attrs
