"""Pure: routes held back from a peer whose BFD session is not Up.

A peer with ``bfd`` set gets no route until its session is Up: the router ties the BGP
session to BFD, and announcing over a session nothing protects yet would bring back the
hold-timer failover BFD is there to avoid. The reason shows per peer in the status.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..config import Config
from ..model import PeerKey, RouteSet
from ..routeset import freeze_routes
from .base import BfdSession, BfdState

BFD_NOT_UP = "bfd_not_up"


def held_peers(config: Config, sessions: Mapping[PeerKey, BfdSession]) -> dict[PeerKey, str]:
    """peer -> why its routes are held (``bfd_not_up: <state>``), for peers with bfd set."""
    held = {}
    for p in config.peers:
        if p.bfd is None:
            continue
        s = sessions.get(p.key)
        if s is None or s.state is not BfdState.UP:
            state = s.state if s is not None else BfdState.UNKNOWN
            detail = f": {s.detail}" if s is not None and s.detail else ""
            held[p.key] = f"{BFD_NOT_UP}: bfd session {state}{detail}"
    return held


def hold_routes(routes: RouteSet, held: Mapping[PeerKey, str]) -> RouteSet:
    """``routes`` without the held peers' sets (canonical form)."""
    return freeze_routes({peer: rs for peer, rs in routes.items() if peer not in held})
