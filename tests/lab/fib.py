"""The routers' kernel FIBs over netlink: one socket per router namespace, kept open.

A poll is then one route dump (~ms) instead of an ``ip -j route`` process per router and
VIP, which under TCG took 0.5-5 s: coarser than the withdraw times the lab measures.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from pyroute2 import IPRoute

RTPROT_BGP = 186

# namespace name -> (inode of /run/netns/NAME, socket): a lab rebuilt under the same name
# gets a new namespace (new inode), so a stale socket is never reused.
_SOCKETS: dict[str, tuple[int, IPRoute]] = {}


def _socket(ns: str) -> IPRoute:
    inode = os.stat(f"/run/netns/{ns}").st_ino
    cached = _SOCKETS.get(ns)
    if cached is not None and cached[0] == inode:
        return cached[1]
    if cached is not None:
        cached[1].close()
    ipr = IPRoute(netns=ns, flags=0)  # flags=0: never create a namespace that is gone
    _SOCKETS[ns] = (inode, ipr)
    return ipr


def bgp_gateways(ns: str, vip: str) -> list[str]:
    """Next hops of the BGP route for ``vip`` (a host route) in the namespace's main table."""
    v6 = ":" in vip
    family, plen = (socket.AF_INET6, 128) if v6 else (socket.AF_INET, 32)
    hops: list[str] = []
    for route in _socket(ns).route("dump", family=family, table=254):
        if route["dst_len"] != plen or route["proto"] != RTPROT_BGP:
            continue
        dst = route.get("RTA_DST")
        if dst is None or ipaddress.ip_address(dst) != ipaddress.ip_address(vip):
            continue
        gateway = route.get("RTA_GATEWAY")
        if gateway is not None:
            hops.append(str(gateway))
        for nexthop in route.get("RTA_MULTIPATH") or []:
            gateway = nexthop.get("RTA_GATEWAY")
            if gateway is not None:
                hops.append(str(gateway))
    return hops


def close_all() -> None:
    for _, ipr in _SOCKETS.values():
        ipr.close()
    _SOCKETS.clear()
