"""IPVS connection timeouts and sync daemons over generic netlink (no ipvsadm).

pyroute2 0.9.7 types ``IPVS_CMD_ATTR_DAEMON`` and the timeouts as "hex" and has no daemon
method, so :class:`knobmsg` types them (include/uapi/linux/ip_vs.h; the kernel's policy in
ip_vs_ctl.c: STATE u32, MCAST_IFN NUL string, SYNC_ID u32, SYNC_MAXLEN u16, MCAST_GROUP
in_addr, MCAST_GROUP6 in6_addr, MCAST_PORT be16, MCAST_TTL u8) and :class:`KnobSocket`, an
``AsyncIPVS`` bound with it, sends IPVS_CMD_{NEW,DEL,GET}_DAEMON and IPVS_CMD_{SET,GET}_CONFIG
through pyroute2's own request path. Every call is bounded (dataplane/bounded.py).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Protocol

from pyroute2 import AsyncIPVS
from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, genlmsg, nla
from pyroute2.netlink.generic import ipvs as genl

from .bounded import MISSING, KernelCallError, bounded, changed
from .knobs import IpvsTimeouts, SyncDaemon, SyncRole

ROLES = {r.state: r for r in SyncRole}


class knobmsg(genlmsg):  # type: ignore[misc]  # pyroute2 is untyped
    """Not a subclass of pyroute2's ``ipvsmsg``: pyroute2 compiles an nla_map once per class
    and a subclass would inherit the parent's compiled map (its "hex" daemon attribute) if
    the parent was compiled first."""

    prefix = "IPVS_CMD_ATTR_"
    service = genl.ipvsmsg.service
    dest = genl.ipvsmsg.dest
    nla_map = (
        ("IPVS_CMD_ATTR_UNSPEC", "none"),
        ("IPVS_CMD_ATTR_SERVICE", "service"),
        ("IPVS_CMD_ATTR_DEST", "dest"),
        ("IPVS_CMD_ATTR_DAEMON", "daemon"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_UDP", "uint32"),
    )

    class daemon(nla):  # type: ignore[misc]
        prefix = "IPVS_DAEMON_ATTR_"
        nla_map = (
            ("IPVS_DAEMON_ATTR_UNSPEC", "none"),
            ("IPVS_DAEMON_ATTR_STATE", "uint32"),
            ("IPVS_DAEMON_ATTR_MCAST_IFN", "asciiz"),
            ("IPVS_DAEMON_ATTR_SYNC_ID", "uint32"),
            ("IPVS_DAEMON_ATTR_SYNC_MAXLEN", "uint16"),
            ("IPVS_DAEMON_ATTR_MCAST_GROUP", "ip4addr"),
            ("IPVS_DAEMON_ATTR_MCAST_GROUP6", "ip6addr"),
            ("IPVS_DAEMON_ATTR_MCAST_PORT", "be16"),
            ("IPVS_DAEMON_ATTR_MCAST_TTL", "uint8"),
        )


class KnobSocket(AsyncIPVS):  # type: ignore[misc]  # pyroute2 is untyped
    """pyroute2's IPVS socket, parsing answers with :class:`knobmsg`."""

    async def setup_endpoint(self) -> None:
        if getattr(self.local, "transport", None) is not None:
            return
        await genl.AsyncGenericNetlinkSocket.setup_endpoint(self)
        await self.bind(genl.GENL_NAME, knobmsg)

    async def request(self, cmd: int, attrs: list[tuple[str, Any]], flags: int) -> list[Any]:
        msg = knobmsg()
        msg["cmd"] = cmd
        msg["version"] = genl.GENL_VERSION
        msg["attrs"] = attrs
        return list(await self._do_request(msg, msg_flags=flags))


def daemon_attrs(d: SyncDaemon) -> dict[str, Any]:
    group = (
        ("IPVS_DAEMON_ATTR_MCAST_GROUP", str(d.group))
        if d.group.version == 4
        else ("IPVS_DAEMON_ATTR_MCAST_GROUP6", str(d.group))
    )
    attrs: list[tuple[str, Any]] = [
        ("IPVS_DAEMON_ATTR_STATE", d.role.state),
        ("IPVS_DAEMON_ATTR_MCAST_IFN", d.interface),
        ("IPVS_DAEMON_ATTR_SYNC_ID", d.sync_id),
        group,
        ("IPVS_DAEMON_ATTR_MCAST_PORT", d.port),
        ("IPVS_DAEMON_ATTR_MCAST_TTL", d.ttl),
    ]
    if d.maxlen is not None:
        attrs.append(("IPVS_DAEMON_ATTR_SYNC_MAXLEN", d.maxlen))
    return {"attrs": attrs}


def decode_daemon(msg: Any) -> SyncDaemon | None:
    """A GET_DAEMON answer as a :class:`SyncDaemon`; None if it names no known role."""
    d = msg.get_attr("IPVS_CMD_ATTR_DAEMON")
    if d is None:
        return None
    role = ROLES.get(int(d.get_attr("IPVS_DAEMON_ATTR_STATE") or 0))
    if role is None:
        return None
    group = d.get_attr("IPVS_DAEMON_ATTR_MCAST_GROUP6") or d.get_attr(
        "IPVS_DAEMON_ATTR_MCAST_GROUP"
    )
    maxlen = d.get_attr("IPVS_DAEMON_ATTR_SYNC_MAXLEN")
    return SyncDaemon(
        role=role,
        interface=str(d.get_attr("IPVS_DAEMON_ATTR_MCAST_IFN") or ""),
        sync_id=int(d.get_attr("IPVS_DAEMON_ATTR_SYNC_ID") or 0),
        group=ipaddress.ip_address(group or "224.0.0.81"),  # kernels before 4.3: no group
        port=int(d.get_attr("IPVS_DAEMON_ATTR_MCAST_PORT") or 8848),
        ttl=int(d.get_attr("IPVS_DAEMON_ATTR_MCAST_TTL") or 1),
        maxlen=None if maxlen is None else int(maxlen),
    )


class IpvsKnobs(Protocol):
    """IPVS's node-wide settings. Failures raise :class:`KernelCallError`."""

    async def timeouts(self) -> IpvsTimeouts: ...

    async def set_timeouts(self, timeouts: IpvsTimeouts) -> None: ...

    async def daemons(self) -> tuple[SyncDaemon, ...]: ...

    async def start_daemon(self, daemon: SyncDaemon) -> None: ...

    async def stop_daemon(self, role: SyncRole) -> bool:
        """False if no daemon of ``role`` was running."""

    def close(self) -> None: ...


class NetlinkIpvsKnobs:
    """The real adapter, in one network namespace (None = ours)."""

    def __init__(self, netns: str | None = None, timeout: float = 5.0) -> None:
        self._netns = netns
        self._timeout = timeout
        self._sock: KnobSocket | None = None

    async def _open(self) -> KnobSocket:
        if self._sock is None:
            sock = KnobSocket(netns=self._netns) if self._netns else KnobSocket()
            try:
                await bounded(sock.setup_endpoint(), self._timeout, "open IPVS")
            except KernelCallError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    async def _call(
        self, what: str, cmd: int, attrs: list[tuple[str, Any]], flags: int
    ) -> list[Any]:
        sock = await self._open()
        try:
            return await bounded(sock.request(cmd, attrs, flags), self._timeout, what)
        except KernelCallError as e:
            if e.code == 0:  # a timeout: the socket may hold a stale answer
                self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def timeouts(self) -> IpvsTimeouts:
        got = await self._call(
            "get IPVS timeouts", genl.IPVS_CMD_GET_CONFIG, [], NLM_F_REQUEST | NLM_F_ACK
        )
        for msg in got:
            tcp = msg.get_attr("IPVS_CMD_ATTR_TIMEOUT_TCP")
            if tcp is not None:
                return IpvsTimeouts(
                    tcp=int(tcp),
                    tcp_fin=int(msg.get_attr("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN") or 0),
                    udp=int(msg.get_attr("IPVS_CMD_ATTR_TIMEOUT_UDP") or 0),
                )
        raise KernelCallError("get IPVS timeouts", 0, "the kernel's answer has no timeouts")

    async def set_timeouts(self, timeouts: IpvsTimeouts) -> None:
        attrs = [
            ("IPVS_CMD_ATTR_TIMEOUT_TCP", timeouts.tcp),
            ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", timeouts.tcp_fin),
            ("IPVS_CMD_ATTR_TIMEOUT_UDP", timeouts.udp),
        ]
        await self._call(
            "set IPVS timeouts", genl.IPVS_CMD_SET_CONFIG, attrs, NLM_F_REQUEST | NLM_F_ACK
        )

    async def daemons(self) -> tuple[SyncDaemon, ...]:
        got = await self._call(
            "dump IPVS sync daemons", genl.IPVS_CMD_GET_DAEMON, [], NLM_F_REQUEST | NLM_F_DUMP
        )
        return tuple(d for d in map(decode_daemon, got) if d is not None)

    async def start_daemon(self, daemon: SyncDaemon) -> None:
        await self._call(
            f"start the IPVS sync {daemon.role.value} on {daemon.interface}",
            genl.IPVS_CMD_NEW_DAEMON,
            [("IPVS_CMD_ATTR_DAEMON", daemon_attrs(daemon))],
            NLM_F_REQUEST | NLM_F_ACK,
        )

    async def stop_daemon(self, role: SyncRole) -> bool:
        attrs = [("IPVS_CMD_ATTR_DAEMON", {"attrs": [("IPVS_DAEMON_ATTR_STATE", role.state)]})]
        call = self._call(
            f"stop the IPVS sync {role.value}",
            genl.IPVS_CMD_DEL_DAEMON,
            attrs,
            NLM_F_REQUEST | NLM_F_ACK,
        )
        return await changed(call, MISSING)
