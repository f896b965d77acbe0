"""The Go bgp-lb's command line (utilitywarehouse/bgp-lb), accepted unchanged.

``bgp-lb -config FILE [-log-level L] [-network-setup[=BOOL]] [-ipvs-setup[=BOOL]]
[-metrics-address ADDR]`` with no subcommand runs the agent with the Go binary's meanings and
defaults (docs/migrating-from-bgp-lb.md). The syntax is Go's ``flag`` package: ``-x`` or
``--x``; ``-x=v`` or ``-x v`` for a non-bool flag; a bool only as ``-x`` or ``-x=v`` (v as
Go's strconv.ParseBool); ``--`` or the first non-flag argument ends the flags. Pure: parsing
and the config adjustments; ``gocompat_entry.py`` runs it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from .config import Config
from .model import ServiceMode

GO_DEFAULT_CONFIG = "/etc/bgp-lb/config.json"
GO_LOG_LEVELS = ("debug", "info", "warning", "error")
GO_METRICS_ADDRESS = ":8081"
BOOL_FLAGS = frozenset({"network-setup", "ipvs-setup"})
VALUE_FLAGS = frozenset({"config", "log-level", "metrics-address"})
FLAGS = BOOL_FLAGS | VALUE_FLAGS
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

USAGE = """\
usage: bgp-lb [-config FILE] [-log-level LEVEL] [-network-setup[=BOOL]] [-ipvs-setup[=BOOL]]
              [-metrics-address ADDR]      (the Go bgp-lb's command line; see also bgp-lb -h)
  -config FILE            config file path (default /etc/bgp-lb/config.json)
  -log-level LEVEL        debug|info|warning|error (default info)
  -network-setup[=BOOL]   put the service address on a dummy interface named after the service
                          (default true); false: announce without touching interfaces
  -ipvs-setup[=BOOL]      also the IPVS virtual service to the local target port (default
                          false); only with -network-setup
  -metrics-address ADDR   metrics-only listener, [host]:port (default :8081)"""


class GoFlagError(Exception):
    """A command line the Go binary would refuse (exit 2)."""


class GoHelp(Exception):  # not an error: -h / -help print the usage, exit 0 (as Go)
    """``-h`` or ``-help`` among the Go flags."""


@dataclass(frozen=True)
class GoFlags:
    config: str = GO_DEFAULT_CONFIG
    log_level: str = "info"
    network_setup: bool = True
    ipvs_setup: bool = False
    metrics_address: str = GO_METRICS_ADDRESS

    @property
    def metrics_listen(self) -> tuple[str, int]:
        return parse_listen_address(self.metrics_address)

    def command_line(self) -> str:
        """The flags as the Go command line, every one explicit (reports, the doctor)."""
        return (
            f"-config {self.config} -log-level {self.log_level} "
            f"-network-setup={str(self.network_setup).lower()} "
            f"-ipvs-setup={str(self.ipvs_setup).lower()} -metrics-address {self.metrics_address}"
        )


def is_go_command_line(argv: Sequence[str]) -> bool:
    """The first argument is one of the Go binary's flags (``-config``, ``--ipvs-setup=1``);
    subcommands and our own options (``-h``, ``--version``) are never one."""
    if not argv:
        return False
    first = argv[0]
    if not first.startswith("-") or first in ("-", "--"):
        return False
    name = first[2:] if first.startswith("--") else first[1:]
    return name.partition("=")[0] in FLAGS


def parse_go_flags(argv: Sequence[str]) -> GoFlags:
    values: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name = arg[2:] if arg.startswith("--") else arg[1:]
        if not name or name[0] in "-=":
            raise GoFlagError(f"bad flag syntax: {arg}")
        name, eq, value = name.partition("=")
        if name in ("h", "help"):
            raise GoHelp
        if name not in FLAGS:
            raise GoFlagError(f"flag provided but not defined: -{name}")
        if name in BOOL_FLAGS:
            values[name] = _parse_bool(name, value) if eq else True
        elif eq:
            values[name] = value
        else:
            i += 1
            if i >= len(argv):
                raise GoFlagError(f"flag needs an argument: -{name}")
            values[name] = argv[i]
        i += 1
    if i < len(argv):
        raise GoFlagError(
            f"unexpected argument {argv[i]!r}: the Go bgp-lb command line has flags only"
        )
    flags = GoFlags(
        config=str(values.get("config", GO_DEFAULT_CONFIG)),
        log_level=str(values.get("log-level", "info")),
        network_setup=bool(values.get("network-setup", True)),
        ipvs_setup=bool(values.get("ipvs-setup", False)),
        metrics_address=str(values.get("metrics-address", GO_METRICS_ADDRESS)),
    )
    if flags.log_level not in GO_LOG_LEVELS:
        raise GoFlagError(
            f"-log-level {flags.log_level!r}: unsupported log level (debug|info|warning|error)"
        )
    if not flags.config:
        raise GoFlagError("-config: empty path")
    flags.metrics_listen  # noqa: B018  (raises GoFlagError on a bad address)
    return flags


def _parse_bool(name: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise GoFlagError(f'invalid boolean value "{value}" for -{name}: parse error')


def parse_listen_address(address: str) -> tuple[str, int]:
    """Go's ``host:port`` (``:8081`` all IPv4 addresses here, ``[::1]:9100``, ``localhost``)."""
    host, sep, port_text = address.rpartition(":")
    if not sep:
        raise GoFlagError(f"-metrics-address {address!r}: missing port (want [host]:port)")
    try:
        port = int(port_text)
    except ValueError:
        raise GoFlagError(f"-metrics-address {address!r}: bad port {port_text!r}") from None
    if not 1 <= port <= 65535:
        raise GoFlagError(f"-metrics-address {address!r}: port must be 1-65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "":
        return "0.0.0.0", port
    if host == "localhost":
        return "127.0.0.1", port
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        raise GoFlagError(
            f"-metrics-address {address!r}: host must be an IP address, localhost or empty"
        ) from None


def adjust_config(config: Config, flags: GoFlags) -> Config:
    """The config as the Go binary would run it: ``-network-setup=false``: every service in
    announce mode without looking for its VIP (nothing on any interface); without
    ``-ipvs-setup``: the dummy and the VIP, no IPVS virtual service (ports dropped); the
    metrics-only listener on ``-metrics-address``. Applied at start and on every reload."""
    services = []
    for svc in config.services:
        if not flags.network_setup:
            svc = svc.model_copy(
                update={
                    "mode": ServiceMode.ANNOUNCE,
                    "interface": None,
                    "require_vip": False,
                    "ports": (),
                    "real_servers": (),
                    "preserve_connections": False,
                }
            )
        elif not flags.ipvs_setup and svc.mode is ServiceMode.IPVS:
            svc = svc.model_copy(
                update={"ports": (), "real_servers": (), "preserve_connections": False}
            )
        services.append(svc)
    host, port = flags.metrics_listen
    api = config.node.api.model_copy(
        update={"metrics_listen": ipaddress.ip_address(host), "metrics_port": port}
    )
    log = config.node.log.model_copy(update={"level": flags.log_level})
    node = config.node.model_copy(update={"api": api, "log": log})
    return config.model_copy(update={"node": node, "services": tuple(services)})
