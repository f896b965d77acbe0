"""An in-memory dataplane for tests: the "kernel" is a few sets, every apply goes to the EventLog.

It behaves like the kernel where it matters: removing a link removes its addresses, removing a
virtual service removes its real servers, an address needs an existing interface, a real server
needs its virtual service. Objects added with ``add_foreign_*`` belong to someone else: any
action on them is recorded in ``violations`` and fails. The state outlives ``close()`` and
``restart()``, as the kernel's does.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from ..clock import Clock
from ..eventlog import EventLog
from ..model import (
    AddAddress,
    AddRealServer,
    AddressSpec,
    AddVirtualService,
    DataplaneAction,
    DataplaneState,
    EnsureLink,
    IPVSCounters,
    LinkSpec,
    ObservedDataplane,
    RealServerKey,
    RealServerSpec,
    RemoveAddress,
    RemoveLink,
    RemoveRealServer,
    RemoveVirtualService,
    UpdateRealServer,
    UpdateVirtualService,
    VirtualServiceKey,
    VirtualServiceSpec,
)
from .base import DataplaneError
from .ownership import OwnershipRecord, claims

SOURCE = "dataplane"  # kernel changes
CLAIM_SOURCE = "ownership"  # ownership record writes (claims)


class FakeDataplane:
    def __init__(
        self,
        event_log: EventLog,
        clock: Clock | None = None,
        interfaces: Iterable[str] = ("lo", "eth0"),
    ) -> None:
        self.log = event_log
        self.clock = clock
        self.system_interfaces = set(interfaces)  # links that are neither ours nor colliding
        self.links: set[LinkSpec] = set()
        self.addresses: set[AddressSpec] = set()
        self.services: dict[VirtualServiceKey, VirtualServiceSpec] = {}
        self.real_servers: dict[RealServerKey, RealServerSpec] = {}
        # the kernel's svc->destinations order: a new real server goes to the head
        self.dest_order: dict[VirtualServiceKey, list[RealServerKey]] = {}
        self.foreign_links: set[str] = set()
        self.foreign_addresses: set[AddressSpec] = set()
        self.foreign_services: set[VirtualServiceKey] = set()
        self.violations: list[DataplaneAction] = []
        self.applied: list[DataplaneAction] = []
        self.observe_calls = 0
        self.claimed = OwnershipRecord()  # what a real adapter's ownership record would hold
        self._claim_failures = 0
        self.starts = 0
        self._failures: dict[type, int] = {}
        self._wake: Callable[[], None] | None = None
        # what read_counters() reports for the services that exist (tests set it)
        self.counters: dict[VirtualServiceKey, IPVSCounters] = {}
        self.counter_reads = 0

    # ------------------------------------------------------------------ Dataplane Protocol

    async def start(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self.starts += 1

    async def observe(self) -> ObservedDataplane:
        self.observe_calls += 1
        return ObservedDataplane(
            owned=self.owned(),
            foreign_links=frozenset(self.foreign_links | self.system_interfaces),
            foreign_addresses=frozenset(self.foreign_addresses),
            foreign_services=frozenset(self.foreign_services),
            interfaces=frozenset(self._interfaces()),
            service_counters={k: c for k, c in self.counters.items() if k in self.services},
            dest_order={k: tuple(v) for k, v in self.dest_order.items() if v},
        )

    async def claim(self, actions: Sequence[DataplaneAction]) -> None:
        """Logs (source ``ownership``, kind ``claim``) the objects the actions may create, an
        ``OwnershipRecord``, when there are any: the real adapter's one durable write."""
        if self._claim_failures > 0:
            self._claim_failures -= 1
            self.log.record(CLAIM_SOURCE, "claim_failed", tuple(actions))
            raise DataplaneError("claim: injected failure")
        new = claims(actions)
        if new:
            self.claimed = self.claimed.union(new)
            self.log.record(CLAIM_SOURCE, "claim", new)

    async def apply(self, action: DataplaneAction) -> None:
        name = type(action).__name__
        if self._touches_foreign(action):
            self.violations.append(action)
            self.log.record(SOURCE, "violation", action)
            raise DataplaneError(f"{name}: the object belongs to someone else")
        left = self._failures.get(type(action), 0)
        if left > 0:
            self._failures[type(action)] = left - 1
            self.log.record(SOURCE, "failed", action)
            raise DataplaneError(f"{name}: injected failure")
        self._mutate(action)
        self.applied.append(action)
        self.log.record(SOURCE, name, action)

    async def read_counters(
        self, keys: Collection[VirtualServiceKey]
    ) -> Mapping[VirtualServiceKey, IPVSCounters]:
        self.counter_reads += 1
        present = self.services.keys() | self.foreign_services
        return {k: self.counters.get(k, IPVSCounters()) for k in keys if k in present}

    async def close(self) -> None:
        self._wake = None

    # ------------------------------------------------------------------ test hooks

    def owned(self) -> DataplaneState:
        return DataplaneState(
            links=frozenset(self.links),
            addresses=frozenset(self.addresses),
            services=frozenset(self.services.values()),
            real_servers=frozenset(self.real_servers.values()),
        )

    def restart(self) -> None:
        """The agent restarted: handles are gone, the kernel state stays."""
        self._wake = None

    def fail_next(self, action_type: type, times: int = 1) -> None:
        """Make the next ``times`` applies of ``action_type`` raise DataplaneError."""
        self._failures[action_type] = self._failures.get(action_type, 0) + times

    def fail_next_claim(self, times: int = 1) -> None:
        self._claim_failures += times

    def add_foreign_link(self, name: str) -> None:
        self.foreign_links.add(name)
        self._notify()

    def add_foreign_address(self, address: AddressSpec) -> None:
        self.foreign_addresses.add(address)
        self._notify()

    def add_foreign_service(self, key: VirtualServiceKey) -> None:
        self.foreign_services.add(key)
        self._notify()

    def delete_address(self, address: AddressSpec) -> None:
        """Someone removed one of our addresses (drift)."""
        self.addresses.discard(address)
        self._notify()

    def delete_service(self, key: VirtualServiceKey) -> None:
        """Someone removed one of our IPVS services (drift); its real servers go with it."""
        self._remove_service(key)
        self._notify()

    def reorder(self, key: VirtualServiceKey, order: Sequence[RealServerKey]) -> None:
        """The dump lists ``key``'s real servers in ``order`` (e.g. added by someone else in
        another order, or one deleted and re-added)."""
        assert sorted(order) == sorted(self.dest_order.get(key, ())), order
        self.dest_order[key] = list(order)
        self._notify()

    def delete_link(self, name: str) -> None:
        self._remove_link(LinkSpec(name))
        self._notify()

    # ------------------------------------------------------------------ internals

    def _notify(self) -> None:
        if self._wake is not None:
            self._wake()

    def _interfaces(self) -> set[str]:
        return self.system_interfaces | {x.name for x in self.links} | self.foreign_links

    def _touches_foreign(self, action: DataplaneAction) -> bool:
        match action:
            case EnsureLink(link=x) | RemoveLink(link=x):
                return x.name in self.foreign_links or x.name in self.system_interfaces
            case AddAddress(address=a) | RemoveAddress(address=a):
                return a in self.foreign_addresses
            case AddVirtualService(service=s) | UpdateVirtualService(service=s):
                return s.key in self.foreign_services
            case RemoveVirtualService(key=k):
                return k in self.foreign_services
            case AddRealServer(real_server=r) | UpdateRealServer(real_server=r):
                return r.key.service in self.foreign_services
            case RemoveRealServer(key=rk):
                return rk.service in self.foreign_services
        return False  # pragma: no cover

    def _mutate(self, action: DataplaneAction) -> None:
        match action:
            case EnsureLink(link=x):
                self.links.add(x)
            case RemoveLink(link=x):
                self._remove_link(x)
            case AddAddress(address=a):
                if a.ifname not in self._interfaces():
                    raise DataplaneError(f"AddAddress {a.address}: no interface {a.ifname}")
                self.addresses.add(a)
            case RemoveAddress(address=a):
                self.addresses.discard(a)
            case AddVirtualService(service=s) | UpdateVirtualService(service=s):
                self.services[s.key] = s
            case RemoveVirtualService(key=k):
                self._remove_service(k)
            case AddRealServer(real_server=r) | UpdateRealServer(real_server=r):
                if r.key.service not in self.services:
                    raise DataplaneError(f"{type(action).__name__} {r.key}: no {r.key.service}")
                if r.key not in self.real_servers:
                    self.dest_order.setdefault(r.key.service, []).insert(0, r.key)
                self.real_servers[r.key] = r
            case RemoveRealServer(key=rk):
                if self.real_servers.pop(rk, None) is not None:
                    self.dest_order[rk.service].remove(rk)

    def _remove_link(self, link: LinkSpec) -> None:
        self.links.discard(link)
        self.addresses = {a for a in self.addresses if a.ifname != link.name}

    def _remove_service(self, key: VirtualServiceKey) -> None:
        self.services.pop(key, None)
        self.real_servers = {k: v for k, v in self.real_servers.items() if k.service != key}
        self.dest_order.pop(key, None)
