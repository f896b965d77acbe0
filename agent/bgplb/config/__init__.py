"""The configuration file: the only package that knows its formats.

``load_config(path)`` returns a frozen, validated :class:`Config` or raises :class:`ConfigError`
carrying every problem as ``ConfigIssue(path, message)``. Nothing else in the agent sees raw
dicts. Native YAML/JSON and the original Go bgp-lb's JSON (the "seed" format) are accepted.
"""

from __future__ import annotations

from .attributes import ServiceState, default_attributes, route_attributes
from .bandwidth import LinkBandwidthConfig
from .base import CHECK_NAME_RE, IFNAME_RE, SCHEDULERS, Strict
from .bfd import BfdConfig
from .crosschecks import check_against_host, check_config
from .fields import GSHUT
from .issues import ConfigError, ConfigIssue
from .loader import ParsedConfig, load, load_config, parse, parse_config, read_config_data
from .schema import (
    ApiConfig,
    AttributesConfig,
    Check,
    CheckBase,
    Config,
    ExecCheck,
    HttpCheck,
    IcmpCheck,
    LogConfig,
    NodeConfig,
    PeerConfig,
    PortConfig,
    RealServerConfig,
    ServiceConfig,
    StateAttributes,
    TcpCheck,
)

__all__ = [
    "CHECK_NAME_RE",
    "GSHUT",
    "IFNAME_RE",
    "SCHEDULERS",
    "ApiConfig",
    "AttributesConfig",
    "BfdConfig",
    "Check",
    "CheckBase",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ExecCheck",
    "HttpCheck",
    "IcmpCheck",
    "LinkBandwidthConfig",
    "LogConfig",
    "NodeConfig",
    "ParsedConfig",
    "PeerConfig",
    "PortConfig",
    "RealServerConfig",
    "ServiceConfig",
    "ServiceState",
    "StateAttributes",
    "Strict",
    "TcpCheck",
    "check_against_host",
    "check_config",
    "default_attributes",
    "load",
    "load_config",
    "parse",
    "parse_config",
    "read_config_data",
    "route_attributes",
]
