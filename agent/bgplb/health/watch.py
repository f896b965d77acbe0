"""``watch_connection``: an idle TCP connection held to a check's target between probes.

When the target's process dies, the kernel closes its sockets: our idle connection gets a FIN
(or a reset) at once, long before the next probe is due. :class:`ConnectionWatch` then calls
``lost()`` once and the health runner probes right away (health/runner.py ``_poke``); the
probe, not the watch, decides health, so rise/fall and every result stay as they were.

- Opened after a healthy probe result, closed after a failed one (while a target is failing
  the interval probing is what brings it back).
- Only an established connection that ends calls ``lost()``: a watch that cannot connect
  just closes (a backend with a connection limit must not cause a probe storm); the next
  healthy result tries again.
- Anything the target sends (an SSH or SMTP banner) is read and dropped; a server that
  closes idle connections after a timeout costs one extra probe each time.
- The runner probes on a drop at most once per check ``interval`` (``HealthRunner._poke``):
  a server that closes idle connections *at once* would otherwise spin drop -> probe -> new
  watch -> drop without pause.
"""

from __future__ import annotations

import _socket
import errno
from collections.abc import Callable

from .poller import ERR, HUP, IN, OUT, Poller

MAX_CHATTER = 65536  # bytes an idle connection may receive before we give up watching it


class ConnectionWatch:
    __slots__ = ("_connected", "_fd", "_heard", "_lost", "_poller", "_sock")

    def __init__(
        self,
        poller: Poller,
        sock: _socket.socket,
        sockaddr: tuple[str, int],
        lost: Callable[[], None],
    ) -> None:
        """Connect ``sock`` (non-blocking, bound if need be; the watch owns it from now)."""
        self._poller, self._sock, self._lost = poller, sock, lost
        self._connected = False
        self._heard = 0
        self._fd = sock.fileno()
        try:
            poller.watch(self._fd, self._on_events, writable=True)
            err = sock.connect_ex(sockaddr)
        except OSError:
            self.close()
            return
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
            self.close()

    @property
    def open(self) -> bool:
        return self._sock.fileno() != -1

    def close(self) -> None:
        if self._sock.fileno() != -1:
            self._poller.forget(self._fd)
            self._sock.close()

    def _on_events(self, events: int) -> None:
        if not self._connected:
            if events & (ERR | HUP):
                self.close()  # could not connect: nothing to watch
                return
            if not events & OUT:
                return
            self._connected = True
        if events & (IN | ERR | HUP):
            self._drain()

    def _drain(self) -> None:
        try:
            while True:
                chunk = self._sock.recv(4096)
                if not chunk:
                    break  # the target closed it
                self._heard += len(chunk)
                if self._heard > MAX_CHATTER:
                    self.close()  # a talkative service: stop watching, do not probe
                    return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass  # reset: the target went away
        self.close()
        self._lost()
