"""Commands written to ExaBGP that wait for their ack, and the deadline for those acks.

ExaBGP answers every API command with one ``done``/``error`` line, in order, so acks are
matched to a FIFO of what was written. ``idle`` is set when nothing is outstanding.

The ack deadline scales with the queue: ExaBGP works through pipelined commands at roughly
2,000 a second (10,000 took ~5.5 s, shared/docs/exabgp-lifecycle.md), so the queue is
overdue when no ack came for ``base + per_command * outstanding`` seconds since the last
progress (the last ack, or the write that found the queue empty). A SIGSTOPped or wedged
ExaBGP makes no progress at all, however short the queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from ..model import PeerKey, Route


class Kind(Enum):
    ANNOUNCE = "announce"
    WITHDRAW = "withdraw"
    RELOAD = "reload"
    HEARTBEAT = "heartbeat"


@dataclass(frozen=True)
class Pending:
    """One written command; ``route`` for announces and withdraws (retried on error),
    ``reply`` when a caller waits for this very ack (reload)."""

    text: str
    peer: PeerKey = ""
    route: Route | None = None
    reply: asyncio.Future[bool] | None = None
    kind: Kind = Kind.ANNOUNCE


@dataclass(frozen=True)
class AckDeadline:
    """``base`` seconds for the oldest command plus ``per_command`` for each one queued."""

    base: float = 10.0
    per_command: float = 0.002

    def allowed(self, outstanding: int) -> float:
        return self.base + self.per_command * outstanding


class AckQueue:
    def __init__(self, now: Callable[[], float] | None = None) -> None:
        self._items: deque[Pending] = deque()
        self._now = now or (lambda: 0.0)
        self.idle = asyncio.Event()
        self.idle.set()
        self.progress = self._now()  # the last ack, or the write that found the queue empty

    def __len__(self) -> int:
        return len(self._items)

    def extend(self, items: Iterable[Pending]) -> None:
        if not self._items:
            self.progress = self._now()
        self._items.extend(items)
        if self._items:
            self.idle.clear()

    def ack(self, ok: bool) -> Pending | None:
        """The oldest outstanding command got its answer; None if nothing was outstanding."""
        if not self._items:
            return None
        self.progress = self._now()
        item = self._items.popleft()
        if not self._items:
            self.idle.set()
        if item.reply is not None and not item.reply.done():
            item.reply.set_result(ok)
        return item

    def overdue(self, deadline: AckDeadline) -> float:
        """Seconds past the deadline (> 0: ExaBGP stopped answering), else <= 0."""
        if not self._items:
            return 0.0
        return self._now() - self.progress - deadline.allowed(len(self._items))

    def forget(self) -> None:
        """The channel is gone: nothing will be answered (waiting callers get False)."""
        for item in self._items:
            if item.reply is not None and not item.reply.done():
                item.reply.set_result(False)
        self._items.clear()
        self.idle.set()
        self.progress = self._now()
