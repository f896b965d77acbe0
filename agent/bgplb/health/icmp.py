"""ICMP echo: healthy when any (or, with ``require: all``, every) address answers in time.

Three ways to ping, chosen once per address family, first that works:

1. ``DGRAM``: an unprivileged ICMP datagram socket (``socket(AF_INET, SOCK_DGRAM,
   IPPROTO_ICMP)``), allowed when the agent's group is inside ``net.ipv4.ping_group_range``;
   the kernel fills in the identifier and checksum and delivers only our replies.
2. ``RAW``: a raw ICMP socket (root / CAP_NET_RAW); it sees every echo reply on the host, so
   replies are matched on identifier, sequence, a random payload token and source address.
3. ``EXEC``: ``ping -n -q -c1 -W<secs> [-I src] addr`` as a child process.

Every probe uses its own socket, so concurrent probes never steal each other's replies.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import math
import os
import socket
import struct
from collections.abc import Sequence

from ..model import IPAddress
from .command import run_command

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
PROTO = {4: socket.IPPROTO_ICMP, 6: socket.IPPROTO_ICMPV6}
FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
TOKEN_SIZE = 16


class PingMethod(enum.StrEnum):
    DGRAM = "dgram"
    RAW = "raw"
    EXEC = "exec"


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def echo_request(version: int, ident: int, seq: int, token: bytes) -> bytes:
    header = struct.pack("!BBHHH", ECHO_REQUEST[version], 0, 0, ident, seq)
    if version == 6:  # the kernel computes ICMPv6 checksums (it needs the pseudo-header)
        return header + token
    csum = checksum(header + token)
    return struct.pack("!BBHHH", ECHO_REQUEST[version], 0, csum, ident, seq) + token


def is_echo_reply(
    packet: bytes, version: int, method: PingMethod, ident: int, seq: int, token: bytes
) -> bool:
    """Whether ``packet`` (as read from our socket) answers our request.

    Raw IPv4 sockets return the IP header too; IPv6 and datagram sockets do not. Datagram
    sockets rewrite the identifier, so it is not compared there (the kernel filters anyway).
    """
    if version == 4 and method is PingMethod.RAW:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return False
        packet = packet[(packet[0] & 0x0F) * 4 :]
    if len(packet) < 8 + len(token):
        return False
    kind, code, _, rident, rseq = struct.unpack("!BBHHH", packet[:8])
    if kind != ECHO_REPLY[version] or code != 0 or rseq != seq:
        return False
    if method is PingMethod.RAW and rident != ident:
        return False
    return packet[8 : 8 + len(token)] == token


def open_socket(version: int, method: PingMethod) -> socket.socket:
    kind = socket.SOCK_DGRAM if method is PingMethod.DGRAM else socket.SOCK_RAW
    sock = socket.socket(FAMILY[version], kind, PROTO[version])
    sock.setblocking(False)
    return sock


def socket_method(version: int) -> PingMethod | None:
    """The first socket kind this process may open for ``version``, or None."""
    for method in (PingMethod.DGRAM, PingMethod.RAW):
        try:
            open_socket(version, method).close()
        except OSError:
            continue
        return method
    return None


class Pinger:
    """Pings with the best method available; ``methods`` forces one per family (tests)."""

    def __init__(self, methods: dict[int, PingMethod] | None = None) -> None:
        self._methods: dict[int, PingMethod] = dict(methods or {})

    def method(self, version: int) -> PingMethod:
        if version not in self._methods:
            self._methods[version] = socket_method(version) or PingMethod.EXEC
        return self._methods[version]

    async def ping(
        self,
        addresses: Sequence[IPAddress],
        timeout: float,  # noqa: ASYNC109 - each address gets its own timeout and reason
        source: IPAddress | None = None,
        require_all: bool = False,
    ) -> str | None:
        """None when any (``require_all``: every) address answers within ``timeout``, else
        the reason: the failing addresses with theirs."""
        if not addresses:
            return "no address to ping"
        tasks = [
            asyncio.create_task(self._ping_one(address, timeout, source)) for address in addresses
        ]
        try:
            for next_done in asyncio.as_completed(tasks):
                error = await next_done
                if error is None and not require_all:
                    return None
                if error is not None and require_all:
                    break
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        errors = [
            f"{a}: {t.result()}"
            for a, t in zip(addresses, tasks, strict=True)
            if not t.cancelled() and t.result() is not None
        ]
        return "; ".join(errors) or None

    async def _ping_one(
        self,
        address: IPAddress,
        timeout: float,  # noqa: ASYNC109
        source: IPAddress | None,
    ) -> str | None:
        version = address.version
        if source is not None and source.version != version:
            return f"source address {source} is not IPv{version}"
        method = self.method(version)
        if method is PingMethod.EXEC:
            return await _ping_exec(address, timeout, source)
        try:
            async with asyncio.timeout(timeout):
                await _ping_socket(address, method, source)
            return None
        except TimeoutError:
            return f"no reply within {timeout:g}s"
        except OSError as exc:
            return exc.strerror or str(exc)


async def _ping_socket(address: IPAddress, method: PingMethod, source: IPAddress | None) -> None:
    version = address.version
    loop = asyncio.get_running_loop()
    ident = int.from_bytes(os.urandom(2), "big")
    seq = int.from_bytes(os.urandom(2), "big")
    token = os.urandom(TOKEN_SIZE)
    with open_socket(version, method) as sock:
        if source is not None:
            sock.bind((str(source), 0))
        await loop.sock_sendto(sock, echo_request(version, ident, seq, token), (str(address), 0))
        while True:
            packet, peer = await loop.sock_recvfrom(sock, 65535)
            if ipaddress.ip_address(peer[0].split("%")[0]) != address:
                continue
            if is_echo_reply(packet, version, method, ident, seq, token):
                return


async def _ping_exec(
    address: IPAddress,
    timeout: float,  # noqa: ASYNC109
    source: IPAddress | None,
) -> str | None:
    argv = ["ping", "-n", "-q", "-c1", f"-W{max(1, math.ceil(timeout))}"]
    if source is not None:
        argv += ["-I", str(source)]
    argv.append(str(address))
    return await run_command(argv, {}, timeout)
