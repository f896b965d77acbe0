"""A silent node death in the ECMP lab, and what the routers' BFD made of it (``make demo``).

:func:`freeze_node` cuts an LB node off without a sign (nftables drops everything it receives
on its links and everything it sends: no BGP NOTIFICATION, no TCP FIN or RST, no carrier
change; :func:`tests.lab.pool.freeze`), then times, per router, when the node's path left
that router's kernel FIB, and reads why the router reset the session (FRR 8.4's
``lastNotificationReason``: "Cease/BFD Down" when BFD caught it, "Hold Timer Expired/..."
when the hold timer did; its ``lastResetDueTo`` says only "BGP Notification send").
:func:`thaw_node` lets the packets through again and waits until the node is back.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import yaml

from .observe import fib_snapshot
from .pool import freeze, thaw
from .runner import Lab
from .scenario import Convergence, spread, wait_membership
from .topology import AGENT_CONF


@dataclass(frozen=True)
class RouterView:
    router: str
    # the node's path left this router's FIB (every VIP) between these two times after the
    # cut: the FIB poll before the change started at least ``low`` s after it, the poll that
    # saw it ended at most ``high`` s after it
    low: float
    high: float
    reason: str  # why the router reset the node's session (reset_reason)
    bfd: str  # the router's BFD state of the node's session once it was withdrawn


@dataclass(frozen=True)
class Death:
    node: str
    routers: dict[str, RouterView]
    others_stable: bool
    unexpected: list[str]
    cut_seconds: float  # the nft command that froze the node (the clock starts at its end)
    answered: int  # client requests the frozen node answered after it was withdrawn
    failures: int  # client requests that failed after it was withdrawn
    detect_ms: int | None  # the node's peers[].bfd: interval x multiplier (None: no BFD)
    hold_time: int  # the node's BGP hold time: what catches it without BFD

    def within(self, seconds: float) -> bool:
        return all(v.high <= seconds for v in self.routers.values())

    def by_bfd(self) -> bool:
        return all("BFD" in v.reason for v in self.routers.values())


def node_timers(lab: Lab, node: str) -> tuple[int | None, int]:
    """(BFD detection ms, hold time s) of the node's first peer, from its agent config."""
    source = lab.topology.node(node).bind_source(AGENT_CONF)
    assert source is not None
    peer: dict[str, Any] = yaml.safe_load(source.read_text())["peers"][0]
    bfd = peer.get("bfd")
    detect = int(bfd["interval_ms"]) * int(bfd["multiplier"]) if bfd else None
    return detect, int(peer.get("hold_time", 90))


def bfd_states(lab: Lab) -> dict[str, dict[str, str]]:
    """router -> LB node -> the router's BFD state of that node's session ("up", "down")."""
    owners = lab.address_owner()
    return {
        name: {owners.get(peer, peer): state for peer, state in r.bfd_peers().items()}
        for name, r in lab.routers.items()
    }


def reset_reason(lab: Lab, router: str, node: str) -> str:
    """Why the router last reset its BGP session with ``node``: the NOTIFICATION it sent or
    received ("Cease/BFD Down"), else FRR's lastResetDueTo."""
    owners = lab.address_owner()
    data = json.loads(lab.routers[router].vtysh("show bgp neighbors json") or "{}")
    for address, info in data.items():
        if owners.get(address) == node and isinstance(info, dict):
            return str(info.get("lastNotificationReason") or info.get("lastResetDueTo", "?"))
    return "?"


def freeze_node(lab: Lab, node: str, timeout: float = 60.0) -> Death:
    """Freeze ``node`` and wait until every router has withdrawn it (it stays frozen)."""
    detect, hold = node_timers(lab, node)
    baseline = fib_snapshot(lab)
    t0 = time.monotonic()
    freeze(lab, node)
    cut_at, started = time.time(), time.monotonic()
    gone = wait_membership(lab, node, False, timeout, started, baseline)
    views: dict[str, RouterView] = {}
    states = bfd_states(lab)
    for name in lab.routers:
        spans = [span for (router, _), span in gone.changed.items() if router == name]
        views[name] = RouterView(
            router=name,
            low=max([0.0, *(before - cut_at for before, _ in spans)]),
            high=max([0.0, *(after - cut_at for _, after in spans)]),
            reason=reset_reason(lab, name, node),
            bfd=states.get(name, {}).get(node, "none"),
        )
    after = spread(lab, count=20)
    return Death(
        node=node,
        routers=views,
        others_stable=gone.others_stable,
        unexpected=gone.unexpected,
        cut_seconds=started - t0,
        answered=sum(counts.get(node, 0) for counts in after.counts.values()),
        failures=after.failures,
        detect_ms=detect,
        hold_time=hold,
    )


def thaw_node(lab: Lab, node: str, timeout: float = 180.0) -> Convergence:
    """Let the frozen node's packets through again; wait until it is back in every FIB."""
    baseline = fib_snapshot(lab)
    started = time.monotonic()
    thaw(lab, node)
    return wait_membership(lab, node, True, timeout, started, baseline)


def describe(d: Death) -> str:
    """One line per router: when the node left its FIB and why."""
    parts = [
        f"{v.router} {v.low:.2f}-{v.high:.2f}s ({v.reason}; BFD {v.bfd})"
        for v in d.routers.values()
    ]
    detect = f"BFD detection {d.detect_ms} ms" if d.detect_ms else "no BFD"
    # the clock starts when nft returned: a guest that took seconds to run it may have
    # withdrawn the node meanwhile, and the window then says little (the reason still does)
    slow = f"; nft itself took {d.cut_seconds:.1f}s" if d.cut_seconds > 1.0 else ""
    return f"{'; '.join(parts)} [{detect}, hold timer {d.hold_time} s{slow}]"
