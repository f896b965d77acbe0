"""Network namespaces, veths and tiny HTTP servers/clients for the kernel tests.

Everything a :class:`Lab` creates lives in namespaces it created itself (names start with
``bk<pid>-``), and :meth:`Lab.close` deletes them all, which also removes every veth, dummy
link, address and IPVS service inside. Sockets are opened inside a namespace with
a helper thread that entered it (setns is per thread), so servers and clients all run in the
test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import AsyncIPRoute, netns

IFA_F_NODAD = 0x02
CLONE_NEWNET = 0x40000000

T = TypeVar("T")
IO_TIMEOUT = 20.0  # generous: the guest runs under TCG, several times slower than the host


def kernel_unavailable_reason() -> str | None:
    """Why the dataplane kernel tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, IPVS)"
    if not Path("/proc/net/ip_vs").exists():
        return "this kernel has no IPVS loaded (run `make test-kernel`: it boots one that has)"
    if not Path("/sys/module/dummy").exists():
        return "this kernel has no dummy links loaded (run `make test-kernel`)"
    return None


def enter_netns(ns: str) -> None:
    """Move the calling *thread* into namespace ``ns`` (setns(2) is per thread)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({ns})")
    finally:
        os.close(fd)


def write_sysctl(key: str, value: str | int) -> None:
    """Net sysctls are per network namespace: that of the calling thread."""
    Path("/proc/sys", *key.split(".")).write_text(f"{value}\n")


@dataclass
class Lab:
    prefix: str = field(default_factory=lambda: f"bk{os.getpid()}-")
    namespaces: list[str] = field(default_factory=list)
    servers: list[asyncio.Server] = field(default_factory=list)
    threads: dict[str, ThreadPoolExecutor] = field(default_factory=dict)  # one per namespace
    hits: dict[str, int] = field(default_factory=dict)  # server name -> requests served

    def netns(self, role: str) -> str:
        name = self.prefix + role
        netns.create(name)
        self.namespaces.append(name)
        return name

    async def in_netns(self, ns: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a thread that lives in ``ns`` (sockets, sysctls)."""
        if ns not in self.threads:
            self.threads[ns] = ThreadPoolExecutor(1, ns, initializer=enter_netns, initargs=(ns,))
        return await asyncio.get_running_loop().run_in_executor(self.threads[ns], fn, *args)

    async def sysctl(self, ns: str, values: dict[str, int]) -> None:
        for key, value in values.items():
            await self.in_netns(ns, write_sysctl, key, value)

    async def up(self, ns: str) -> None:
        async with AsyncIPRoute(netns=ns) as ipr:
            await ipr.link("set", index=1, state="up")

    async def wire(
        self, a: str, a_if: str, a_addrs: Sequence[str], b: str, b_if: str, b_addrs: Sequence[str]
    ) -> None:
        """A veth between namespaces ``a`` and ``b``, both ends up, with addresses (CIDR)."""
        async with AsyncIPRoute(netns=a) as ipr:
            await ipr.link("add", ifname=a_if, kind="veth", peer={"ifname": b_if, "net_ns_fd": b})
        for ns, ifname, addrs in ((a, a_if, a_addrs), (b, b_if, b_addrs)):
            async with AsyncIPRoute(netns=ns) as ipr:
                index = (await ipr.link_lookup(ifname=ifname))[0]
                for cidr in addrs:
                    iface = ipaddress.ip_interface(cidr)
                    extra = {"flags": IFA_F_NODAD} if iface.version == 6 else {}
                    await ipr.addr(
                        "add",
                        index=index,
                        address=str(iface.ip),
                        prefixlen=iface.network.prefixlen,
                        **extra,
                    )
                await ipr.link("set", index=index, state="up")

    async def default_route(self, ns: str, *gateways: str) -> None:
        async with AsyncIPRoute(netns=ns) as ipr:
            for gw in gateways:
                dst = "0.0.0.0/0" if ipaddress.ip_address(gw).version == 4 else "::/0"
                await ipr.route("add", dst=dst, gateway=gw)

    async def http_server(self, ns: str, address: str, port: int, name: str) -> None:
        """Answers every request with its ``name`` and counts hits in ``self.hits[name]``."""
        self.hits.setdefault(name, 0)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = await self.in_netns(ns, socket.socket, family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(64)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                self.hits[name] += 1
                body = name.encode()
                writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
            finally:
                writer.close()

        self.servers.append(await asyncio.start_server(handle, sock=sock))

    async def http_get(self, ns: str, address: str, port: int) -> str:
        """One HTTP/1.0 request from inside ``ns``; returns the body."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock: socket.socket = await self.in_netns(ns, socket.socket, family, socket.SOCK_STREAM)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(IO_TIMEOUT):
                await loop.sock_connect(sock, (address, port))
                await loop.sock_sendall(sock, b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
                data = b""
                while chunk := await loop.sock_recv(sock, 4096):
                    data += chunk
        finally:
            sock.close()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200"), head
        return body.decode()

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()
        for pool in self.threads.values():
            pool.shutdown()
        self.threads.clear()
        for ns in reversed(self.namespaces):
            with contextlib.suppress(OSError):
                netns.remove(ns)
        self.namespaces.clear()
