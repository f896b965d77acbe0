"""The reconciler's way to the speaker: every ``speaker.set_routes`` goes through one lock.

The fast withdraw (``Reconciler.check_went_down``) runs outside the pass lock, even while a
pass runs, so the route changes are serialised here instead: the withdraw-only steps (the fast
one, a pass's early withdraw and its withdraw-before-removal) narrow what is advertised *at
that moment* (:meth:`RouteGate.narrow`), and a pass that overlapped a fast withdraw re-reads
health before it announces (:meth:`RouteGate.announce`), so nothing puts back what the fast
path took away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from collections.abc import Set as AbstractSet

from .bgp.base import Speaker
from .logs import log_event
from .model import IPNetwork, PeerKey, RouteSet
from .routeset import kept_routes, same_routes

log = logging.getLogger("bgplb.reconciler")  # the reconciler's events keep one logger

Wanted = Mapping[PeerKey, AbstractSet[IPNetwork]]


class RouteGate:
    """The speaker behind one lock, and the fast withdraws in flight."""

    def __init__(self, speaker: Speaker, io_timeout: float) -> None:
        self._speaker = speaker
        self._io_timeout = io_timeout
        self._lock = asyncio.Lock()
        self.fast_withdrawals = 0  # bumped by each fast withdraw; a pass compares it
        self._tasks: set[asyncio.Task[None]] = set()

    def advertised(self) -> RouteSet:
        return self._speaker.advertised()

    async def narrow(self, keep: Callable[[PeerKey, IPNetwork], bool]) -> bool:
        """A withdraw-only update: of what the speaker advertises *now* (read under the
        speaker lock, so a fast withdraw that just ran is never undone), keep the routes
        ``keep`` accepts. True if something was withdrawn."""
        async with self._lock:
            advertised = self._speaker.advertised()
            kept = kept_routes(advertised, keep)
            if same_routes(kept, advertised):
                return False
            await self._set(kept)
            return True

    async def announce(
        self, routes: RouteSet, fast_seen: int, wanted_now: Callable[[], Awaitable[Wanted]]
    ) -> RouteSet:
        """Give the speaker a pass's routes; if a fast withdraw happened during the pass
        (``fast_withdrawals`` moved on from ``fast_seen``), first drop what the health of
        *now* (``wanted_now()``) no longer wants: the pass decided on older health and would
        otherwise re-announce it."""
        async with self._lock:
            if self.fast_withdrawals != fast_seen:
                wanted = await wanted_now()
                routes = kept_routes(routes, lambda peer, prefix: prefix in wanted.get(peer, ()))
            await self._set(routes)
        return routes

    async def withdraw_all(self) -> None:
        """Withdraw every route (shutdown)."""
        async with self._lock:
            await self._set({})

    def withdraw_soon(
        self,
        service: str,
        given_up: Callable[[], AbstractSet[IPNetwork]],
        stopping: Callable[[], bool],
    ) -> None:
        """Schedule a fast withdraw of ``given_up()`` (worked out when it runs) for ``service``;
        nothing is withdrawn once ``stopping()``."""
        task = asyncio.ensure_future(self._withdraw_fast(service, given_up, stopping))
        self._tasks.add(task)
        task.add_done_callback(self._fast_done)

    async def _withdraw_fast(
        self,
        service: str,
        given_up: Callable[[], AbstractSet[IPNetwork]],
        stopping: Callable[[], bool],
    ) -> None:
        gone = given_up()
        if not gone:
            return
        if stopping() or not await self.narrow(lambda peer, prefix: prefix not in gone):
            return
        self.fast_withdrawals += 1
        log_event(
            log,
            "routes_withdrawn_fast",
            service=service,
            prefixes=" ".join(sorted(str(p) for p in gone)),
        )

    def _fast_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log_event(log, "fast_withdraw_failed", logging.WARNING, error=repr(task.exception()))

    async def _set(self, routes: RouteSet) -> None:
        async with asyncio.timeout(self._io_timeout):
            await self._speaker.set_routes(routes)
