"""Which checks a config asks for, and where each one points (address and port resolved).

Service-level checks (``ServiceConfig.checks``) default to the node's own backend address
(``node.local_backend_v4``) and the service's first target port; real-server checks default to
the real server's address and its port (or the service's first target port). A check's own
``address``/``port`` fields win.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..config import (
    Check,
    Config,
    ExecCheck,
    HttpCheck,
    IcmpCheck,
    RealServerConfig,
    ServiceConfig,
    TcpCheck,
)
from ..model import IPAddress
from .tracker import CheckKey


@dataclass(frozen=True)
class ResolvedCheck:
    """A check spec plus where it points. ``address``/``port`` are None where they do not
    apply (icmp and exec checks) or could not be resolved (a tcp/http check without a port
    then fails every probe with a clear error)."""

    key: CheckKey
    check: Check
    address: IPAddress | None = None
    port: int | None = None

    def same_target(self, other: ResolvedCheck) -> bool:
        """Both probe the same thing the same way; only timing fields may differ
        (:meth:`~bgplb.config.CheckBase.probe_identity`)."""
        return self.identity() == other.identity()

    def identity(self) -> tuple[Any, ...]:
        return (self.key, self.address, self.port, self.check.probe_identity())

    @property
    def interval(self) -> float:
        return self.check.interval

    @property
    def fast_interval(self) -> float:
        return self.check.fast_interval or self.check.interval

    @property
    def timeout(self) -> float:
        return self.check.timeout

    @property
    def rise(self) -> int:
        return self.check.rise

    @property
    def fall(self) -> int:
        return self.check.fall


def hostport(address: IPAddress, port: int | None) -> str:
    """``addr:port``, ``[v6]:port``, or just the address when there is no port."""
    if port is None:
        return str(address)
    if isinstance(address, ipaddress.IPv6Address):
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def target_address(target: str) -> str:
    """The address part of a :func:`hostport` string (``[v6]:port``, ``v4:port``, bare)."""
    if target.startswith("["):
        return target[1 : target.index("]")]
    if target.count(":") == 1:
        return target.split(":")[0]
    return target


def first_target_port(service: ServiceConfig) -> int | None:
    return service.ports[0].target if service.ports else None


def real_server_port(service: ServiceConfig, server: RealServerConfig) -> int | None:
    return server.port if server.port is not None else first_target_port(service)


def real_server_target(service: ServiceConfig, server: RealServerConfig) -> str:
    """The ``CheckKey.target`` of ``server``'s checks (``addr:port`` / ``[v6]:port``)."""
    return hostport(server.address, real_server_port(service, server))


def resolve_check(
    key: CheckKey, check: Check, address: IPAddress, port: int | None
) -> ResolvedCheck:
    """Apply the check's own ``address``/``port`` over the defaults."""
    if isinstance(check, HttpCheck | TcpCheck):
        return ResolvedCheck(
            key=key,
            check=check,
            address=check.address or address,
            port=check.port if check.port is not None else port,
        )
    if isinstance(check, IcmpCheck | ExecCheck):
        return ResolvedCheck(key=key, check=check)
    raise TypeError(f"unknown check type {type(check).__name__}")  # pragma: no cover


def resolve_checks(config: Config) -> dict[CheckKey, ResolvedCheck]:
    """Every check of ``config`` by key, in config order. A duplicate key (the config
    validator rejects those) keeps its first occurrence."""
    out: dict[CheckKey, ResolvedCheck] = {}
    node_address = config.node.local_backend_v4
    for service in config.services:
        for check in service.checks:
            key = CheckKey(service.name, None, check.label)
            out.setdefault(key, resolve_check(key, check, node_address, first_target_port(service)))
        for server in service.real_servers:
            target = real_server_target(service, server)
            port = real_server_port(service, server)
            for check in server.checks:
                key = CheckKey(service.name, target, check.label)
                out.setdefault(key, resolve_check(key, check, server.address, port))
    return out
