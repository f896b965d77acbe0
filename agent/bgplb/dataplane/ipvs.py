"""IPVS over generic netlink (pyroute2 ``AsyncIPVS``): our specs in, our specs and counters out.

pyroute2 quirks handled here:
- command ``"update"`` maps to a *delete*; modifications use ``"set"``;
- ``IPVSService.from_message`` fills in defaults (``fwd_method=3``, ``timeout=0``) that hide the
  kernel's values, so dumps are decoded from the raw attributes;
- the kernel requires a netmask for every service; for IPv6 it is a prefix length carried in
  the 32-bit IPv4-netmask field in host byte order, which pyroute2 only fills in for IPv4.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPVS, IPVSDest, IPVSService

from ..model import (
    ForwardMethod,
    IPVSCounters,
    Protocol,
    RealServerKey,
    RealServerSpec,
    VirtualServiceKey,
    VirtualServiceSpec,
)
from .bounded import EXISTS, MISSING, KernelCallError, bounded, changed

IP_VS_SVC_F_PERSISTENT = 0x1
# include/uapi/linux/ip_vs.h: IP_VS_SVC_F_SCHED1/2, for mh MH_FALLBACK / MH_PORT
IP_VS_SVC_F_SCHED_MH_FALLBACK = 0x8
IP_VS_SVC_F_SCHED_MH_PORT = 0x10
IP_VS_CONN_F_FWD_MASK = 0x7
FLAGS_MASK = 0xFFFF  # every service flag we do not model is cleared

PROTOCOL_NUMBERS = {
    Protocol.TCP: socket.IPPROTO_TCP,
    Protocol.UDP: socket.IPPROTO_UDP,
    Protocol.SCTP: socket.IPPROTO_SCTP,
}
PROTOCOLS = {n: p for p, n in PROTOCOL_NUMBERS.items()}
FORWARD_CODES = {ForwardMethod.MASQ: 0, ForwardMethod.TUNNEL: 2, ForwardMethod.DR: 3}
# 1 (LOCALNODE) is what old kernels reported for masquerading to a local address.
FORWARD_METHODS = {0: ForwardMethod.MASQ, 1: ForwardMethod.MASQ, 2: ForwardMethod.TUNNEL}
FORWARD_METHODS[3] = ForwardMethod.DR
V6_NETMASK = socket.inet_ntoa(struct.pack("=I", 128))  # prefix length 128, host byte order


@dataclass(frozen=True)
class IpvsSnapshot:
    """Every (non-fwmark) IPVS service and real server in the namespace, as the kernel has it."""

    services: Mapping[VirtualServiceKey, VirtualServiceSpec]
    real_servers: Mapping[RealServerKey, RealServerSpec]
    service_counters: Mapping[VirtualServiceKey, IPVSCounters]
    real_server_counters: Mapping[RealServerKey, IPVSCounters]


def service_key_request(key: VirtualServiceKey) -> Any:
    return IPVSService(addr=str(key.vip), port=key.port, protocol=PROTOCOL_NUMBERS[key.protocol])


def service_request(spec: VirtualServiceSpec) -> Any:
    extra: dict[str, Any] = {"netmask": V6_NETMASK} if spec.key.vip.version == 6 else {}
    return IPVSService(
        addr=str(spec.key.vip),
        port=spec.key.port,
        protocol=PROTOCOL_NUMBERS[spec.key.protocol],
        sched_name=spec.scheduler,
        timeout=spec.persistence or 0,
        flags={"flags": service_flags(spec), "mask": FLAGS_MASK},
        **extra,
    )


def service_flags(spec: VirtualServiceSpec) -> int:
    """The service flags we model; FLAGS_MASK clears every other one."""
    return (
        (IP_VS_SVC_F_PERSISTENT if spec.persistence else 0)
        | (IP_VS_SVC_F_SCHED_MH_FALLBACK if spec.mh_fallback else 0)
        | (IP_VS_SVC_F_SCHED_MH_PORT if spec.mh_port else 0)
    )


def dest_request(spec: RealServerSpec) -> Any:
    return IPVSDest(
        addr=str(spec.key.address),
        port=spec.key.port,
        weight=spec.weight,
        fwd_method=FORWARD_CODES[spec.forward],
    )


def dest_key_request(key: RealServerKey) -> Any:
    return IPVSDest(addr=str(key.address), port=key.port)


def _attr(nla: Any, name: str, default: Any = None) -> Any:
    value = nla.get_attr(name) if nla is not None else None
    return default if value is None else value


def _counters(stats: Any, active: int = 0, inactive: int = 0) -> IPVSCounters:
    return IPVSCounters(
        active_connections=active,
        inactive_connections=inactive,
        connections=int(_attr(stats, "IPVS_STATS_ATTR_CONNS", 0)),
        packets_in=int(_attr(stats, "IPVS_STATS_ATTR_INPKTS", 0)),
        packets_out=int(_attr(stats, "IPVS_STATS_ATTR_OUTPKTS", 0)),
        bytes_in=int(_attr(stats, "IPVS_STATS_ATTR_INBYTES", 0)),
        bytes_out=int(_attr(stats, "IPVS_STATS_ATTR_OUTBYTES", 0)),
        packets_in_per_second=int(_attr(stats, "IPVS_STATS_ATTR_INPPS", 0)),
    )


def decode_service(msg: Any) -> tuple[VirtualServiceSpec, IPVSCounters] | None:
    """A service dump message as our spec; None for fwmark services and unknown protocols."""
    svc = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
    addr = _attr(svc, "IPVS_SVC_ATTR_ADDR")
    protocol = PROTOCOLS.get(int(_attr(svc, "IPVS_SVC_ATTR_PROTOCOL", 0)))
    if _attr(svc, "IPVS_SVC_ATTR_FWMARK", 0) or addr is None or protocol is None:
        return None
    key = VirtualServiceKey(
        vip=ipaddress.ip_address(addr),
        port=int(_attr(svc, "IPVS_SVC_ATTR_PORT", 0)),
        protocol=protocol,
    )
    flags = int(_attr(svc, "IPVS_SVC_ATTR_FLAGS", {}).get("flags", 0))
    persistent = bool(flags & IP_VS_SVC_F_PERSISTENT)
    spec = VirtualServiceSpec(
        key=key,
        scheduler=str(_attr(svc, "IPVS_SVC_ATTR_SCHED_NAME", "")),
        persistence=int(_attr(svc, "IPVS_SVC_ATTR_TIMEOUT", 0)) if persistent else None,
        mh_fallback=bool(flags & IP_VS_SVC_F_SCHED_MH_FALLBACK),
        mh_port=bool(flags & IP_VS_SVC_F_SCHED_MH_PORT),
    )
    return spec, _counters(svc.get_attr("IPVS_SVC_ATTR_STATS64"))


def decode_dest(service: VirtualServiceKey, msg: Any) -> tuple[RealServerSpec, IPVSCounters]:
    dest = msg.get_attr("IPVS_CMD_ATTR_DEST")
    key = RealServerKey(
        service=service,
        address=ipaddress.ip_address(_attr(dest, "IPVS_DEST_ATTR_ADDR")),
        port=int(_attr(dest, "IPVS_DEST_ATTR_PORT", 0)),
    )
    code = int(_attr(dest, "IPVS_DEST_ATTR_FWD_METHOD", 0)) & IP_VS_CONN_F_FWD_MASK
    spec = RealServerSpec(
        key=key,
        weight=int(_attr(dest, "IPVS_DEST_ATTR_WEIGHT", 0)),
        forward=FORWARD_METHODS.get(code, ForwardMethod.MASQ),
    )
    counters = _counters(
        dest.get_attr("IPVS_DEST_ATTR_STATS64"),
        active=int(_attr(dest, "IPVS_DEST_ATTR_ACTIVE_CONNS", 0)),
        inactive=int(_attr(dest, "IPVS_DEST_ATTR_INACT_CONNS", 0)),
    )
    return spec, counters


class IpvsTable:
    """One generic-netlink IPVS handle in one network namespace (None = ours)."""

    def __init__(self, netns: str | None, timeout: float) -> None:
        self._netns = netns
        self._timeout = timeout
        self._sock: Any = None

    async def open(self) -> None:
        """Raises KernelCallError (ENOENT) when the kernel has no IPVS."""
        if self._sock is not None:
            return
        sock = AsyncIPVS(netns=self._netns) if self._netns else AsyncIPVS()
        try:
            await bounded(sock.setup_endpoint(), self._timeout, "open IPVS")
        except KernelCallError:
            sock.close()
            raise
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        await self.open()
        try:
            return await bounded(getattr(self._sock, method)(*args, **kwargs), self._timeout, what)
        except KernelCallError as e:
            if e.code == 0:  # a timeout: the socket may hold a stale answer
                self.close()
            raise

    async def snapshot(self) -> IpvsSnapshot:
        services: dict[VirtualServiceKey, VirtualServiceSpec] = {}
        service_counters: dict[VirtualServiceKey, IPVSCounters] = {}
        real_servers: dict[RealServerKey, RealServerSpec] = {}
        real_server_counters: dict[RealServerKey, IPVSCounters] = {}
        for msg in await self._call("dump IPVS services", "service", "dump"):
            decoded = decode_service(msg)
            if decoded is None:
                continue
            spec, svc_counters = decoded
            services[spec.key] = spec
            active = inactive = 0
            dests = await self._call(
                f"dump real servers of {spec.key}", "dest", "dump", service_key_request(spec.key)
            )
            for dmsg in dests:
                rs, counters = decode_dest(spec.key, dmsg)
                real_servers[rs.key] = rs
                real_server_counters[rs.key] = counters
                active += counters.active_connections
                inactive += counters.inactive_connections
            service_counters[spec.key] = IPVSCounters(
                active_connections=active,
                inactive_connections=inactive,
                connections=svc_counters.connections,
                packets_in=svc_counters.packets_in,
                packets_out=svc_counters.packets_out,
                bytes_in=svc_counters.bytes_in,
                bytes_out=svc_counters.bytes_out,
                packets_in_per_second=svc_counters.packets_in_per_second,
            )
        return IpvsSnapshot(services, real_servers, service_counters, real_server_counters)

    async def service_counters(
        self, keys: Iterable[VirtualServiceKey]
    ) -> dict[VirtualServiceKey, IPVSCounters]:
        """The virtual-service statistics of ``keys`` now: one GET per key (not a dump of the
        whole table); a key the kernel does not have is left out."""
        out: dict[VirtualServiceKey, IPVSCounters] = {}
        for key in keys:
            try:
                msgs = await self._call(
                    f"get IPVS service {key}", "service", "get", service_key_request(key)
                )
            except KernelCallError as e:
                if e.code in MISSING:
                    continue
                raise
            for msg in msgs:
                decoded = decode_service(msg)
                if decoded is not None and decoded[0].key == key:
                    out[key] = decoded[1]
        return out

    async def add_service(self, spec: VirtualServiceSpec) -> bool:
        """Create the service; False if one with that key already exists (left unchanged)."""
        return await changed(
            self._call(f"add IPVS service {spec.key}", "service", "add", service_request(spec)),
            EXISTS,
        )

    async def set_service(self, spec: VirtualServiceSpec) -> bool:
        """Modify scheduler / persistence / flags in place; False if the service does not exist."""
        return await changed(
            self._call(f"set IPVS service {spec.key}", "service", "set", service_request(spec)),
            MISSING,
        )

    async def delete_service(self, key: VirtualServiceKey) -> bool:
        """Delete the service and its real servers; False if it was already gone."""
        return await changed(
            self._call(f"delete IPVS service {key}", "service", "del", service_key_request(key)),
            MISSING,
        )

    async def add_dest(self, spec: RealServerSpec) -> bool:
        what = f"add real server {spec.key} to {spec.key.service}"
        return await changed(
            self._call(
                what, "dest", "add", service_key_request(spec.key.service), dest_request(spec)
            ),
            EXISTS,
        )

    async def set_dest(self, spec: RealServerSpec) -> bool:
        what = f"set real server {spec.key} of {spec.key.service}"
        return await changed(
            self._call(
                what, "dest", "set", service_key_request(spec.key.service), dest_request(spec)
            ),
            MISSING,
        )

    async def delete_dest(self, key: RealServerKey) -> bool:
        what = f"delete real server {key} from {key.service}"
        return await changed(
            self._call(
                what, "dest", "del", service_key_request(key.service), dest_key_request(key)
            ),
            MISSING,
        )
