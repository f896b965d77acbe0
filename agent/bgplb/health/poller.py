"""One epoll set for the sockets of the lean probes, watched by the event loop as one fd.

Why: at 1,000 probes a second the per-probe asyncio machinery (``add_writer`` then
``add_reader``, each an ``epoll_ctl`` ADD and DEL with the selector's bookkeeping, a future
and a resumption of the whole coroutine chain for every wait) was most of the agent's CPU
(bench/, py-spy). Here a probe socket is added once, edge-triggered for both directions, and
leaves the set when it is closed (the kernel drops a closed fd from an epoll set;
:meth:`Poller.forget` drops our side). The loop wakes for the set's fd and
:meth:`Poller._dispatch` calls each ready socket's handler with its events; the probe runs as
a small state machine in those calls and wakes its task once, when it has a result.

Edge-triggered: a handler is called when something new happened since the last call, so it
must act until its socket would block (``recv``/``send`` raising ``BlockingIOError``). Errors
and hang-ups are always reported; writability only when asked for (a probe that could send
at once never needs it, and a socket that is writable reports every ACK as a new edge).
"""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import Callable
from typing import Protocol

from ..cooperative import BUDGET
from ..wheel import RESOLUTION, TimerWheel

IN = select.EPOLLIN
OUT = select.EPOLLOUT
ERR = select.EPOLLERR
HUP = select.EPOLLHUP | select.EPOLLRDHUP
_EDGE = select.EPOLLRDHUP | select.EPOLLET
_BATCH = 16  # events taken per epoll_wait; a dispatch takes batches until BUDGET is spent

Handler = Callable[[int], None]


class Expiring(Protocol):
    def expire(self) -> None:
        """The deadline passed: stop (if not done already) and say so."""


class Poller:
    """Create inside the running loop; ``close()`` before the loop ends."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._epoll = select.epoll()
        self._handlers: dict[int, Handler] = {}
        self._wheel = TimerWheel(self._loop, RESOLUTION)
        self._loop.add_reader(self._epoll.fileno(), self._dispatch)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def watch(self, fd: int, handler: Handler, writable: bool) -> None:
        """Call ``handler(events)`` whenever ``fd`` (an open, non-blocking socket) becomes
        readable, fails or is hung up, and writable too if ``writable``. :meth:`forget` it
        before closing it."""
        self._epoll.register(fd, IN | OUT | _EDGE if writable else IN | _EDGE)
        self._handlers[fd] = handler

    def want_writable(self, fd: int) -> None:
        """Report ``fd`` becoming writable too (it is reported at once if it is)."""
        self._epoll.modify(fd, IN | OUT | _EDGE)

    def forget(self, fd: int) -> None:
        """Our side only: closing the socket removes it from the epoll set."""
        self._handlers.pop(fd, None)

    def expire_after(self, delay: float, item: Expiring) -> None:
        """Call ``item.expire()`` ``delay`` seconds from now (up to ``RESOLUTION`` later).
        A coarse timer (bgplb/wheel.py): an item that finished early stays in its slot and
        its ``expire`` does nothing; at 1,000 probes a second, a loop timer armed and
        cancelled per probe was ~1 % of a core (bench/)."""
        self._wheel.call_later(delay, item.expire)

    def _dispatch(self) -> None:
        """Handle ready sockets for at most ~BUDGET seconds: events not taken yet stay in
        the epoll set's ready list (and its fd readable), so the loop calls again after a
        turn of its own. One callback of 256 handlers was up to 100 ms on a busy host."""
        handlers = self._handlers
        deadline = time.perf_counter() + BUDGET
        while True:
            ready = self._epoll.poll(0, _BATCH)
            for fd, events in ready:
                handler = handlers.get(fd)
                if handler is not None:
                    handler(events)
            if len(ready) < _BATCH or time.perf_counter() >= deadline:
                return

    def __len__(self) -> int:
        return len(self._handlers)

    def close(self) -> None:
        if not self._epoll.closed:
            self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
        self._handlers.clear()
        self._wheel.close()
