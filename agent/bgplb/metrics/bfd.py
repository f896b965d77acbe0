"""The BFD families (peers with ``peers[].bfd``): session up, state changes, daemon restarts.

State changes are the ones the agent saw: it polls bfdd every 1-5 s (bfd/frr.py), so a flap
shorter than that can go uncounted; the router's own counters are exact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..bfd.base import BfdSession, BfdState
from ..model import PeerKey


class BfdMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.session_up = Gauge(
            "bgplb_bfd_session_up",
            "1 while the BFD session protecting the BGP peer is Up (peers with bfd set).",
            ["peer"],
            registry=registry,
        )
        self.state_changes = Counter(
            "bgplb_bfd_session_state_changes",
            "BFD session state changes seen per peer, by the state entered.",
            ["peer", "state"],
            registry=registry,
        )
        self.daemon_restarts = Counter(
            "bgplb_bfd_daemon_restarts",
            "Restarts of bfdd or zebra after an exit the agent did not ask for.",
            registry=registry,
        )
        self._seen: dict[PeerKey, BfdState] = {}
        self._restarts = 0

    def set_sessions(self, sessions: Mapping[PeerKey, BfdSession], restarts: int) -> None:
        for key, s in sessions.items():
            before = self._seen.get(key)
            if before is None:
                for state in BfdState:  # every series exists from the start (rate() works)
                    self.state_changes.labels(key, str(state)).inc(0)
            elif before is not s.state:
                self.state_changes.labels(key, str(s.state)).inc()
            self.session_up.labels(key).set(1 if s.state is BfdState.UP else 0)
            self._seen[key] = s.state
        for gone in self._seen.keys() - sessions.keys():
            with contextlib.suppress(KeyError):
                self.session_up.remove(gone)
            for state in BfdState:
                with contextlib.suppress(KeyError):
                    self.state_changes.remove(gone, str(state))
            del self._seen[gone]
        if restarts > self._restarts:
            self.daemon_restarts.inc(restarts - self._restarts)
        self._restarts = max(self._restarts, restarts)
