"""The ``exec`` lines of a topology node that the lab runner understands.

containerlab runs a node's ``exec`` lines inside the container after the links exist. The lab
runner supports exactly these forms (``-4``/``-6`` optional, checked against the addresses):

    ip [-4|-6] addr|address add PREFIX/LEN dev IFACE [nodad]
    ip [-4|-6] route add DEST via GATEWAY [dev IFACE]
    ip [-4|-6] route add DEST nexthop via GATEWAY [dev IFACE] nexthop via GATEWAY [dev IFACE] ...
    ip link set [dev] IFACE up
    ip link add NAME type bridge                 (a switch node: one L2 segment)
    ip link set [dev] IFACE master BRIDGE

Each line is parsed into a typed command and rendered back into an ``ip -batch`` line.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SUPPORTED_FORMS = (
    "ip [-4|-6] addr add PREFIX/LEN dev IFACE [nodad]",
    "ip [-4|-6] route add DEST via GATEWAY [dev IFACE]",
    "ip [-4|-6] route add DEST nexthop via GATEWAY [dev IFACE] nexthop via ...",
    "ip link set [dev] IFACE up",
    "ip link add NAME type bridge",
    "ip link set [dev] IFACE master BRIDGE",
)


class ExecLineError(ValueError):
    """An ``exec`` line outside the supported subset; the message says why."""


@dataclass(frozen=True)
class AddrAdd:
    iface: str
    address: IPInterface
    nodad: bool = False

    def batch_line(self) -> str:
        return f"addr add {self.address} dev {self.iface}" + (" nodad" if self.nodad else "")

    @property
    def interfaces(self) -> tuple[str, ...]:
        return (self.iface,)


@dataclass(frozen=True)
class NextHop:
    gateway: IPAddress
    dev: str | None = None

    def words(self) -> str:
        return f"via {self.gateway}" + (f" dev {self.dev}" if self.dev else "")


@dataclass(frozen=True)
class RouteAdd:
    dest: IPNetwork
    nexthops: tuple[NextHop, ...]

    def batch_line(self) -> str:
        if len(self.nexthops) == 1:
            return f"route add {self.dest} {self.nexthops[0].words()}"
        hops = " ".join(f"nexthop {h.words()}" for h in self.nexthops)
        return f"route add {self.dest} {hops}"

    @property
    def interfaces(self) -> tuple[str, ...]:
        return tuple(h.dev for h in self.nexthops if h.dev)


@dataclass(frozen=True)
class LinkUp:
    iface: str

    def batch_line(self) -> str:
        return f"link set dev {self.iface} up"

    @property
    def interfaces(self) -> tuple[str, ...]:
        return (self.iface,)


@dataclass(frozen=True)
class BridgeAdd:
    name: str

    def batch_line(self) -> str:
        return f"link add {self.name} type bridge"

    @property
    def interfaces(self) -> tuple[str, ...]:
        return ()  # it creates its interface: nothing to check against the links


@dataclass(frozen=True)
class LinkMaster:
    iface: str
    master: str

    def batch_line(self) -> str:
        return f"link set dev {self.iface} master {self.master}"

    @property
    def interfaces(self) -> tuple[str, ...]:
        return (self.iface, self.master)


NetCommand = AddrAdd | RouteAdd | LinkUp | BridgeAdd | LinkMaster


def parse_exec_line(line: str) -> NetCommand:
    """Parse one ``exec`` line; raise :class:`ExecLineError` for anything unsupported."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise ExecLineError(f"cannot split {line!r}: {e}") from None
    if not words or words[0] != "ip":
        raise ExecLineError(_unsupported(line, "only `ip` commands are supported"))
    words = words[1:]
    family: int | None = None
    if words and words[0] in ("-4", "-6"):
        family = int(words[0][1])
        words = words[1:]
    if len(words) < 2:
        raise ExecLineError(_unsupported(line, "incomplete command"))
    obj, verb, rest = words[0], words[1], words[2:]
    if obj in ("addr", "address") and verb == "add":
        return _addr(line, rest, family)
    if obj == "route" and verb == "add":
        return _route(line, rest, family)
    if obj == "link" and verb == "set" and family is None:
        return _link(line, rest)
    if obj == "link" and verb == "add" and family is None:
        if len(rest) != 3 or rest[1:] != ["type", "bridge"]:
            raise ExecLineError(_unsupported(line, "expected `link add NAME type bridge`"))
        return BridgeAdd(name=rest[0])
    raise ExecLineError(_unsupported(line, f"`ip {obj} {verb}` is not supported"))


def _unsupported(line: str, why: str) -> str:
    return f"{why} in {line!r}; the lab runner supports: " + "; ".join(SUPPORTED_FORMS)


def _check_family(line: str, family: int | None, version: int) -> None:
    if family is not None and family != version:
        raise ExecLineError(f"`-{family}` with an IPv{version} address in {line!r}")


def _addr(line: str, rest: list[str], family: int | None) -> AddrAdd:
    nodad = bool(rest) and rest[-1] == "nodad"
    if nodad:
        rest = rest[:-1]
    if len(rest) != 3 or rest[1] != "dev":
        raise ExecLineError(_unsupported(line, "expected `addr add PREFIX/LEN dev IFACE [nodad]`"))
    if "/" not in rest[0]:
        raise ExecLineError(f"{rest[0]!r} needs a prefix length in {line!r}")
    try:
        address = ipaddress.ip_interface(rest[0])
    except ValueError as e:
        raise ExecLineError(f"{e} in {line!r}") from None
    _check_family(line, family, address.version)
    if nodad and address.version == 4:
        raise ExecLineError(f"`nodad` is IPv6 only in {line!r}")
    return AddrAdd(iface=rest[2], address=address, nodad=nodad)


def _route(line: str, rest: list[str], family: int | None) -> RouteAdd:
    if not rest:
        raise ExecLineError(_unsupported(line, "missing destination"))
    try:
        dest = ipaddress.ip_network(rest[0])
    except ValueError as e:
        raise ExecLineError(f"{e} in {line!r}") from None
    _check_family(line, family, dest.version)
    words = rest[1:]
    if words[:1] == ["via"]:
        hops = [_nexthop(line, words)]
    elif words[:1] == ["nexthop"]:
        hops = []
        groups: list[list[str]] = []
        for w in words:
            if w == "nexthop":
                groups.append([])
            else:
                groups[-1].append(w)
        hops = [_nexthop(line, g) for g in groups]
    else:
        raise ExecLineError(
            _unsupported(line, "expected `via GATEWAY` or `nexthop via GATEWAY ...`")
        )
    for h in hops:
        if h.gateway.version != dest.version:
            raise ExecLineError(f"gateway {h.gateway} does not match {dest} in {line!r}")
    if len({h.gateway for h in hops}) != len(hops):
        raise ExecLineError(f"duplicate gateway in {line!r}")
    return RouteAdd(dest=dest, nexthops=tuple(hops))


def _nexthop(line: str, words: list[str]) -> NextHop:
    if len(words) not in (2, 4) or words[0] != "via" or (len(words) == 4 and words[2] != "dev"):
        raise ExecLineError(_unsupported(line, "expected `via GATEWAY [dev IFACE]`"))
    try:
        gateway = ipaddress.ip_address(words[1])
    except ValueError as e:
        raise ExecLineError(f"{e} in {line!r}") from None
    return NextHop(gateway=gateway, dev=words[3] if len(words) == 4 else None)


def _link(line: str, rest: list[str]) -> LinkUp | LinkMaster:
    if rest[:1] == ["dev"]:
        rest = rest[1:]
    if len(rest) == 3 and rest[1] == "master":
        return LinkMaster(iface=rest[0], master=rest[2])
    if len(rest) != 2 or rest[1] != "up":
        raise ExecLineError(
            _unsupported(line, "expected `link set [dev] IFACE up` or `... IFACE master BRIDGE`")
        )
    return LinkUp(iface=rest[0])
