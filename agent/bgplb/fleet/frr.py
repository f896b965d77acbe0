"""The FRR side of the fleet, per router: a snippet to merge into its frr.conf.

Prefix lists with exactly the VIPs the nodes announce to it (host routes), route maps (accept
those, send the nodes nothing), BGP multipath across the nodes (``maximum-paths``, and
``bgp bestpath as-path multipath-relax`` so nodes with different ASNs still share), one
peer-group with a neighbor per node session, a BFD profile when the router has ``bfd``, and the
note about ``fib_multipath_hash_policy``. Like the lab's frr.conf: no ``exit`` lines, policies
before ``router bgp``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..model import IPAddress
from .nodes import RenderedNode
from .schema import RouterSpec

HASH_NOTE = """\
! ECMP hashing: a Linux router hashes on addresses only by default (policy 0), so all of one
! client's flows go to one node. Hash on ports as well (the routers of the lab do):
!   sysctl -w net.ipv4.fib_multipath_hash_policy=1
!   sysctl -w net.ipv6.fib_multipath_hash_policy=1
! (persist them in /etc/sysctl.d/; a hardware router: its own ECMP hash setting)
"""


def _keepalive(hold: int) -> int:
    return max(1, hold // 3) if hold else 0


def router_snippet(
    router: RouterSpec, nodes: Sequence[RenderedNode], source: str, md5_key: str | None
) -> str:
    g = router.peer_group
    lines = [
        f"! FRR snippet for router {router.name}: its BGP sessions with the bgp-lb nodes.",
        f"! Rendered by `bgp-lb fleet render` from {source}; merge it into the router's",
        "! frr.conf (or paste it into 'configure terminal'). docs/fleet.md explains each part.",
        *HASH_NOTE.splitlines(),
    ]
    vips = _vips(router, nodes)
    for family, kw, plen in ((4, "ip", 32), (6, "ipv6", 128)):
        name = f"{g}-VIPS{family}"
        wanted = [v for v in vips if v.version == family]
        if not wanted:
            lines.append(f"{kw} prefix-list {name} seq 10 deny any")
        for n, vip in enumerate(wanted, start=1):
            lines.append(f"{kw} prefix-list {name} seq {n * 10} permit {vip}/{plen}")
    lines += [
        f"route-map {g}-IN4 permit 10",
        f" match ip address prefix-list {g}-VIPS4",
        f"route-map {g}-IN6 permit 10",
        f" match ipv6 address prefix-list {g}-VIPS6",
        f"route-map {g}-OUT deny 10",
    ]
    if router.bfd is not None:
        ms = router.bfd.interval_ms
        lines += [
            "bfd",
            f" profile {g}",
            f"  detect-multiplier {router.bfd.multiplier}",
            f"  receive-interval {ms}",
            f"  transmit-interval {ms}",
        ]
    lines += [
        f"router bgp {router.asn}",
        " bgp bestpath as-path multipath-relax",
        f" neighbor {g} peer-group",
    ]
    if md5_key is not None:
        lines.append(f" neighbor {g} password {md5_key}")
    if router.multihop is not None:
        lines.append(f" neighbor {g} ebgp-multihop {router.multihop}")
    if router.bfd is not None:
        lines.append(f" neighbor {g} bfd profile {g}")
    ibgp = False
    for node in nodes:
        for s in node.sessions:
            if s.router.name != router.name:
                continue
            peer = next(p for p in node.config.peers if p.name == router.name)
            ibgp |= peer.asn == node.config.node.local_as
            lines += [
                f" neighbor {s.neighbor} remote-as {node.config.node.local_as}",
                f" neighbor {s.neighbor} peer-group {g}",
                f" neighbor {s.neighbor} description {node.name}",
            ]
            if peer.hold_time:
                lines.append(
                    f" neighbor {s.neighbor} timers {_keepalive(peer.hold_time)} {peer.hold_time}"
                )
    for family in (4, 6):
        lines += [
            f" address-family ipv{family} unicast",
            f"  maximum-paths {router.maximum_paths}",
        ]
        if ibgp:
            lines.append(f"  maximum-paths ibgp {router.maximum_paths}")
        lines += [
            f"  neighbor {g} activate",
            f"  neighbor {g} route-map {g}-IN{family} in",
            f"  neighbor {g} route-map {g}-OUT out",
            " exit-address-family",
        ]
    return "\n".join(lines) + "\n"


def _vips(router: RouterSpec, nodes: Iterable[RenderedNode]) -> list[IPAddress]:
    """Every VIP a node announces to this router, sorted (v4 before v6)."""
    out: set[IPAddress] = set()
    for node in nodes:
        for peer in node.config.peers:
            if peer.name != router.name:
                continue
            for service in node.config.services:
                if peer in node.config.service_peers(service):
                    out.update(service.vips)
    return sorted(out, key=lambda a: (a.version, int(a)))
