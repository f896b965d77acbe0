"""The routers' kernel FIBs over raw netlink: one socket per router namespace, kept open.

A poll is one RTM_GETROUTE dump decoded with ``struct``. Measured costs per router poll (two
VIPs, 26 routes, on the host): pyroute2's synchronous ``IPRoute.route("dump")`` 12-13 ms of
CPU (its call overhead, even with a kernel-side filter that returns 2 routes); this reader
~0.1 ms. Under TCG that is 5-10x more, and the polls run at a real-time priority while they
measure (scenario.measuring): at 20 ms intervals pyroute2 took most of a vCPU from the agents
and the client it was measuring. An ``ip -j route`` process per poll was worse (0.5-5 s).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import socket
import struct

RTPROT_BGP = 186
RT_TABLE_MAIN = 254

NETLINK_ROUTE = 0
RTM_GETROUTE = 26
RTM_NEWROUTE = 24
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
RTA_DST = 1
RTA_GATEWAY = 5
RTA_MULTIPATH = 9
RTA_TABLE = 15
CLONE_NEWNET = 0x40000000

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, proto, scope, type, flags
RTATTR = struct.Struct("=HH")  # len, type
RTNEXTHOP = struct.Struct("=HBBi")  # len, flags, hops, ifindex

_libc = ctypes.CDLL(None, use_errno=True)

# namespace name -> (inode of /run/netns/NAME, socket): a lab rebuilt under the same name
# gets a new namespace (new inode), so a stale socket is never reused.
_SOCKETS: dict[str, tuple[int, socket.socket]] = {}
_seq = 0


def _align(n: int) -> int:
    return (n + 3) & ~3


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _open_in(ns: str) -> socket.socket:
    """A netlink socket created inside ``ns`` (a socket stays in the namespace it was made in);
    this thread returns to its own namespace at once."""
    with open("/proc/thread-self/ns/net", "rb") as home, open(f"/run/netns/{ns}", "rb") as there:
        _setns(there.fileno())
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        finally:
            _setns(home.fileno())
    sock.bind((0, 0))
    sock.settimeout(5.0)
    return sock


def _socket(ns: str) -> socket.socket:
    inode = os.stat(f"/run/netns/{ns}").st_ino
    cached = _SOCKETS.get(ns)
    if cached is not None and cached[0] == inode:
        return cached[1]
    if cached is not None:
        cached[1].close()
    sock = _open_in(ns)
    _SOCKETS[ns] = (inode, sock)
    return sock


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while offset + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            break
        out[kind & 0x3FFF] = data[offset + RTATTR.size : offset + length]
        offset += _align(length)
    return out


def _address(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw)


def _gateways(family: int, attrs: dict[int, bytes]) -> list[str]:
    hops: list[str] = []
    if RTA_GATEWAY in attrs:
        hops.append(_address(family, attrs[RTA_GATEWAY]))
    mp = attrs.get(RTA_MULTIPATH, b"")
    offset = 0
    while offset + RTNEXTHOP.size <= len(mp):
        length = RTNEXTHOP.unpack_from(mp, offset)[0]
        if length < RTNEXTHOP.size:
            break
        inner = _attrs(mp, offset + RTNEXTHOP.size, offset + length)
        if RTA_GATEWAY in inner:
            hops.append(_address(family, inner[RTA_GATEWAY]))
        offset += _align(length)
    return hops


def _dump(
    sock: socket.socket, family: int
) -> list[tuple[tuple[int, int, int, int], dict[int, bytes]]]:
    """Every route of ``family``: ((dst_len, protocol, table, family), attributes)."""
    global _seq
    _seq += 1
    body = RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    sock.send(
        NLMSGHDR.pack(NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, _seq, 0)
        + body
    )
    routes: list[tuple[tuple[int, int, int, int], dict[int, bytes]]] = []
    while True:
        data = sock.recv(1 << 17)
        offset = 0
        while offset + NLMSGHDR.size <= len(data):
            length, kind, _, seq, _ = NLMSGHDR.unpack_from(data, offset)
            if length < NLMSGHDR.size:
                raise OSError("malformed netlink message")
            if seq == _seq:
                if kind == NLMSG_DONE:
                    return routes
                if kind == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, offset + NLMSGHDR.size)[0]
                    raise OSError(err, f"route dump: {os.strerror(err)}")
                if kind == RTM_NEWROUTE:
                    fam, dst_len, _, _, table, proto, _, _, _ = RTMSG.unpack_from(
                        data, offset + NLMSGHDR.size
                    )
                    attrs = _attrs(data, offset + NLMSGHDR.size + RTMSG.size, offset + length)
                    if RTA_TABLE in attrs:
                        table = struct.unpack("=I", attrs[RTA_TABLE])[0]
                    routes.append(((dst_len, proto, table, fam), attrs))
            offset += _align(length)


def bgp_gateways(ns: str, vip: str) -> list[str]:
    """Next hops of the BGP route for ``vip`` (a host route) in the namespace's main table."""
    target = ipaddress.ip_address(vip)
    family, plen = (socket.AF_INET6, 128) if target.version == 6 else (socket.AF_INET, 32)
    hops: list[str] = []
    for (dst_len, proto, table, _), attrs in _dump(_socket(ns), family):
        if dst_len != plen or proto != RTPROT_BGP or table != RT_TABLE_MAIN:
            continue
        dst = attrs.get(RTA_DST)
        if dst is None or ipaddress.ip_address(dst) != target:
            continue
        hops.extend(_gateways(family, attrs))
    return hops


def close_all() -> None:
    for _, sock in _SOCKETS.values():
        sock.close()
    _SOCKETS.clear()
