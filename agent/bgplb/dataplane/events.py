"""Netlink link/address events wake the reconciler, so drift is repaired well within a resync.

A second rtnetlink socket joins the RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR and RTNLGRP_IPV6_IFADDR
multicast groups. Every batch of messages (one datagram) calls ``wake()`` once; the reconciler
coalesces wakes itself. If the socket fails (e.g. ENOBUFS after an event burst: events were
lost), it wakes once more and reopens the socket after a short pause.

``generation`` moves on every batch and every failure, and ``listening`` is True only while
subscribed: together they tell the dataplane whether its last dump can still be right (see
dumps.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK

log = logging.getLogger(__name__)

GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
RETRY_DELAY = 1.0


class LinkEventWatcher:
    def __init__(self, wake: Callable[[], None], netns: str | None) -> None:
        self._wake = wake
        self._netns = netns
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.events = 0  # batches seen (for tests and debugging)
        self.failures = 0
        self.listening = False

    @property
    def generation(self) -> int:
        """Changes whenever something may have changed (an event batch, a lost socket)."""
        return self.events + self.failures

    async def start(self, limit: float) -> None:
        """Subscribe; returns once the socket is bound, so no later change is missed."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="netlink-events")
        waiter = asyncio.create_task(self._ready.wait())
        done, _ = await asyncio.wait(
            {waiter, self._task}, timeout=limit, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            log.warning("netlink event subscription not ready after %gs; retrying", limit)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            sock: Any = None
            try:
                sock = AsyncIPRoute(netns=self._netns) if self._netns else AsyncIPRoute()
                await sock.bind(groups=GROUPS)
                self.listening = True
                self._ready.set()
                while True:
                    async for _msg in sock.get():
                        pass
                    self.events += 1
                    self._wake()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the subscription must survive anything the socket does
                self.listening = False
                self.failures += 1
                log.warning("netlink event socket failed (%s); resubscribing", e)
                self._wake()
                await asyncio.sleep(RETRY_DELAY)
            finally:
                self.listening = False
                if sock is not None:
                    sock.close()
