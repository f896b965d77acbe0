"""Links and addresses over rtnetlink (pyroute2 ``AsyncIPRoute``), one object at a time.

Nothing here flushes: addresses are added and deleted individually, links are only ever
created as ``dummy`` and deleted by index. Our objects carry kernel-side tags:
- links: the alias (IFLA_IFALIAS) ``bgp-lb``;
- addresses: the address protocol (IFA_PROTO, Linux >= 6.1) :data:`ADDRESS_PROTO`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute

from ..model import IPAddress
from .bounded import EXISTS, MISSING, KernelCallError, bounded, changed, collect

LINK_ALIAS = "bgp-lb"
ADDRESS_PROTO = 0xBB  # any value the kernel does not use itself (0-3); shown by `ip -d addr`
IFF_UP = 0x1
IFA_F_NODAD = 0x02


@dataclass(frozen=True)
class KernelLink:
    index: int
    name: str
    kind: str | None  # "dummy", "veth", ... (None for lo / physical NICs)
    alias: str | None
    up: bool

    @property
    def tagged(self) -> bool:
        return self.kind == "dummy" and self.alias == LINK_ALIAS


@dataclass(frozen=True)
class KernelAddress:
    index: int
    ifname: str
    address: IPAddress
    prefixlen: int
    proto: int | None  # IFA_PROTO; None when unset (the kernel omits 0)

    @property
    def host_route(self) -> bool:
        return self.prefixlen == self.address.max_prefixlen


def _link(msg: Any) -> KernelLink:
    return KernelLink(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
        alias=msg.get_attr("IFLA_IFALIAS"),
        up=bool(int(msg["flags"]) & IFF_UP),
    )


def _address(msg: Any, names: dict[int, str]) -> KernelAddress | None:
    raw = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    if raw is None:
        return None
    index = int(msg["index"])
    proto = msg.get_attr("IFA_PROTO")
    return KernelAddress(
        index=index,
        ifname=names.get(index, f"if{index}"),
        address=ipaddress.ip_address(raw),
        prefixlen=int(msg["prefixlen"]),
        proto=int(proto) if proto else None,
    )


class Rtnl:
    """One rtnetlink handle in one network namespace (None = ours)."""

    def __init__(self, netns: str | None, timeout: float) -> None:
        self._netns = netns
        self._timeout = timeout
        self._sock: Any = None

    async def open(self) -> None:
        if self._sock is None:
            self._sock = AsyncIPRoute(netns=self._netns) if self._netns else AsyncIPRoute()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        await self.open()
        try:
            return await bounded(
                collect(getattr(self._sock, method)(*args, **kwargs)), self._timeout, what
            )
        except KernelCallError as e:
            if e.code == 0:  # a timeout: the socket may hold a stale answer
                self.close()
            raise

    async def links(self) -> list[KernelLink]:
        return [_link(m) for m in await self._call("dump links", "link", "dump")]

    async def addresses(self, links: list[KernelLink]) -> list[KernelAddress]:
        names = {x.index: x.name for x in links}
        msgs = await self._call("dump addresses", "addr", "dump")
        return [a for a in (_address(m, names) for m in msgs) if a is not None]

    async def add_dummy(self, name: str) -> bool:
        """Create a dummy link; False if a link of that name already exists."""
        return await changed(
            self._call(f"create dummy link {name}", "link", "add", ifname=name, kind="dummy"),
            EXISTS,
        )

    async def tag_and_raise(self, link: KernelLink) -> None:
        """Give the link our alias and bring it up (both no-ops if already so)."""
        if link.alias != LINK_ALIAS:
            await self._call(
                f"set alias of {link.name}", "link", "set", index=link.index, ifalias=LINK_ALIAS
            )
        if not link.up:
            await self._call(f"bring {link.name} up", "link", "set", index=link.index, state="up")

    async def delete_link(self, link: KernelLink) -> bool:
        return await changed(
            self._call(f"delete link {link.name}", "link", "del", index=link.index),
            MISSING,
        )

    async def add_address(self, index: int, ifname: str, address: IPAddress) -> bool:
        """Add ``address`` as a host address with our tag; False if it is already there."""
        extra: dict[str, Any] = {"flags": IFA_F_NODAD} if address.version == 6 else {}
        return await changed(
            self._call(
                f"add {address}/{address.max_prefixlen} to {ifname}",
                "addr",
                "add",
                index=index,
                address=str(address),
                prefixlen=address.max_prefixlen,
                proto=ADDRESS_PROTO,
                **extra,
            ),
            EXISTS,
        )

    async def delete_address(self, addr: KernelAddress) -> bool:
        return await changed(
            self._call(
                f"delete {addr.address}/{addr.prefixlen} from {addr.ifname}",
                "addr",
                "del",
                index=addr.index,
                address=str(addr.address),
                prefixlen=addr.prefixlen,
            ),
            MISSING,
        )
