"""The fleet file: every LB node, the routers they peer with and the services they carry.

Frozen pydantic models in the config package's style (:class:`~bgplb.config.Strict`: unknown keys
refused, no control characters). ``defaults`` and ``nodes[].node`` are partial ``node`` sections
of the agent's config; they are merged (deep, the node's keys win) and validated as the agent's
own :class:`~bgplb.config.NodeConfig` in :mod:`.nodes`, which maps errors back to the fleet
file's paths. docs/fleet.md documents every key.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..config import CHECK_NAME_RE, IFNAME_RE, Check, ServiceConfig, Strict
from ..config.fields import IPAddr, IPv4Addr, IPv6Addr
from ..model import ForwardMethod

# a DNS label: the node's hostname, its directory in OUT/ and part of its instance-id
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
PEER_GROUP_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
SSH_KEY_RE = re.compile(r"^(ssh-|ecdsa-|sk-)[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+( .*)?$")


def _match(pattern: re.Pattern[str], kind: str, what: str, v: str) -> str:
    if not pattern.match(v):
        raise PydanticCustomError(kind, "'{value}' is not {what}", {"value": v, "what": what})
    return v


# --------------------------------------------------------------------------- routers


class BfdSpec(Strict):
    """BFD on a router's sessions: FRR's ``bfd profile`` (and the agent's ``peers[].bfd`` when
    the agent has it)."""

    interval_ms: int = Field(default=300, ge=10, le=60000)
    multiplier: int = Field(default=3, ge=2, le=255)


class RouterSpec(Strict):
    name: str  # the agent's peers[].name on every node, and OUT/routers/<name>.frr.conf
    asn: int = Field(ge=1, le=4294967295)
    hold_time: int | None = Field(default=None, ge=0, le=65535)  # None: the agent's default
    multihop: int | None = Field(default=None, ge=1, le=255)
    maximum_paths: int = Field(default=8, ge=1, le=64)  # FRR's ECMP width (its build limit: 64)
    peer_group: str = "BGPLB"
    # a local file holding the TCP-MD5 key of every session to this router (read at render time)
    md5_password_source: Path | None = None
    bfd: BfdSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _match(
            CHECK_NAME_RE, "router_name", "a valid router name (1-64 of A-Z a-z 0-9 _ . : -)", v
        )

    @field_validator("peer_group")
    @classmethod
    def _group(cls, v: str) -> str:
        return _match(PEER_GROUP_RE, "peer_group", "a valid FRR peer-group name", v)

    @field_validator("hold_time")
    @classmethod
    def _rfc4271(cls, v: int | None) -> int | None:
        if v is not None and 0 < v < 3:
            raise PydanticCustomError(
                "hold_time", "hold time {value} s: must be 0 or at least 3 (RFC 4271)", {"value": v}
            )
        return v


# --------------------------------------------------------------------------- nodes


class SessionSpec(Strict):
    """One BGP session of a node: to ``router``, at the router's ``address``."""

    router: str
    address: IPAddr  # the router's address (the node's peer)
    local_address: IPAddr | None = None  # the node's address (default: its router_id)
    next_hop_v4: IPv4Addr | None = None
    next_hop_v6: IPv6Addr | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    passive: bool | None = None
    hold_time: int | None = Field(default=None, ge=0, le=65535)  # default: the router's


class InterfaceRoute(Strict):
    to: ipaddress.IPv4Network | ipaddress.IPv6Network
    via: IPAddr


class InterfaceSpec(Strict):
    name: str
    mac: str | None = None  # match the NIC by MAC (and name it ``name``)
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...] = ()
    gateway4: IPv4Addr | None = None
    gateway6: IPv6Addr | None = None
    routes: tuple[InterfaceRoute, ...] = ()
    mtu: int | None = Field(default=None, ge=576, le=65535)
    dhcp4: bool = False
    dhcp6: bool = False

    @field_validator("name")
    @classmethod
    def _ifname(cls, v: str) -> str:
        return _match(IFNAME_RE, "ifname", "a valid Linux interface name", v)

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        return None if v is None else _match(MAC_RE, "mac", "a MAC address", v).lower()

    @model_validator(mode="after")
    def _gateways(self) -> InterfaceSpec:
        v4 = [a for a in self.addresses if a.version == 4]
        v6 = [a for a in self.addresses if a.version == 6]
        if self.gateway4 is not None and not v4:
            raise PydanticCustomError("gateway", "gateway4 needs an IPv4 address in addresses", {})
        if self.gateway6 is not None and not v6:
            raise PydanticCustomError("gateway", "gateway6 needs an IPv6 address in addresses", {})
        if not self.addresses and not (self.dhcp4 or self.dhcp6):
            raise PydanticCustomError(
                "no_address", "an interface needs addresses, dhcp4 or dhcp6", {}
            )
        return self


class NetworkSpec(Strict):
    """The node's network-config (cloud-init v2, or v1 with ``--network-config v1``)."""

    interfaces: tuple[InterfaceSpec, ...] = Field(min_length=1)
    nameservers: tuple[IPAddr, ...] = ()
    search: tuple[str, ...] = ()


class NodeSpec(Strict):
    name: str
    node: dict[str, Any] = Field(default_factory=dict)  # the agent's node section, over defaults
    sessions: tuple[SessionSpec, ...] = Field(min_length=1)
    services: tuple[str, ...] | None = None  # the fleet's services this node carries; None: all
    network: NetworkSpec | None = None
    ssh_authorized_keys: tuple[str, ...] = ()  # added to the fleet's
    api_token_source: Path | None = None  # default: the fleet's

    @field_validator("name")
    @classmethod
    def _hostname(cls, v: str) -> str:
        return _match(HOSTNAME_RE, "hostname", "a valid host name (a DNS label)", v)

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_match(SSH_KEY_RE, "ssh_key", "an OpenSSH public key line", k) for k in v)


# --------------------------------------------------------------------------- services


class LocalRealServer(Strict):
    """A real server on every node itself: one at its backend_v4 (or router_id) and, when it
    has one, one at its backend_v6. Fields as in services[].real_servers[] (no address)."""

    port: int | None = Field(default=None, ge=1, le=65535)
    weight: int | None = Field(default=None, ge=0, le=65535)
    forward: ForwardMethod | None = None
    checks: tuple[Check, ...] | None = None


class FleetService(ServiceConfig):
    """A service of the agent's config, plus ``local_real_server``."""

    local_real_server: LocalRealServer | None = None


class FleetFile(Strict):
    defaults: dict[str, Any] = Field(default_factory=dict)  # node section keys every node shares
    ssh_authorized_keys: tuple[str, ...] = ()
    api_token_source: Path | None = None  # a local file: the API token every node gets
    routers: tuple[RouterSpec, ...] = Field(min_length=1)
    nodes: tuple[NodeSpec, ...] = Field(min_length=1)
    services: tuple[FleetService, ...] = ()

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_match(SSH_KEY_RE, "ssh_key", "an OpenSSH public key line", k) for k in v)

    def router(self, name: str) -> RouterSpec | None:
        return next((r for r in self.routers if r.name == name), None)
