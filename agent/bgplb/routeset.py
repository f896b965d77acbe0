"""Route sets (``RouteSet``: peer -> frozenset of routes): the canonical form and the few
operations the policy, the planner and the reconciler share. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from .model import IPNetwork, PeerKey, Route, RouteSet


def freeze_routes(routes: Mapping[PeerKey, Iterable[Route]]) -> RouteSet:
    """The canonical form of a route set: frozensets, peers with no routes left out."""
    out = {peer: frozenset(rs) for peer, rs in routes.items()}
    return {peer: rs for peer, rs in sorted(out.items()) if rs}


def same_routes(a: RouteSet, b: RouteSet) -> bool:
    """Equal as route sets (a peer with an empty set is the same as a missing peer)."""
    return freeze_routes(a) == freeze_routes(b)


def kept_routes(routes: RouteSet, keep: Callable[[PeerKey, IPNetwork], bool]) -> RouteSet:
    """The routes whose (peer, prefix) ``keep`` accepts. Each peer's routes are filtered at
    once: a generator here would see the comprehension's *last* ``peer`` when consumed, and
    judge every peer's routes as that peer's (harmless while every peer had the same
    prefixes; with ``services[].peers`` it withdrew and re-announced a route every pass)."""
    return freeze_routes(
        {peer: [r for r in rs if keep(peer, r.prefix)] for peer, rs in routes.items()}
    )


def prefix_sets(routes: RouteSet) -> dict[PeerKey, set[IPNetwork]]:
    """The prefixes of each peer's routes."""
    return {peer: {r.prefix for r in rs} for peer, rs in routes.items()}


def prefix_texts(routes: RouteSet) -> set[str]:
    """Every prefix of the set, as text (for logs)."""
    return {str(r.prefix) for rs in routes.values() for r in rs}
