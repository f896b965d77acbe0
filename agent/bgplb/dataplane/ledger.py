"""The ownership record as the adapter uses it: the durable record plus the claims not tried.

A claim is not proof of ownership until we have tried to make the object: the decisions "is
this object ours?" use :meth:`ClaimLedger.owned` (the record without the claims not tried
yet), so a foreign object that appears between the claim and the add is not taken for ours.
"""

from __future__ import annotations

import asyncio
import logging

from ..logs import log_event
from ..model import DataplaneState
from .ipvs import IpvsSnapshot
from .owned import adoptable, pruned_record
from .ownership import OwnershipRecord, OwnershipStore
from .rtnl import KernelAddress, KernelLink

log = logging.getLogger("bgplb.dataplane.netlink")


class ClaimLedger:
    def __init__(self, store: OwnershipStore) -> None:
        self.store = store
        self.claimed = OwnershipRecord()  # claimed, not tried yet: not proof of ownership

    @property
    def record(self) -> OwnershipRecord:
        return self.store.record

    def owned(self) -> OwnershipRecord:
        """The record as proof of ownership: without the claims not tried yet."""
        return self.store.record.difference(self.claimed)

    def tried(self, part: OwnershipRecord) -> None:
        self.claimed = self.claimed.difference(part)

    async def claim(self, new: OwnershipRecord) -> None:
        """Claim ``new`` (not in the record yet): durably in the record, not proof yet."""
        self.claimed = self.claimed.union(new)
        await self.persist(self.store.record.union(new))

    async def persist(self, record: OwnershipRecord) -> None:
        """``store.update`` off the event loop: it fsyncs the file and its directory, which
        took seconds under disk contention and then starved the health checks (bench/)."""
        if record != self.store.record:
            await asyncio.to_thread(self.store.update, record)

    async def unclaim(self, part: OwnershipRecord) -> None:
        """A claimed object turned out to be someone else's: out of the record, durably."""
        self.tried(part)
        await self.persist(self.store.record.difference(part))

    def forget(self, record: OwnershipRecord) -> None:
        self.store.forget(record)

    async def prune(
        self,
        links: list[KernelLink],
        addresses: list[KernelAddress],
        snapshot: IpvsSnapshot | None,
    ) -> None:
        """Forget record entries whose object is gone (or was taken over by someone else),
        and claims never tried; write what removals left in memory only."""
        record = self.owned()
        pruned = pruned_record(record, links, addresses, snapshot)
        if pruned != record:
            log.info("ownership record: forgetting objects that are gone")
        self.claimed = OwnershipRecord()
        if pruned != self.store.record or self.store.dirty:
            await asyncio.to_thread(self.store.update, pruned)

    async def adopt(
        self,
        desired: DataplaneState,
        links: list[KernelLink],
        addresses: list[KernelAddress],
        found: IpvsSnapshot | None,
    ) -> None:
        """The record was lost (``store.rebuilding``): take back what is exactly as the
        config wants it, durably; done once IPVS could be read."""
        part = adoptable(desired, links, addresses, found, self.owned())
        if part:
            log_event(
                log,
                "ownership_adopted",
                level=logging.WARNING,
                links=len(part.links),
                services=len(part.services),
                real_servers=len(part.real_servers),
                addresses=len(part.addresses),
            )
            await self.persist(self.store.record.union(part))
        if found is not None:
            self.store.rebuilding = False

    async def flush(self) -> None:
        """Write what removals left in memory only (at close)."""
        try:
            await asyncio.to_thread(self.store.flush)
        except OSError as e:  # the file still names a superset: safe, pruned next start
            log.warning("ownership record: could not write it at close: %s", e)
