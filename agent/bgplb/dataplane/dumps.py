"""The links and addresses ``observe()`` works from, dumped again only when they may differ.

At 1,000 VIPs the address dump was most of a steady reconcile pass (pyroute2 decoding ~1,000
messages, ~1.5 % of a core at one pass per 10 s; bench/). Every link or address change, ours
or anyone's, sends an rtnetlink event, and the event watcher (events.py) moves its
``generation`` on each batch and on each failure of its socket. So while the watcher is
listening and its generation is the one read *before* the last dump, that dump still holds.
Our own changes forget it at once (their events may not have been read yet), and it is never
reused after ``FULL_DUMP_EVERY`` seconds. IPVS has no events: it is always dumped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .events import LinkEventWatcher
from .rtnl import KernelAddress, KernelLink, Rtnl

FULL_DUMP_EVERY = 60.0  # seconds: a dump is reused at most this long, events or not


@dataclass(frozen=True)
class _Dump:
    generation: int
    at: float
    links: list[KernelLink]
    addresses: list[KernelAddress]


class DumpCache:
    def __init__(self) -> None:
        self._last: _Dump | None = None
        self.dumps = 0  # dumps made (for tests)

    def forget(self) -> None:
        self._last = None

    async def read(
        self, rtnl: Rtnl, watcher: LinkEventWatcher | None
    ) -> tuple[list[KernelLink], list[KernelAddress]]:
        generation = watcher.generation if watcher is not None and watcher.listening else None
        now = time.monotonic()
        last = self._last
        if (
            generation is not None
            and last is not None
            and last.generation == generation
            and now - last.at < FULL_DUMP_EVERY
        ):
            return last.links, last.addresses
        self._last = None
        links = await rtnl.links()
        addresses = await rtnl.addresses(links)
        self.dumps += 1
        if generation is not None:
            self._last = _Dump(generation, now, links, addresses)
        return links, addresses
