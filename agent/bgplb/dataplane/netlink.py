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
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
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
from .bounded import DEFAULT_TIMEOUT, KernelCallError
from .dumps import DumpCache
from .events import LinkEventWatcher
from .gate import Gate
from .ipvs import IpvsSnapshot, IpvsTable
from .owned import owns_address, owns_link, pruned_record
from .ownership import OwnershipRecord, OwnershipStore, claims
from .rtnl import KernelAddress, KernelLink, Rtnl

__all__ = ["NetlinkDataplane", "owns_address", "owns_link"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _as_dataplane_error(what: str) -> Iterator[None]:
    """Keep the Protocol's contract: every failure of ``what`` leaves as a DataplaneError
    (pyroute2 raises more than OSError); the message names ``what``."""
    try:
        yield
    except KernelCallError as e:
        raise DataplaneError(f"{what}: {e}") from e
    except DataplaneError:
        raise
    except Exception as e:
        raise DataplaneError(f"{what}: {type(e).__name__}: {e}") from e


NO_IPVS = IpvsSnapshot(services={}, real_servers={}, service_counters={}, real_server_counters={})


class NetlinkDataplane:
    def __init__(
        self, state_dir: Path, *, netns: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """``netns`` (a named network namespace) is for tests; the agent uses its own."""
        self._store = OwnershipStore(Path(state_dir))
        self._timeout = timeout
        self._rtnl = Rtnl(netns, timeout)
        self._ipvs = IpvsTable(netns, timeout)
        self._netns = netns
        self._watcher: LinkEventWatcher | None = None
        self._gate = Gate()  # AddAddress calls share it; every other call is exclusive
        self._record_lock = asyncio.Lock()  # record changes by concurrent AddAddress calls
        self._claimed = OwnershipRecord()  # claimed, not tried yet: not proof of ownership
        # the addresses the RemoveAddress actions of the last claim() will delete, read once
        # then (one dump instead of one per removal); each entry is used once
        self._to_remove: dict[AddressSpec, KernelAddress | None] | None = None
        # the links, read once by claim() for the batch's AddAddress actions (a link dump per
        # add was a third of adding 1,000 VIPs); dropped when we make or remove a link
        self._batch_links: dict[str, KernelLink] | None = None
        self.ipvs_error: str | None = None  # why IPVS is unavailable, if it is
        self._dumps = DumpCache()  # links+addresses, dumped again only if needed

    @property
    def record(self) -> OwnershipRecord:
        return self._store.record

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
        async with self._gate.exclusive():
            try:
                await asyncio.to_thread(self._store.flush)
            except OSError as e:  # the file still names a superset: safe, pruned next start
                log.warning("ownership record: could not write it at close: %s", e)

    async def claim(self, actions: Sequence[DataplaneAction]) -> None:
        async with self._gate.exclusive():
            with _as_dataplane_error("claim"):
                await self._claim(actions)

    async def observe(self) -> ObservedDataplane:
        async with self._gate.exclusive():
            try:
                return await self._observe()
            except DataplaneError:
                raise
            except Exception as e:  # pyroute2 raises more than OSError; keep the contract
                raise DataplaneError(f"observe: {type(e).__name__}: {e}") from e

    async def apply(self, action: DataplaneAction) -> None:
        """AddAddress actions may run concurrently with each other (the reconciler sends a
        batch of them at once: one netlink round trip per VIP on a busy event loop was most
        of the time to bring up 1,000 VIPs); everything else runs alone."""
        shared = isinstance(action, AddAddress)
        async with self._gate.shared() if shared else self._gate.exclusive():
            try:
                with _as_dataplane_error(type(action).__name__):
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
            owned = self._owned()
            foreign = {n for n in new.links if n in links and not owns_link(links[n], owned)}
            new = replace(new, links=new.links - foreign)
        services = record.services | new.services  # apply refuses the others' real servers
        new = replace(
            new, real_servers=frozenset(r for r in new.real_servers if r.service in services)
        )
        if new:
            self._claimed = self._claimed.union(new)
            await self._persist(record.union(new))

    def _owned(self) -> OwnershipRecord:
        """The record as proof of ownership: without the claims not tried yet."""
        return self._store.record.difference(self._claimed)

    def _tried(self, part: OwnershipRecord) -> None:
        self._claimed = self._claimed.difference(part)

    async def _observe(self) -> ObservedDataplane:
        self._to_remove = None
        self._batch_links = None
        links, addresses = await self._dumps.read(self._rtnl, self._watcher)
        found = await self._ipvs_snapshot()
        snapshot = found or NO_IPVS
        record = self._owned()
        owned_links = {x.name for x in links if x.up and owns_link(x, record)}
        owned_addrs = {
            AddressSpec(a.ifname, a.address) for a in addresses if owns_address(a, record)
        }
        owned_vs = {k: s for k, s in snapshot.services.items() if k in record.services}
        owned_rs = {
            k: r
            for k, r in snapshot.real_servers.items()
            if k in record.real_servers and k.service in owned_vs
        }
        names = frozenset(x.name for x in links)
        ours_anyhow = {x.name for x in links if owns_link(x, record)}  # owned but down
        observed = ObservedDataplane(
            owned=DataplaneState(
                links=frozenset(LinkSpec(n) for n in owned_links),
                addresses=frozenset(owned_addrs),
                services=frozenset(owned_vs.values()),
                real_servers=frozenset(owned_rs.values()),
            ),
            foreign_links=names - ours_anyhow,
            foreign_addresses=frozenset(
                AddressSpec(a.ifname, a.address)
                for a in addresses
                if AddressSpec(a.ifname, a.address) not in owned_addrs
            ),
            foreign_services=frozenset(snapshot.services.keys() - owned_vs.keys()),
            interfaces=names,
            service_counters={k: snapshot.service_counters[k] for k in owned_vs},
            real_server_counters={k: snapshot.real_server_counters[k] for k in owned_rs},
        )
        await self._prune(links, addresses, found)
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

    async def _prune(
        self,
        links: list[KernelLink],
        addresses: list[KernelAddress],
        snapshot: IpvsSnapshot | None,
    ) -> None:
        """Forget record entries whose object is gone (or was taken over by someone else),
        and claims never tried; write what removals left in memory only."""
        record = self._owned()
        pruned = pruned_record(record, links, addresses, snapshot)
        if pruned != record:
            log.info("ownership record: forgetting objects that are gone")
        self._claimed = OwnershipRecord()
        if pruned != self._store.record or self._store.dirty:
            await asyncio.to_thread(self._store.update, pruned)

    async def _persist(self, record: OwnershipRecord) -> None:
        """``store.update`` off the event loop: it fsyncs the file and its directory, which
        took seconds under disk contention and then starved the health checks (bench/)."""
        if record != self._store.record:
            await asyncio.to_thread(self._store.update, record)

    async def _unclaim(self, part: OwnershipRecord) -> None:
        """A claimed object turned out to be someone else's: out of the record, durably."""
        self._tried(part)
        await self._persist(self._store.record.difference(part))

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
        if link is not None and not owns_link(link, self._owned()):
            if spec.name in self._claimed.links:
                await self._unclaim(part)
            raise DataplaneError(f"link {spec.name} exists and is not ours ({link.kind or 'nic'})")
        await self._persist(store.record.with_link(spec.name))
        self._tried(part)
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
        store.forget(store.record.without_link(spec.name))

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
        before = self._owned()  # without a claim of this address: a claim proves nothing
        part = OwnershipRecord(addresses=frozenset({spec}))
        async with self._record_lock:  # read and write the record in one step
            await self._persist(store.record.with_address(spec))
        try:
            if await self._rtnl.add_address(link.index, link.name, spec.address):
                return
            _, addr = await self._kernel_address(spec)  # already there: whose is it?
            if addr is not None and owns_address(addr, before):
                return
        finally:
            self._tried(part)
        async with self._record_lock:
            await self._unclaim(part)
        raise DataplaneError(f"{spec.address} is already on {spec.ifname} and is not ours")

    async def _remove_address(self, spec: AddressSpec) -> None:
        store = self._store
        if self._to_remove is not None and spec in self._to_remove:
            addr = self._to_remove.pop(spec)  # read by claim(), moments ago
        else:
            _, addr = await self._kernel_address(spec)
        if addr is not None and owns_address(addr, self._owned()):
            await self._rtnl.delete_address(addr)
        elif addr is not None:
            log.warning("not removing %s from %s: it is not ours", spec.address, spec.ifname)
        store.forget(store.record.without_address(spec))

    async def _put_service(self, spec: VirtualServiceSpec) -> None:
        await self._require_ipvs()
        store = self._store
        if spec.key in self._owned().services:  # ours: change it in place, or make it again
            if not await self._ipvs.set_service(spec):
                await self._ipvs.add_service(spec)
            return
        part = OwnershipRecord(services=frozenset({spec.key}))
        await self._persist(store.record.with_service(spec.key))
        try:
            if await self._ipvs.add_service(spec):
                return
        finally:
            self._tried(part)
        theirs = frozenset(r for r in store.record.real_servers if r.service == spec.key)
        await self._unclaim(replace(part, real_servers=theirs))
        raise DataplaneError(f"IPVS service {spec.key} exists and is not ours")

    async def _remove_service(self, key: VirtualServiceKey) -> None:
        store = self._store
        if key not in self._owned().services:
            log.warning("not removing IPVS service %s: it is not ours", key)
            return
        await self._require_ipvs()
        await self._ipvs.delete_service(key)
        store.forget(store.record.without_service(key))

    async def _put_real_server(self, spec: RealServerSpec) -> None:
        await self._require_ipvs()
        store = self._store
        if spec.key.service not in self._owned().services:
            raise DataplaneError(
                f"IPVS service {spec.key.service} is not ours: not adding {spec.key}"
            )
        await self._persist(store.record.with_real_server(spec.key))
        self._tried(OwnershipRecord(real_servers=frozenset({spec.key})))
        # A real server already in *our* service is claimed: the service is ours.
        if not await self._ipvs.add_dest(spec) and not await self._ipvs.set_dest(spec):
            await self._ipvs.add_dest(spec)

    async def _remove_real_server(self, key: RealServerKey) -> None:
        store = self._store
        if key not in self._owned().real_servers:
            log.warning("not removing real server %s of %s: it is not ours", key, key.service)
            return
        await self._require_ipvs()
        await self._ipvs.delete_dest(key)
        store.forget(store.record.without_real_server(key))
