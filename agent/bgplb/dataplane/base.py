"""The dataplane Protocol. Real: ``netlink.NetlinkDataplane``; tests: ``fake.FakeDataplane``."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Protocol

from ..model import DataplaneAction, IPVSCounters, ObservedDataplane, VirtualServiceKey


class DataplaneError(Exception):
    """An action or observation failed; the message says which object and why."""


class Dataplane(Protocol):
    async def start(self, wake: Callable[[], None]) -> None:
        """Open handles; call ``wake()`` whenever the kernel changes something we care about."""

    async def observe(self) -> ObservedDataplane:
        """What the kernel really has: our objects, colliding foreign ones, counters."""

    async def claim(self, actions: Sequence[DataplaneAction]) -> None:
        """Before ``actions`` are applied one by one: record, in one durable write, every
        object they may create (so each ``apply`` need not write its own), and read at once
        what the removals among them need. Optional for correctness (``apply`` still claims
        what was not claimed), not for speed. Raises DataplaneError."""

    async def apply(self, action: DataplaneAction) -> None:
        """Carry out one action; idempotent. Raises DataplaneError. The reconciler may have
        several AddAddress actions in flight at once (never other actions, nor observe)."""

    async def read_counters(
        self, keys: Collection[VirtualServiceKey]
    ) -> Mapping[VirtualServiceKey, IPVSCounters]:
        """The statistics of these IPVS virtual services now, not as of the last ``observe``
        (the API's traffic endpoint; may run concurrently with anything else). A key the
        kernel does not have is left out. Raises DataplaneError."""

    async def close(self) -> None:
        """Release handles (does not remove objects)."""
