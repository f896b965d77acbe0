"""What the agent made in the kernel, remembered across restarts.

The record lives in ``<state_dir>/dataplane.json`` and is rewritten atomically (temporary file,
fsync, rename). The adapter writes an object into the record *before* it creates it (durably;
a reconcile pass claims all the objects it may create in one write) and drops it only *after*
it is gone (in memory at once, on disk with the next write: a record naming an object that is
already gone is harmless), so the record on disk is always a superset of what we made;
``observe()`` reports only kernel objects that are also in the record (or carry our
kernel-side tag), and prunes record entries whose object no longer exists.

IPVS services and real servers have no kernel-side tag, so for them the record is the only
proof of ownership. Links (alias ``bgp-lb``) and addresses (IFA_PROTO) are also tagged.

An unreadable or corrupt record is set aside (``dataplane.json.corrupt-<time>``) and rebuilt
from the kernel: links and addresses by their tags, IPVS services adopted when they are
exactly what the config wants (``owned.adoptable``, at the first observation that has the
desired state); ``rebuilding`` is True until then.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..logs import log_event
from ..model import (
    AddAddress,
    AddRealServer,
    AddressSpec,
    AddVirtualService,
    DataplaneAction,
    EnsureLink,
    Protocol,
    RealServerKey,
    UpdateRealServer,
    UpdateVirtualService,
    VirtualServiceKey,
)
from ..statefile import FileHealth, set_aside, why, write_atomic

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

    def union(self, other: OwnershipRecord) -> OwnershipRecord:
        return OwnershipRecord(
            links=self.links | other.links,
            addresses=self.addresses | other.addresses,
            services=self.services | other.services,
            real_servers=self.real_servers | other.real_servers,
        )

    def difference(self, other: OwnershipRecord) -> OwnershipRecord:
        """Entry by entry (unlike ``without_link``, nothing hanging off a link goes with it)."""
        return OwnershipRecord(
            links=self.links - other.links,
            addresses=self.addresses - other.addresses,
            services=self.services - other.services,
            real_servers=self.real_servers - other.real_servers,
        )

    def __bool__(self) -> bool:
        return bool(self.links or self.addresses or self.services or self.real_servers)


@dataclass
class OwnershipStore:
    """The record on disk. A missing file is an empty record (with ``adopt_first_start``, the
    Go command line: what the kernel has exactly as the config wants it is adopted, the Go
    bgp-lb's leftovers); an unreadable one is moved aside and the record rebuilt from the
    kernel (``rebuilding``)."""

    state_dir: Path
    adopt_first_start: bool = False
    record: OwnershipRecord = field(init=False)
    dirty: bool = field(init=False, default=False)  # ``record`` is not what is on disk
    writes: int = field(init=False, default=0)
    rebuilding: bool = field(init=False, default=False)  # the file was lost: adopt from kernel
    health: FileHealth = field(init=False)

    def __post_init__(self) -> None:
        self.health = FileHealth(self.path)
        self.record = self._load()

    @property
    def path(self) -> Path:
        return self.state_dir / RECORD_NAME

    def update(self, record: OwnershipRecord) -> None:
        """Make ``record`` the record and persist it (file and directory fsynced) before
        returning; nothing is written if it is already what is on disk."""
        if record == self.record and not self.dirty:
            return
        try:
            write_atomic(self.path, json.dumps(encode_record(record), indent=2, sort_keys=True))
        except OSError as e:
            self.health.failed(f"state_dir {why(e, self.state_dir)}")
            raise
        self.health.fine()
        self.record = record
        self.dirty = False
        self.writes += 1

    def forget(self, record: OwnershipRecord) -> None:
        """Make ``record`` (a subset of the current one: objects that are gone) the record in
        memory only; the next ``update`` or ``flush`` writes it. Until then the file names
        more than exists, which is safe (a superset); it saves one fsync per removal."""
        if record != self.record:
            self.record = record
            self.dirty = True

    def flush(self) -> None:
        """Write what ``forget`` left in memory only."""
        if self.dirty:
            self.update(self.record)

    def _load(self) -> OwnershipRecord:
        try:
            text = self.path.read_text(encoding="utf-8")
            return decode_record(json.loads(text))
        except FileNotFoundError:
            self.rebuilding = self.adopt_first_start  # the Go bgp-lb's dummy, VIP, IPVS
            return OwnershipRecord()
        except OSError as e:
            error = f"cannot read it: {why(e, self.path)}"
        except (ValueError, KeyError, TypeError) as e:
            error = f"corrupt: {e}"
        aside = set_aside(self.path, time.time())
        kept = f"kept as {aside.name}" if aside is not None else "could not be renamed"
        self.rebuilding = True
        self.health.failed(f"{error}; {kept}; rebuilt from the kernel")
        log_event(
            log,
            "state_file_unreadable",
            level=logging.ERROR,
            file=self.path,
            reason=self.health.problem,
            effect="links and addresses by their tags, IPVS services that match the config",
        )
        return OwnershipRecord()


def claims(actions: Iterable[DataplaneAction]) -> OwnershipRecord:
    """Every object ``actions`` may create (what must be in the record before they run)."""
    links: set[str] = set()
    addresses: set[AddressSpec] = set()
    services: set[VirtualServiceKey] = set()
    real_servers: set[RealServerKey] = set()
    for action in actions:
        match action:
            case EnsureLink(link=x):
                links.add(x.name)
            case AddAddress(address=a):
                addresses.add(a)
            case AddVirtualService(service=s) | UpdateVirtualService(service=s):
                services.add(s.key)
            case AddRealServer(real_server=r) | UpdateRealServer(real_server=r):
                real_servers.add(r.key)
            case _:
                pass
    return OwnershipRecord(
        frozenset(links), frozenset(addresses), frozenset(services), frozenset(real_servers)
    )


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
