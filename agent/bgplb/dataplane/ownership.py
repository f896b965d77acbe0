"""What the agent made in the kernel, remembered across restarts.

The record lives in ``<state_dir>/dataplane.json`` and is rewritten atomically (temporary file,
fsync, rename) on every change. The adapter writes an object into the record *before* it
creates it and drops it only *after* it is gone, so the record is always a superset of what we
made; ``observe()`` reports only kernel objects that are also in the record (or carry our
kernel-side tag), and prunes record entries whose object no longer exists.

IPVS services and real servers have no kernel-side tag, so for them the record is the only
proof of ownership. Links (alias ``bgp-lb``) and addresses (IFA_PROTO) are also tagged.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..model import AddressSpec, Protocol, RealServerKey, VirtualServiceKey

log = logging.getLogger(__name__)

RECORD_NAME = "dataplane.json"
VERSION = 1


@dataclass(frozen=True)
class OwnershipRecord:
    links: frozenset[str] = frozenset()
    addresses: frozenset[AddressSpec] = frozenset()
    services: frozenset[VirtualServiceKey] = frozenset()
    real_servers: frozenset[RealServerKey] = frozenset()

    def with_link(self, name: str) -> OwnershipRecord:
        return replace(self, links=self.links | {name})

    def without_link(self, name: str) -> OwnershipRecord:
        return replace(
            self,
            links=self.links - {name},
            addresses=frozenset(a for a in self.addresses if a.ifname != name),
        )

    def with_address(self, address: AddressSpec) -> OwnershipRecord:
        return replace(self, addresses=self.addresses | {address})

    def without_address(self, address: AddressSpec) -> OwnershipRecord:
        return replace(self, addresses=self.addresses - {address})

    def with_service(self, key: VirtualServiceKey) -> OwnershipRecord:
        return replace(self, services=self.services | {key})

    def without_service(self, key: VirtualServiceKey) -> OwnershipRecord:
        return replace(
            self,
            services=self.services - {key},
            real_servers=frozenset(r for r in self.real_servers if r.service != key),
        )

    def with_real_server(self, key: RealServerKey) -> OwnershipRecord:
        return replace(self, real_servers=self.real_servers | {key})

    def without_real_server(self, key: RealServerKey) -> OwnershipRecord:
        return replace(self, real_servers=self.real_servers - {key})


@dataclass
class OwnershipStore:
    """The record on disk. A missing file is an empty record; an unreadable one is moved aside."""

    state_dir: Path
    record: OwnershipRecord = field(init=False)

    def __post_init__(self) -> None:
        self.record = self._load()

    @property
    def path(self) -> Path:
        return self.state_dir / RECORD_NAME

    def update(self, record: OwnershipRecord) -> None:
        """Persist ``record`` (only if it differs) before returning."""
        if record == self.record:
            return
        write_atomically(self.path, json.dumps(encode_record(record), indent=2, sort_keys=True))
        self.record = record

    def _load(self) -> OwnershipRecord:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return OwnershipRecord()
        try:
            return decode_record(json.loads(text))
        except (ValueError, KeyError, TypeError) as e:
            aside = self.path.with_name(f"{RECORD_NAME}.corrupt-{int(time.time())}")
            with contextlib.suppress(OSError):
                self.path.rename(aside)
            log.error(
                "ownership record %s is unreadable (%s); moved to %s. Starting empty: "
                "IPVS services made before are now treated as foreign and left alone",
                self.path,
                e,
                aside,
            )
            return OwnershipRecord()


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------- JSON form


def _service(key: VirtualServiceKey) -> dict[str, Any]:
    return {"vip": str(key.vip), "port": key.port, "protocol": str(key.protocol)}


def _service_key(d: dict[str, Any]) -> VirtualServiceKey:
    return VirtualServiceKey(
        vip=ipaddress.ip_address(d["vip"]), port=int(d["port"]), protocol=Protocol(d["protocol"])
    )


def _address_order(a: AddressSpec) -> tuple[str, int, int]:
    return (a.ifname, a.address.version, int(a.address))


def _service_order(k: VirtualServiceKey) -> tuple[int, int, int, str]:
    return (k.vip.version, int(k.vip), k.port, str(k.protocol))


def _real_server_order(r: RealServerKey) -> tuple[tuple[int, int, int, str], int, int, int]:
    return (_service_order(r.service), r.address.version, int(r.address), r.port)


def encode_record(record: OwnershipRecord) -> dict[str, Any]:
    """A stable JSON form (sorted explicitly: IPv4 and IPv6 addresses do not compare)."""
    return {
        "version": VERSION,
        "links": sorted(record.links),
        "addresses": [
            {"ifname": a.ifname, "address": str(a.address)}
            for a in sorted(record.addresses, key=_address_order)
        ],
        "services": [_service(k) for k in sorted(record.services, key=_service_order)],
        "real_servers": [
            {"service": _service(r.service), "address": str(r.address), "port": r.port}
            for r in sorted(record.real_servers, key=_real_server_order)
        ],
    }


def decode_record(data: Any) -> OwnershipRecord:
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError(f"not a version {VERSION} ownership record")
    return OwnershipRecord(
        links=frozenset(str(x) for x in data["links"]),
        addresses=frozenset(
            AddressSpec(ifname=str(a["ifname"]), address=ipaddress.ip_address(a["address"]))
            for a in data["addresses"]
        ),
        services=frozenset(_service_key(s) for s in data["services"]),
        real_servers=frozenset(
            RealServerKey(
                service=_service_key(r["service"]),
                address=ipaddress.ip_address(r["address"]),
                port=int(r["port"]),
            )
            for r in data["real_servers"]
        ),
    )
