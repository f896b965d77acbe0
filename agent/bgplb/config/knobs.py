"""`node.ipvs` and `node.connection_sync`: the kernel knobs of pool mode (docs/forwarding.md)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from .base import Strict, check_ifname
from .fields import IPAddr

# the largest timeout the kernel takes: INT_MAX / HZ seconds at HZ=1000
MAX_IPVS_TIMEOUT = 2147483


class IpvsKnobsConfig(Strict):
    """``node.ipvs``: IPVS connection timeouts (set through IPVS_CMD_SET_CONFIG) and the
    memory defense (sysctls). In force when given, and with these defaults in pool mode
    (a service with ``preserve_connections``). docs/config.md justifies the defaults."""

    tcp_timeout: int = Field(default=300, ge=1, le=MAX_IPVS_TIMEOUT)  # kernel default 900
    tcp_fin_timeout: int = Field(default=60, ge=1, le=MAX_IPVS_TIMEOUT)  # kernel default 120
    udp_timeout: int = Field(default=300, ge=1, le=MAX_IPVS_TIMEOUT)  # kernel default 300
    amemthresh: int = Field(default=32768, ge=0, le=2147483647)  # pages (128 MiB at 4 KiB)
    drop_entry: int = Field(default=1, ge=0, le=3)  # 0 never, 1/2 automatic, 3 always


class ConnectionSyncConfig(Strict):
    """``node.connection_sync``: the kernel's IPVS sync daemons (a master and a backup)."""

    interface: str  # the dedicated sync segment (docs/forwarding.md)
    sync_id: int = Field(default=0, ge=0, le=255)
    group: IPAddr = ipaddress.IPv4Address("224.0.0.81")
    port: int = Field(default=8848, ge=1, le=65535)
    ttl: int = Field(default=1, ge=1, le=255)
    # UDP payload per sync message; none = the interface's MTU minus the headers. The kernel
    # clamps smaller values, so values below 1472 (a 1500 MTU) are refused here.
    maxlen: int | None = Field(default=None, ge=1472, le=65487)

    @field_validator("interface")
    @classmethod
    def _ifname(cls, v: str) -> str:
        return check_ifname(v)

    @field_validator("group")
    @classmethod
    def _multicast(cls, v: ipaddress.IPv4Address | ipaddress.IPv6Address) -> object:
        if not v.is_multicast:
            raise PydanticCustomError(
                "multicast", "'{value}' is not a multicast address", {"value": str(v)}
            )
        return v
