"""The real dataplane: dummy links, VIPs and IPVS through pyroute2 netlink (no ip/ipvsadm).

Ownership: an object is ours if it is in the ownership record (``<state_dir>/dataplane.json``)
or carries our kernel-side tag (link alias ``bgp-lb`` on a dummy link; address protocol
``ADDRESS_PROTO``). Everything else is foreign and never modified: ``observe()`` reports it
(so the planner can see collisions), ``apply()`` refuses to claim it.

``apply()`` is idempotent: adding what exists is fine, removing what is gone is fine. The
record is written (durably) before an object is created: ``claim()`` writes every object a
batch of actions may create in one write, an ``apply()`` without a claim writes its own. After
a removal the record is changed in memory and written with the next write (or ``observe()``,
or ``close()``): so after a crash the file still names everything we may have made, and maybe
a few objects that are gone, which ``observe()`` prunes.

A claim is not proof of ownership until we have tried to make the object: the decisions
"is this object ours?" (EEXIST on an address, an existing link or IPVS service) use the record
without the claims not tried yet, so a foreign object that appears between the claim and the
add is not taken for ours.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

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
from ..statefile import FileHealth
from .base import DataplaneError
from .bounded import DEFAULT_TIMEOUT, KernelCallError, as_dataplane_error
from .dumps import DumpCache
from .events import LinkEventWatcher
from .gate import Gate
from .ipvs import IpvsSnapshot, IpvsTable
from .ledger import ClaimLedger
from .observation import NO_IPVS, observed_dataplane
from .owned import owns_address, owns_link
from .ownership import OwnershipRecord, OwnershipStore, claims
from .rtnl import KernelAddress, KernelLink, Rtnl

__all__ = ["NetlinkDataplane", "owns_address", "owns_link"]

log = logging.getLogger(__name__)


class NetlinkDataplane:
    def __init__(
        self,
        state_dir: Path,
        *,
        netns: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        adopt_first_start: bool = False,
    ) -> None:
        """``netns`` (a named network namespace) is for tests; the agent uses its own.
        ``adopt_first_start`` (the Go command line): without an ownership record, adopt what
        is exactly as the config wants it (the Go bgp-lb's dummy, VIP and IPVS services)."""
        self._store = OwnershipStore(Path(state_dir), adopt_first_start)
        self._ledger = ClaimLedger(self._store)  # the record plus the claims not tried yet
        self._timeout = timeout
        self._rtnl = Rtnl(netns, timeout)
        self._ipvs = IpvsTable(netns, timeout)
        # read_counters() has its own socket (and lock): an API read never waits for a pass
        # nor interleaves with the reconciler's requests on the reconciler's socket
        self._counters_ipvs = IpvsTable(netns, timeout)
        self._counters_lock = asyncio.Lock()
        self._netns = netns
        self._watcher: LinkEventWatcher | None = None
        self._gate = Gate()  # AddAddress calls share it; every other call is exclusive
        self._record_lock = asyncio.Lock()  # record changes by concurrent AddAddress calls
        # the addresses the RemoveAddress actions of the last claim() will delete, read once
        # then (one dump instead of one per removal); each entry is used once
        self._to_remove: dict[AddressSpec, KernelAddress | None] | None = None
        # the links, read once by claim() for the batch's AddAddress actions (a link dump per
        # add was a third of adding 1,000 VIPs); dropped when we make or remove a link
        self._batch_links: dict[str, KernelLink] | None = None
        self.ipvs_error: str | None = None  # why IPVS is unavailable, if it is
        self._desired: Callable[[], DataplaneState] | None = None
        self._dumps = DumpCache()  # links+addresses, dumped again only if needed

    @property
    def record(self) -> OwnershipRecord:
        return self._store.record

    @property
    def record_health(self) -> FileHealth:
        """The ownership record file as status and metrics show it."""
        return self._store.health

    def set_desired_source(self, desired: Callable[[], DataplaneState]) -> None:
        """What the config wants now: after a lost record, IPVS services that are exactly
        that are adopted (``owned.adoptable``) instead of being left as conflicts."""
        self._desired = desired

    # ------------------------------------------------------------------ Dataplane Protocol

    async def start(self, wake: Callable[[], None]) -> None:
        await self._rtnl.open()
        await self._open_ipvs()
        if self._watcher is None:
            self._watcher = LinkEventWatcher(wake, self._netns)
            await self._watcher.start(self._timeout)

    async def close(self) -> None:
        self._dumps.forget()  # a later start() has a new watcher, its generation from 0
        if self._watcher is not None:
            await self._watcher.stop()
            self._watcher = None
        self._rtnl.close()
        self._ipvs.close()
        self._counters_ipvs.close()
        async with self._gate.exclusive():
            await self._ledger.flush()

    async def claim(self, actions: Sequence[DataplaneAction]) -> None:
        async with self._gate.exclusive():
            with as_dataplane_error("claim"):
                await self._claim(actions)

    async def observe(self) -> ObservedDataplane:
        async with self._gate.exclusive():
            try:
                return await self._observe()
            except DataplaneError:
                raise
            except Exception as e:  # pyroute2 raises more than OSError; keep the contract
                raise DataplaneError(f"observe: {type(e).__name__}: {e}") from e

    async def read_counters(
        self, keys: Collection[VirtualServiceKey]
    ) -> Mapping[VirtualServiceKey, IPVSCounters]:
        async with self._counters_lock:
            with as_dataplane_error("read IPVS counters"):
                return await self._counters_ipvs.service_counters(keys)

    async def apply(self, action: DataplaneAction) -> None:
        """AddAddress actions may run concurrently with each other (the reconciler sends a
        batch of them at once: one netlink round trip per VIP on a busy event loop was most
        of the time to bring up 1,000 VIPs); everything else runs alone."""
        shared = isinstance(action, AddAddress)
        async with self._gate.shared() if shared else self._gate.exclusive():
            try:
                with as_dataplane_error(type(action).__name__):
                    if isinstance(action, AddAddress):
                        await self._add_address(action.address)
                    else:
                        await self._apply(action)
            finally:  # under the gate: no observe is running; the next one dumps again
                self._dumps.forget()

    # ------------------------------------------------------------------ internals

    async def _claim(self, actions: Sequence[DataplaneAction]) -> None:
        removals = [a.address for a in actions if isinstance(a, RemoveAddress)]
        self._to_remove = None
        self._batch_links = None
        if any(isinstance(a, AddAddress) for a in actions):
            self._batch_links = {x.name: x for x in await self._rtnl.links()}
        if removals:
            self._to_remove = dict.fromkeys(removals)
            for addr in await self._rtnl.addresses(await self._rtnl.links()):
                spec = AddressSpec(addr.ifname, addr.address)
                if spec in self._to_remove and self._to_remove[spec] is None:
                    self._to_remove[spec] = addr
        record = self._store.record
        new = claims(actions).difference(record)
        if new.links:  # never put a foreign link's name in the record
            links = {x.name: x for x in await self._rtnl.links()}
            owned = self._ledger.owned()
            foreign = {n for n in new.links if n in links and not owns_link(links[n], owned)}
            new = replace(new, links=new.links - foreign)
        services = record.services | new.services  # apply refuses the others' real servers
        new = replace(
            new, real_servers=frozenset(r for r in new.real_servers if r.service in services)
        )
        if new:
            await self._ledger.claim(new)

    async def _observe(self) -> ObservedDataplane:
        self._to_remove = None
        self._batch_links = None
        links, addresses = await self._dumps.read(self._rtnl, self._watcher)
        found = await self._ipvs_snapshot()
        if self._store.rebuilding and self._desired is not None:
            await self._ledger.adopt(self._desired(), links, addresses, found)
        observed = observed_dataplane(links, addresses, found or NO_IPVS, self._ledger.owned())
        await self._ledger.prune(links, addresses, found)
        return observed

    async def _open_ipvs(self) -> bool:
        try:
            await self._ipvs.open()
        except KernelCallError as e:
            if self.ipvs_error is None:
                # info, not warning: announce-mode nodes need no IPVS. An ipvs-mode service
                # gets a clear action error and check-node/status name the missing module.
                log.info("IPVS is not available (%s): virtual services cannot be managed", e)
            self.ipvs_error = str(e)
            return False
        self.ipvs_error = None
        return True

    async def _ipvs_snapshot(self) -> IpvsSnapshot | None:
        """Every IPVS object; None when the kernel has no IPVS (nothing to see or prune)."""
        if not await self._open_ipvs():
            return None
        return await self._ipvs.snapshot()

    async def _require_ipvs(self) -> None:
        if not await self._open_ipvs():
            raise DataplaneError(f"IPVS is not available: {self.ipvs_error}")

    def _forget_batch_link(self, name: str) -> None:
        if self._batch_links is not None:
            self._batch_links.pop(name, None)

    async def _find_link(self, name: str) -> KernelLink | None:
        return next((x for x in await self._rtnl.links() if x.name == name), None)

    async def _apply(self, action: DataplaneAction) -> None:
        match action:
            case EnsureLink(link=spec):
                await self._ensure_link(spec)
            case RemoveLink(link=spec):
                await self._remove_link(spec)
            case RemoveAddress(address=spec):
                await self._remove_address(spec)
            case AddVirtualService(service=svc) | UpdateVirtualService(service=svc):
                await self._put_service(svc)
            case RemoveVirtualService(key=key):
                await self._remove_service(key)
            case AddRealServer(real_server=rs) | UpdateRealServer(real_server=rs):
                await self._put_real_server(rs)
            case RemoveRealServer(key=rkey):
                await self._remove_real_server(rkey)
            case _:  # pragma: no cover
                raise DataplaneError(f"unknown action {action!r}")

    async def _ensure_link(self, spec: LinkSpec) -> None:
        store = self._store
        self._forget_batch_link(spec.name)
        link = await self._find_link(spec.name)
        part = OwnershipRecord(links=frozenset({spec.name}))
        if link is not None and not owns_link(link, self._ledger.owned()):
            if spec.name in self._ledger.claimed.links:
                await self._ledger.unclaim(part)
            raise DataplaneError(f"link {spec.name} exists and is not ours ({link.kind or 'nic'})")
        await self._ledger.persist(store.record.with_link(spec.name))
        self._ledger.tried(part)
        if link is None:
            await self._rtnl.add_dummy(spec.name)
            link = await self._find_link(spec.name)
            if link is None or link.kind != "dummy":
                raise DataplaneError(f"link {spec.name} vanished or is not a dummy link")
        await self._rtnl.tag_and_raise(link)

    async def _remove_link(self, spec: LinkSpec) -> None:
        store = self._store
        self._forget_batch_link(spec.name)
        link = await self._find_link(spec.name)
        if link is not None and owns_link(link, store.record):
            await self._rtnl.delete_link(link)
        elif link is not None:
            log.warning("not removing link %s: it is not ours", spec.name)
        self._ledger.forget(store.record.without_link(spec.name))

    async def _kernel_address(
        self, spec: AddressSpec
    ) -> tuple[KernelLink | None, KernelAddress | None]:
        links = await self._rtnl.links()
        link = next((x for x in links if x.name == spec.ifname), None)
        if link is None:
            return None, None
        found = [
            a
            for a in await self._rtnl.addresses([link])
            if a.index == link.index and a.address == spec.address
        ]
        return link, (found[0] if found else None)

    async def _add_address(self, spec: AddressSpec) -> None:
        """Record, then add; only when the kernel says EEXIST is the address dump read to
        see whose it is. (Dumping every address before each add made adding n VIPs cost
        O(n^2) message decodes: ~2 minutes for 1,000 VIPs, measured by bench/scale.py.)"""
        store = self._store
        if self._batch_links is not None and spec.ifname in self._batch_links:
            link: KernelLink | None = self._batch_links[spec.ifname]
        else:
            link = await self._find_link(spec.ifname)
        if link is None:
            raise DataplaneError(f"cannot add {spec.address}: no interface {spec.ifname}")
        before = self._ledger.owned()  # without a claim of this address: a claim proves nothing
        part = OwnershipRecord(addresses=frozenset({spec}))
        async with self._record_lock:  # read and write the record in one step
            await self._ledger.persist(store.record.with_address(spec))
        try:
            if await self._rtnl.add_address(link.index, link.name, spec.address):
                return
            _, addr = await self._kernel_address(spec)  # already there: whose is it?
            if addr is not None and owns_address(addr, before):
                return
        finally:
            self._ledger.tried(part)
        async with self._record_lock:
            await self._ledger.unclaim(part)
        raise DataplaneError(f"{spec.address} is already on {spec.ifname} and is not ours")

    async def _remove_address(self, spec: AddressSpec) -> None:
        store = self._store
        if self._to_remove is not None and spec in self._to_remove:
            addr = self._to_remove.pop(spec)  # read by claim(), moments ago
        else:
            _, addr = await self._kernel_address(spec)
        if addr is not None and owns_address(addr, self._ledger.owned()):
            await self._rtnl.delete_address(addr)
        elif addr is not None:
            log.warning("not removing %s from %s: it is not ours", spec.address, spec.ifname)
        self._ledger.forget(store.record.without_address(spec))

    async def _put_service(self, spec: VirtualServiceSpec) -> None:
        await self._require_ipvs()
        store = self._store
        if spec.key in self._ledger.owned().services:  # ours: change it in place, or make it again
            if not await self._ipvs.set_service(spec):
                await self._ipvs.add_service(spec)
            return
        part = OwnershipRecord(services=frozenset({spec.key}))
        await self._ledger.persist(store.record.with_service(spec.key))
        try:
            if await self._ipvs.add_service(spec):
                return
        finally:
            self._ledger.tried(part)
        theirs = frozenset(r for r in store.record.real_servers if r.service == spec.key)
        await self._ledger.unclaim(replace(part, real_servers=theirs))
        raise DataplaneError(f"IPVS service {spec.key} exists and is not ours")

    async def _remove_service(self, key: VirtualServiceKey) -> None:
        store = self._store
        if key not in self._ledger.owned().services:
            log.warning("not removing IPVS service %s: it is not ours", key)
            return
        await self._require_ipvs()
        await self._ipvs.delete_service(key)
        self._ledger.forget(store.record.without_service(key))

    async def _put_real_server(self, spec: RealServerSpec) -> None:
        await self._require_ipvs()
        store = self._store
        if spec.key.service not in self._ledger.owned().services:
            raise DataplaneError(
                f"IPVS service {spec.key.service} is not ours: not adding {spec.key}"
            )
        await self._ledger.persist(store.record.with_real_server(spec.key))
        self._ledger.tried(OwnershipRecord(real_servers=frozenset({spec.key})))
        # A real server already in *our* service is claimed: the service is ours.
        if not await self._ipvs.add_dest(spec) and not await self._ipvs.set_dest(spec):
            await self._ipvs.add_dest(spec)

    async def _remove_real_server(self, key: RealServerKey) -> None:
        store = self._store
        if key not in self._ledger.owned().real_servers:
            log.warning("not removing real server %s of %s: it is not ours", key, key.service)
            return
        await self._require_ipvs()
        await self._ipvs.delete_dest(key)
        self._ledger.forget(store.record.without_real_server(key))
