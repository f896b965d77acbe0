"""Prometheus metrics: one registry, ``bgplb_*`` names, base units, update methods for agent.py.

Every metric the agent exposes is defined in this package, and nowhere else:

- ``node.py``: :class:`Metrics` (what the agent holds) and the node-wide families
  (prometheus_client: speaker, reconcile, reload, build info, BGP sessions per peer);
- ``services.py``: the families with a series per service, check, real server or
  (service, peer), kept in ``bgplb.exposition`` dicts and rendered by our own code;
- ``ipvs.py``: kernel IPVS statistics, read at scrape time from the last observation.

Labels only ever carry bounded values (service / check / peer names from the config, enum
values); free text such as check errors never becomes a label.
"""

from __future__ import annotations

from .ipvs import DataplaneSource, IPVSCollector
from .node import LOOP_LAG_BUCKETS, RECONCILE_BUCKETS, Metrics, SpeakerLike
from .services import CHECK_BUCKETS, ConfigLike, ServiceMetrics

__all__ = [
    "CHECK_BUCKETS",
    "LOOP_LAG_BUCKETS",
    "RECONCILE_BUCKETS",
    "ConfigLike",
    "DataplaneSource",
    "IPVSCollector",
    "Metrics",
    "ServiceMetrics",
    "SpeakerLike",
]
