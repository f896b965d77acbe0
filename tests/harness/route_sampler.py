"""Watch one prefix at a router: its kernel FIB (polled + netlink events) and what bgpd received.

A flap can hide from each single source: a poll every 20 ms misses a shorter gap; the kernel
never sees a withdraw that bgpd coalesced with the re-announce inside its 50 ms work queue. So
:class:`RouteSampler` combines three:

- a poll of the router's FIB over raw rtnetlink every ``interval`` (default 20 ms), recording
  every interval in which the prefix was absent;
- a netlink subscription (``RTMGRP_IPV4_ROUTE`` / ``RTMGRP_IPV6_ROUTE``) in the router's
  namespace: every RTM_NEWROUTE / RTM_DELROUTE of the prefix, however short-lived;
- bgpd's own counters for the peer: ``messageStats.updatesRecv`` and the session counters of
  ``show bgp neighbors <peer> json``, plus the withdrawals of the prefix that bgpd logged
  (``debug bgp updates in`` is switched on at ``start()``: "rcvd UPDATE about P -- withdrawn").

``start()`` / ``stop() -> SamplerReport``; ``assert_never_withdrawn(report)``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from pyroute2.netns import create_socket

from .frr import Router

NETLINK_ROUTE = 0
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE = 0x40, 0x400
RTA_DST, RTA_GATEWAY, RTA_MULTIPATH = 1, 5, 9
RTPROT_BGP = 186
_NLMSG = struct.Struct("=LHHLL")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")
_RTNH = struct.Struct("=HBBi")


@dataclass(frozen=True)
class RouteEvent:
    at: float  # time.time()
    kind: str  # "add" or "del"
    nexthops: tuple[str, ...]


@dataclass
class SamplerReport:
    prefix: str
    peer: str
    duration: float
    polls: int
    max_poll_gap: float  # the longest time between two polls (how blind the poller was)
    fib_absent_intervals: list[tuple[float, float]]  # (first poll absent, first poll back)
    route_events: list[RouteEvent]
    updates_received: int  # bgpd messageStats.updatesRecv delta for the peer
    withdrawals_seen: int  # "rcvd UPDATE about PREFIX -- withdrawn" lines from the peer
    session_drops: int  # connectionsDropped delta
    present_at_start: bool
    present_at_end: bool
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        dels = sum(1 for e in self.route_events if e.kind == "del")
        gaps = [round((b - a) * 1000) for a, b in self.fib_absent_intervals]
        return (
            f"{self.prefix} via {self.peer} over {self.duration:.1f}s: {self.polls} polls "
            f"(max gap {self.max_poll_gap * 1000:.0f} ms), absent intervals (ms) {gaps}, "
            f"{len(self.route_events)} route events ({dels} deletes), "
            f"{self.updates_received} UPDATEs received, {self.withdrawals_seen} withdrawals, "
            f"{self.session_drops} session drops"
        )


def flaps(report: SamplerReport) -> int:
    """How many times the prefix went away: the most any one witness saw (FIB polls, kernel
    deletes, withdrawals bgpd received); a test reports it as ``wrong_announcements``."""
    dels = sum(1 for e in report.route_events if e.kind == "del")
    return max(len(report.fib_absent_intervals), dels, report.withdrawals_seen)


def assert_never_withdrawn(report: SamplerReport) -> None:
    """The prefix stayed in the router's FIB and RIB all along: no poll without it, no
    kernel delete, no withdrawal received, no session drop."""
    dels = [e for e in report.route_events if e.kind == "del"]
    problems = []
    if not report.present_at_start:
        problems.append("absent when sampling started")
    if report.fib_absent_intervals:
        problems.append(f"absent from the FIB in {len(report.fib_absent_intervals)} interval(s)")
    if dels:
        problems.append(f"{len(dels)} kernel route delete(s)")
    if report.withdrawals_seen:
        problems.append(f"bgpd received {report.withdrawals_seen} withdrawal(s)")
    lost = [e for e in report.route_events if e.kind == "lost"]
    if lost:
        problems.append(f"route events lost {len(lost)} time(s) (cannot prove no flap)")
    if report.session_drops:
        problems.append(f"the BGP session dropped {report.session_drops} time(s)")
    if not report.present_at_end:
        problems.append("absent when sampling stopped")
    assert not problems, f"{'; '.join(problems)} -- {report.summary()}"


# --------------------------------------------------------------------------- netlink


def _route_of(msg: bytes, want: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str] | None:
    """The next hops of a route message if it is about ``want`` (BGP, exact prefix), else None."""
    family, dst_len, _src, _tos, _table, proto, _scope, _type, _flags = _RTMSG.unpack_from(msg, 0)
    if dst_len != want.prefixlen or proto != RTPROT_BGP:
        return None
    dst: bytes | None = None
    hops: list[str] = []
    off = _RTMSG.size
    while off + _RTA.size <= len(msg):
        length, kind = _RTA.unpack_from(msg, off)
        if length < _RTA.size:
            break
        data = msg[off + _RTA.size : off + length]
        if kind == RTA_DST:
            dst = data
        elif kind == RTA_GATEWAY:
            hops.append(socket.inet_ntop(family, data))
        elif kind == RTA_MULTIPATH:
            hops += _multipath(family, data)
        off += (length + 3) & ~3
    if dst is None or socket.inet_ntop(family, dst) != str(want.network_address):
        return None
    return sorted(hops)


def _multipath(family: int, data: bytes) -> list[str]:
    hops = []
    off = 0
    while off + _RTNH.size <= len(data):
        length, _flags, _hops, _ifindex = _RTNH.unpack_from(data, off)
        if length < _RTNH.size:
            break
        inner = off + _RTNH.size
        while inner + _RTA.size <= off + length:
            alen, kind = _RTA.unpack_from(data, inner)
            if alen < _RTA.size:
                break
            if kind == RTA_GATEWAY:
                hops.append(socket.inet_ntop(family, data[inner + _RTA.size : inner + alen]))
            inner += (alen + 3) & ~3
        off += (length + 3) & ~3
    return hops


def _messages(buf: bytes) -> list[tuple[int, bytes]]:
    out = []
    off = 0
    while off + _NLMSG.size <= len(buf):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(buf, off)
        if length < _NLMSG.size:
            break
        out.append((kind, buf[off + _NLMSG.size : off + length]))
        off += (length + 3) & ~3
    return out


class RouteSampler:
    """Samples ``prefix`` in ``router``'s namespace, learned from BGP peer ``peer``."""

    def __init__(self, router: Router, prefix: str, peer: str, interval: float = 0.02) -> None:
        self.router = router
        self.prefix = ipaddress.ip_network(prefix)
        self.peer = peer
        self.interval = interval
        self._family = socket.AF_INET6 if self.prefix.version == 6 else socket.AF_INET
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._events: list[RouteEvent] = []
        self._absent: list[tuple[float, float]] = []
        self._absent_since: float | None = None
        self._polls = 0
        self._max_gap = 0.0
        self._errors: list[str] = []
        self._seq = 0

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self.router.vtysh("debug bgp updates in")
        self._log_at_start = len(self.router.log())
        self._stats_at_start = self._stats()
        self._t0 = time.time()
        self._present_at_start = self.present()
        events = create_socket(self.router.ns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        events.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        group = RTMGRP_IPV6_ROUTE if self.prefix.version == 6 else RTMGRP_IPV4_ROUTE
        events.bind((0, group))
        poll = create_socket(self.router.ns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self._threads = [
            threading.Thread(target=self._watch, args=(events,), daemon=True),
            threading.Thread(target=self._poll, args=(poll,), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> SamplerReport:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        end = time.time()
        present = self.present()
        with self._lock:
            absent = list(self._absent)
            if self._absent_since is not None:
                absent.append((self._absent_since, end))
            events = list(self._events)
        stats = self._stats()
        log = self.router.log()[self._log_at_start :]
        pattern = re.compile(
            rf"{re.escape(self.peer)}\S* rcvd UPDATE about {re.escape(str(self.prefix))}\S*"
            r".*-- withdrawn"
        )
        withdrawals = sum(1 for line in log.splitlines() if pattern.search(line))
        return SamplerReport(
            prefix=str(self.prefix),
            peer=self.peer,
            duration=end - self._t0,
            polls=self._polls,
            max_poll_gap=self._max_gap,
            fib_absent_intervals=absent,
            route_events=events,
            updates_received=stats[0] - self._stats_at_start[0],
            withdrawals_seen=withdrawals,
            session_drops=stats[1] - self._stats_at_start[1],
            present_at_start=self._present_at_start,
            present_at_end=present,
            notes=list(self._errors),
        )

    def __enter__(self) -> RouteSampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()

    # ------------------------------------------------------------------ sources

    def present(self) -> bool:
        sock = create_socket(self.router.ns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            return self._dump(sock) is not None
        finally:
            sock.close()

    def _stats(self) -> tuple[int, int]:
        info = self.router.vtysh_json(f"show bgp neighbors {self.peer} json").get(self.peer, {})
        assert isinstance(info, dict)
        stats = info.get("messageStats", {})
        return int(stats.get("updatesRecv", 0)), int(info.get("connectionsDropped", 0))

    def _dump(self, sock: socket.socket) -> list[str] | None:
        """The prefix's next hops in the FIB now (None: absent)."""
        self._seq += 1
        body = _RTMSG.pack(self._family, 0, 0, 0, 0, 0, 0, 0, 0)
        sock.send(
            _NLMSG.pack(
                _NLMSG.size + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0
            )
            + body
        )
        found: list[str] | None = None
        while True:
            for kind, msg in _messages(sock.recv(1024 * 1024)):
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", msg, 0)
                    raise OSError(-code, os.strerror(-code))
                if kind == RTM_NEWROUTE:
                    hops = _route_of(msg, self.prefix)
                    if hops is not None:
                        found = hops

    def _poll(self, sock: socket.socket) -> None:
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    hops = self._dump(sock)
                except OSError as e:
                    self._errors.append(f"poll: {e}")
                    hops = None
                now_m, now = time.monotonic(), time.time()
                with self._lock:
                    self._polls += 1
                    self._max_gap = max(self._max_gap, now_m - last)
                    if hops is None and self._absent_since is None:
                        self._absent_since = now
                    elif hops is not None and self._absent_since is not None:
                        self._absent.append((self._absent_since, now))
                        self._absent_since = None
                last = now_m
                spent = time.monotonic() - now_m
                self._stop.wait(max(0.0, self.interval - spent))
        finally:
            sock.close()

    def _watch(self, sock: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([sock], [], [], 0.1)
                if not ready:
                    continue
                try:
                    buf = sock.recv(1024 * 1024)
                except OSError as e:  # ENOBUFS: events were lost; say so
                    self._errors.append(f"events: {e}")
                    with self._lock:
                        self._events.append(RouteEvent(time.time(), "lost", ()))
                    continue
                now = time.time()
                for kind, msg in _messages(buf):
                    if kind not in (RTM_NEWROUTE, RTM_DELROUTE):
                        continue
                    hops = _route_of(msg, self.prefix)
                    if hops is None:
                        continue
                    with self._lock:
                        self._events.append(
                            RouteEvent(now, "add" if kind == RTM_NEWROUTE else "del", tuple(hops))
                        )
        finally:
            with contextlib.suppress(OSError):
                sock.close()
