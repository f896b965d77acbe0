"""The reconciler's way to the dataplane: claim a pass's objects, then apply its actions.

One durable ownership write (``Dataplane.claim``) covers every object the actions may create;
the actions then run in order, runs of AddAddress concurrently in groups (``plan.batches``).
A failed action is logged and reported; the others still run. Every call is bounded by the
I/O timeout.
"""

from __future__ import annotations

import asyncio
import logging

from .dataplane.base import Dataplane, DataplaneError
from .logs import log_event
from .model import DataplaneAction, ObservedDataplane
from .plan import batches, describe

log = logging.getLogger("bgplb.reconciler")  # the reconciler's events keep one logger

ADD_BATCH = 32  # AddAddress actions in flight at once (well within a netlink socket's buffer)


class Applier:
    """Applies planned actions to ``dataplane``, each call within ``io_timeout`` seconds."""

    def __init__(self, dataplane: Dataplane, io_timeout: float) -> None:
        self._dataplane = dataplane
        self._io_timeout = io_timeout

    async def observe(self) -> ObservedDataplane:
        async with asyncio.timeout(self._io_timeout):
            return await self._dataplane.observe()

    async def claim(self, actions: tuple[DataplaneAction, ...]) -> None:
        """One ownership write for the whole batch. If it fails, each apply writes its own
        (slower, as safe), so the pass goes on."""
        try:
            async with asyncio.timeout(self._io_timeout):
                await self._dataplane.claim(actions)
        except (DataplaneError, TimeoutError) as e:
            log_event(log, "dataplane_claim_failed", logging.WARNING, error=str(e) or "timed out")

    async def apply_all(
        self, actions: tuple[DataplaneAction, ...]
    ) -> tuple[list[DataplaneAction], list[str]]:
        """Apply ``actions`` in order: (those applied, why the others failed)."""
        applied: list[DataplaneAction] = []
        errors: list[str] = []
        for group in batches(actions, ADD_BATCH):
            outcomes = await asyncio.gather(*(self._apply(a) for a in group))
            for action, error in zip(group, outcomes, strict=True):
                if error is not None:
                    errors.append(f"{type(action).__name__}: {error}")
                    log_event(
                        log,
                        "dataplane_action_failed",
                        logging.WARNING,
                        action=type(action).__name__,
                        object=describe(action),
                        error=error,
                    )
                else:
                    applied.append(action)
                    log_event(
                        log,
                        "dataplane_changed",
                        action=type(action).__name__,
                        object=describe(action),
                    )
        return applied, errors

    async def apply_one(self, action: DataplaneAction) -> None:
        """Apply one action; raises what the dataplane raises (shutdown's teardown)."""
        async with asyncio.timeout(self._io_timeout):
            await self._dataplane.apply(action)

    async def _apply(self, action: DataplaneAction) -> str | None:
        """None, or why ``action`` failed."""
        try:
            await self.apply_one(action)
        except (DataplaneError, TimeoutError) as e:
            return str(e) or "timed out"
        return None
