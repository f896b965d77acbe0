"""Commands written to ExaBGP that wait for their ack.

ExaBGP answers every API command with one ``done``/``error`` line, in order, so acks are
matched to a FIFO of what was written. ``idle`` is set when nothing is outstanding.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from ..model import PeerKey, Route


@dataclass(frozen=True)
class Pending:
    """One written command; ``route`` for announces (forgotten on error), ``reply`` when a
    caller waits for this very ack (reload)."""

    text: str
    peer: PeerKey = ""
    route: Route | None = None
    reply: asyncio.Future[bool] | None = None


class AckQueue:
    def __init__(self) -> None:
        self._items: deque[Pending] = deque()
        self.idle = asyncio.Event()
        self.idle.set()

    def __len__(self) -> int:
        return len(self._items)

    def extend(self, items: Iterable[Pending]) -> None:
        self._items.extend(items)
        if self._items:
            self.idle.clear()

    def ack(self, ok: bool) -> Pending | None:
        """The oldest outstanding command got its answer; None if nothing was outstanding."""
        if not self._items:
            return None
        item = self._items.popleft()
        if not self._items:
            self.idle.set()
        if item.reply is not None and not item.reply.done():
            item.reply.set_result(ok)
        return item

    def forget(self) -> None:
        """The channel is gone: nothing will be answered (waiting callers get False)."""
        for item in self._items:
            if item.reply is not None and not item.reply.done():
                item.reply.set_result(False)
        self._items.clear()
        self.idle.set()
