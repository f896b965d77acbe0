"""Pure: the kernel knobs a config wants in the agent's network namespace.

Pool mode (any service with ``preserve_connections``) wants mid-flow packets accepted
(``vs.sloppy_tcp``, ``vs.sloppy_sctp``) and no conntrack for IPVS traffic (``vs.conntrack=0``:
with direct routing the node sees one direction only). ``node.ipvs`` (given, or its defaults
in pool mode) bounds what sloppy entries cost: the memory defense (``vs.amemthresh``,
``vs.drop_entry``) and the connection timeouts (IPVS_CMD_SET_CONFIG).
``node.connection_sync`` wants a master and a backup sync daemon. docs/forwarding.md.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from ..config import Config
from ..config.schema import IpvsKnobsConfig

VS = "net.ipv4.vs."
SLOPPY_TCP = VS + "sloppy_tcp"
SLOPPY_SCTP = VS + "sloppy_sctp"
CONNTRACK = VS + "conntrack"
AMEMTHRESH = VS + "amemthresh"
DROP_ENTRY = VS + "drop_entry"

# why each sysctl holds its value (status, check-node)
WHY = {
    SLOPPY_TCP: "pool mode: a TCP flow moved here mid-flow is forwarded, not reset",
    SLOPPY_SCTP: "pool mode: an SCTP association moved here mid-flow is forwarded",
    CONNTRACK: "pool mode: direct routing shows one direction only; conntrack would see "
    "every flow half-open",
    AMEMTHRESH: "the memory defense starts below this many free pages",
    DROP_ENTRY: "the memory defense drops half-open and barely used entries (stray ACKs)",
}


class SyncRole(Enum):
    MASTER = "master"  # IP_VS_STATE_MASTER: sends this node's entries
    BACKUP = "backup"  # IP_VS_STATE_BACKUP: receives the other nodes'

    @property
    def state(self) -> int:
        return 1 if self is SyncRole.MASTER else 2


@dataclass(frozen=True)
class IpvsTimeouts:
    tcp: int
    tcp_fin: int
    udp: int


@dataclass(frozen=True)
class SyncDaemon:
    """One sync daemon as started, and as GET_DAEMON reports it. ``maxlen`` None: the
    kernel's choice (any value it reports matches)."""

    role: SyncRole
    interface: str
    sync_id: int
    group: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    ttl: int
    maxlen: int | None = None

    def matches(self, observed: SyncDaemon) -> bool:
        """``observed`` (from the kernel) runs with the parameters this one asks for."""
        wanted = (self.role, self.interface, self.sync_id, self.group, self.port, self.ttl)
        got = (
            observed.role,
            observed.interface,
            observed.sync_id,
            observed.group,
            observed.port,
            observed.ttl,
        )
        return wanted == got and (self.maxlen is None or self.maxlen == observed.maxlen)


@dataclass(frozen=True)
class Knobs:
    """What the config wants. Empty sysctls/no timeouts/no daemons: nothing to keep."""

    sysctls: tuple[tuple[str, int], ...] = ()
    timeouts: IpvsTimeouts | None = None
    daemons: tuple[SyncDaemon, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.sysctls and self.timeouts is None and not self.daemons


def pool_mode(config: Config) -> bool:
    return any(s.preserve_connections for s in config.services)


def desired_knobs(config: Config) -> Knobs:
    pool = pool_mode(config)
    ipvs = config.node.ipvs or (IpvsKnobsConfig() if pool else None)
    sysctls: list[tuple[str, int]] = []
    if pool:
        sysctls += [(SLOPPY_TCP, 1), (SLOPPY_SCTP, 1), (CONNTRACK, 0)]
    timeouts = None
    if ipvs is not None:
        sysctls += [(AMEMTHRESH, ipvs.amemthresh), (DROP_ENTRY, ipvs.drop_entry)]
        timeouts = IpvsTimeouts(ipvs.tcp_timeout, ipvs.tcp_fin_timeout, ipvs.udp_timeout)
    daemons: tuple[SyncDaemon, ...] = ()
    sync = config.node.connection_sync
    if sync is not None:
        daemons = tuple(
            SyncDaemon(
                role=role,
                interface=sync.interface,
                sync_id=sync.sync_id,
                group=sync.group,
                port=sync.port,
                ttl=sync.ttl,
                maxlen=sync.maxlen,
            )
            for role in SyncRole
        )
    return Knobs(tuple(sysctls), timeouts, daemons)


def sysctl_holds(key: str, want: int, got: int) -> bool:
    """``got`` (read back) is what ``want`` asks for. The kernel itself flips ``drop_entry``
    between 1 and 2 (automatic mode, off/on): both are the automatic mode."""
    if key == DROP_ENTRY and want in (1, 2):
        return got in (1, 2)
    return want == got
