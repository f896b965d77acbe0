"""The original Go bgp-lb's JSON config (utilitywarehouse/bgp-lb), accepted unchanged.

``{"bgp": {"peers": [...], "local": {...}}, "service": {...}}`` is validated with its own
strict models (errors use the seed's key names) and converted to the native layout. Each
choice the conversion makes that the file does not spell out is returned as a note; see
docs/config.md ("The seed format") for the full mapping.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..model import Protocol
from .fields import IPAddr, IPv4Addr
from .issues import ConfigIssue, issues_from_validation

SEED_KEYS = frozenset({"bgp", "service"})
SEED_DEFAULT_PING = ("1.1.1.1", "8.8.8.8")  # what the original pings when no check is set
SEED_SCHEDULER = "rr"  # the original's IPVS scheduler


class _Seed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


class SeedPeer(_Seed):
    address: IPAddr
    as_: int = Field(alias="as", ge=1, le=4294967295)


class SeedLocal(_Seed):
    router_id: IPv4Addr = Field(alias="routerID")
    as_: int = Field(alias="as", ge=1, le=4294967295)
    listen_port: int = Field(default=-1, alias="listenPort", ge=-1, le=65535)


class SeedBgp(_Seed):
    peers: tuple[SeedPeer, ...] = Field(min_length=1)
    local: SeedLocal


class SeedPort(_Seed):
    service_port: int = Field(alias="servicePort", ge=1, le=65535)
    target_local_port: int = Field(alias="targetLocalPort", ge=1, le=65535)


class SeedHttpCheck(_Seed):
    port: int = Field(ge=1, le=65535)
    path: str = ""
    scheme: str = "http"
    insecure_skip_verify: bool = Field(default=False, alias="insecureSkipVerify")

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if v.lower() not in ("http", "https", ""):
            raise ValueError(f"scheme {v!r}: expected http or https")
        return v.lower() or "http"


class SeedPingCheck(_Seed):
    addresses: tuple[IPAddr, ...] = Field(min_length=1)


class SeedService(_Seed):
    name: str
    ip: IPAddr
    prefix_length: int = Field(default=32, alias="prefixLength", ge=0, le=128)
    ports: tuple[SeedPort, ...] = ()
    protocol: str | None = None
    httphealthcheck: SeedHttpCheck | None = None
    pinghealthcheck: SeedPingCheck | None = None

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v: str | None) -> str | None:
        if v is not None and v.lower() not in {p.value for p in Protocol}:
            raise ValueError(f"protocol {v!r}: expected tcp, udp or sctp")
        return v.lower() if v is not None else None


class SeedConfig(_Seed):
    bgp: SeedBgp
    service: SeedService


def is_seed_format(data: object) -> bool:
    """The seed layout has ``bgp``/``service`` at the top and none of the native keys."""
    if not isinstance(data, dict):
        return False
    keys = {k.lower() for k in data if isinstance(k, str)}
    return bool(SEED_KEYS & keys) and not ({"node", "peers", "services"} & keys)


def convert_seed(data: object) -> tuple[dict[str, Any], list[str], list[ConfigIssue]]:
    """Native config data, notes on the choices made, and the seed-level problems."""
    try:
        seed = SeedConfig.model_validate(normalise_keys(data, SeedConfig))
    except ValidationError as e:
        return {}, [], _seed_issues(e)
    issues: list[ConfigIssue] = []
    notes: list[str] = []
    svc, local = seed.service, seed.bgp.local
    if svc.prefix_length != svc.ip.max_prefixlen:
        issues.append(
            ConfigIssue(
                "service.prefixLength",
                f"{svc.ip}/{svc.prefix_length} is not a host address: only /{svc.ip.max_prefixlen} "
                "VIPs are supported",
            )
        )
    for path, address in [("service.ip", svc.ip)] + [
        (f"bgp.peers[{i}].address", p.address) for i, p in enumerate(seed.bgp.peers)
    ]:
        if address.version != 4:
            issues.append(
                ConfigIssue(path, f"{address}: the seed format is IPv4-only; use the native format")
            )
    if svc.ports and svc.protocol is None:
        issues.append(ConfigIssue("service.protocol", "required with ports: tcp, udp or sctp"))
    if local.listen_port != -1:
        notes.append(
            f"bgp.local.listenPort {local.listen_port}: bgp-lb connects out to every peer and "
            "does not listen; the sessions come up the same way (the peers are not passive)"
        )
    service: dict[str, Any] = {
        "name": svc.name,
        "vips": [str(svc.ip)],
        "ports": [
            {
                "port": p.service_port,
                "target_port": p.target_local_port,
                "protocol": svc.protocol or "tcp",
                "scheduler": SEED_SCHEDULER,
            }
            for p in svc.ports
        ],
        "checks": _checks(svc, notes),
    }
    native = {
        "node": {"router_id": str(local.router_id), "local_as": local.as_},
        "peers": [{"address": str(p.address), "asn": p.as_} for p in seed.bgp.peers],
        "services": [service],
    }
    return native, notes, issues


def _checks(svc: SeedService, notes: list[str]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    if svc.httphealthcheck is not None:
        hc = svc.httphealthcheck
        checks.append(
            {
                "type": hc.scheme,
                "port": hc.port,
                "path": hc.path if hc.path.startswith("/") else "/" + hc.path,
                "verify_tls": not hc.insecure_skip_verify,
            }
        )
        notes.append(
            "service.httphealthcheck: probed on the router id (the IPVS backend address) "
            "instead of 127.0.0.1; expects any 2xx as before"
        )
    if svc.pinghealthcheck is not None:
        addresses = [str(a) for a in svc.pinghealthcheck.addresses]
        checks.append({"type": "icmp", "addresses": addresses, "require": "any"})
        if svc.httphealthcheck is not None:
            notes.append(
                "service.pinghealthcheck: checked too (the original ignored it when an "
                "httphealthcheck was set); both must pass"
            )
    if not checks:
        checks.append({"type": "icmp", "addresses": list(SEED_DEFAULT_PING), "require": "any"})
        notes.append(
            "service: no health check configured; like the original, the service is healthy "
            f"while {' or '.join(SEED_DEFAULT_PING)} answers ping. Add an httphealthcheck to "
            "check the service itself"
        )
    return checks


def normalise_keys(data: object, model: type[BaseModel]) -> object:
    """Go's encoding/json matches keys case-insensitively ("routerId" fills routerID): do the
    same, so every file the original accepted is accepted. A key that collides with another
    after folding stays as written (and is reported as unknown)."""
    if not isinstance(data, dict):
        return data
    fields = {(f.alias or n).lower(): (f.alias or n, f) for n, f in model.model_fields.items()}
    out: dict[object, object] = {}
    for key, value in data.items():
        known = fields.get(key.lower()) if isinstance(key, str) else None
        target = known[0] if known is not None and known[0] not in out else key
        out[target] = _normalise_value(value, known[1].annotation) if known else value
    return out


def _normalise_value(value: object, annotation: object) -> object:
    args = [a for a in getattr(annotation, "__args__", ()) if a is not type(None)]
    for tp in [annotation, *args]:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return normalise_keys(value, tp)
        inner = getattr(tp, "__args__", ())
        if getattr(tp, "__origin__", None) is tuple and inner and isinstance(value, list):
            item = inner[0]
            if isinstance(item, type) and issubclass(item, BaseModel):
                return [normalise_keys(v, item) for v in value]
    return value


def _seed_issues(error: ValidationError) -> list[ConfigIssue]:
    return issues_from_validation(error, SeedConfig)


_PATHS = (
    (re.compile(r"^node\.router_id"), "bgp.local.routerID"),
    (re.compile(r"^node\.local_as"), "bgp.local.as"),
    (re.compile(r"^node$"), "bgp.local"),
    (re.compile(r"^peers\[(\d+)\]\.asn"), r"bgp.peers[\1].as"),
    (re.compile(r"^peers\[(\d+)\]\.address"), r"bgp.peers[\1].address"),
    (re.compile(r"^peers\[(\d+)\]"), r"bgp.peers[\1]"),
    (re.compile(r"^services\[0\]\.name"), "service.name"),
    (re.compile(r"^services\[0\]\.vips\[0\]"), "service.ip"),
    (re.compile(r"^services\[0\]\.ports\[(\d+)\]\.port"), r"service.ports[\1].servicePort"),
    (
        re.compile(r"^services\[0\]\.ports\[(\d+)\]\.target_port"),
        r"service.ports[\1].targetLocalPort",
    ),
    (re.compile(r"^services\[0\]\.ports\[(\d+)\]"), r"service.ports[\1]"),
    (re.compile(r"^services\[0\]"), "service"),
)


def seed_issue(issue: ConfigIssue) -> ConfigIssue:
    """A problem found in the converted config, named by the seed's keys where possible."""
    for pattern, repl in _PATHS:
        path, n = pattern.subn(repl, issue.path, count=1)
        if n and ".checks" not in path:
            return ConfigIssue(path, issue.message)
    return ConfigIssue(issue.path, f"{issue.message} (in the converted config)")
