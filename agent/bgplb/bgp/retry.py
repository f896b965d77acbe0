"""Refused commands (an ``error`` ack): bounded retries, then give up or escalate.

ExaBGP refuses an announce it cannot parse or send (e.g. ``next-hop self`` of the wrong
family) and a withdraw for a neighbor it does not know. Each (peer, prefix) gets
``max_retries`` re-sends. Then an announce is given up (held back from the diff until the
wanted route changes or ExaBGP restarts: re-sending it on every pass would loop forever),
while a withdraw escalates: ExaBGP may still announce a route we want gone, and only a
restart (a fresh ExaBGP holds nothing) is sure to remove it.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..model import PeerKey, Route


class RetryBook:
    def __init__(self, max_retries: int = 3) -> None:
        self.max_retries = max_retries
        self._failures: dict[tuple[PeerKey, object], int] = {}
        self._given_up: dict[PeerKey, frozenset[Route]] = {}

    def refused(self, peer: PeerKey, route: Route) -> bool:
        """Count one refusal; True while a retry is still allowed."""
        key = (peer, route.prefix)
        self._failures[key] = self._failures.get(key, 0) + 1
        return self._failures[key] <= self.max_retries

    def accepted(self, peer: PeerKey, route: Route) -> None:
        self._failures.pop((peer, route.prefix), None)

    def give_up(self, peer: PeerKey, route: Route) -> None:
        self._given_up[peer] = self._given_up.get(peer, frozenset()) | {route}
        self._failures.pop((peer, route.prefix), None)

    def held_back(self, peer: PeerKey) -> frozenset[Route]:
        return self._given_up.get(peer, frozenset())

    def follow(self, wanted: Mapping[PeerKey, frozenset[Route]]) -> None:
        """Forget given-up announces that are no longer wanted as they were."""
        for peer, routes in list(self._given_up.items()):
            keep = routes & wanted.get(peer, frozenset())
            if keep:
                self._given_up[peer] = keep
            else:
                del self._given_up[peer]

    def reset(self) -> None:
        """A fresh ExaBGP: everything gets a fresh chance."""
        self._failures.clear()
        self._given_up.clear()
