"""A lean HTTP/1.1 probe on raw non-blocking sockets, for plain ``http`` checks that only
look at the status code (no ``body_match``).

Why: bench/ profiled 1,000 services with an http check each at 1 s; aiohttp's client path
(URL building, connector, happy eyeballs, response parser) cost ~1 ms of CPU per probe, so
the agent's one event loop was saturated and probes timed out. This does one connect, one
send and reads until the status line is in, then closes with a reset (no TIME_WAIT per
probe, see ``Exchange._reset_on_close``; like the aiohttp path, the rest of a large body is
not read). Same results as
aiohttp: ``None`` on an expected status, else ``HTTP status N``, ``connect: <reason>``, ``server
disconnected``. tcp checks use the same machinery and stop once connected. A :class:`Plan`
is made once per check; each call runs one probe bounded by the check's timeout, reports
through a callback and returns the callable that abandons it (closing its socket).
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import os
import socket
import struct
from collections.abc import Callable

from ..model import IPAddress
from .poller import ERR, HUP, IN, OUT, Poller
from .watch import ConnectionWatch

MAX_HEAD = 16384  # bytes read while looking for the status line
_RESET = struct.pack("ii", 1, 0)  # struct linger: on, 0 s


def request(path: str, host: str, user_agent: str) -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")


def parse_status(head: bytes) -> int | None:
    """The status code of ``HTTP/1.x NNN reason``; None if it is not one."""
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
        return None
    return int(parts[1]) if parts[1].isdigit() else None


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else (exc.strerror or type(exc).__name__)


def sockaddr(address: IPAddress, port: int) -> tuple[str, int]:
    key = (address, port)
    found = _SOCKADDRS.get(key)
    if found is None:
        if len(_SOCKADDRS) > 65536:  # bounded: targets come from the config
            _SOCKADDRS.clear()
        found = _SOCKADDRS[key] = (str(address), port)
    return found


_SOCKADDRS: dict[tuple[IPAddress, int], tuple[str, int]] = {}


class Exchange:
    """One probe socket's life: connect, send ``payload`` (None: a tcp check, connecting is
    all), read until the status line is in. Driven by the poller's calls (edge-triggered:
    each step runs until the socket would block). ``done`` gets the outcome once:
    :class:`ConnectFailed`, an ``OSError`` after connecting, ``None`` (connected, nothing to
    send), a status code, or a message; the socket is closed by then. :meth:`close` (e.g. on
    a timeout) closes it without calling ``done``."""

    __slots__ = ("_connected", "_done", "_fd", "_head", "_poller", "_rest", "_sock")

    def __init__(
        self, poller: Poller, sock: _socket.socket, payload: bytes | None, done: Done
    ) -> None:
        self._poller, self._sock, self._fd = poller, sock, sock.fileno()
        self._rest = memoryview(payload) if payload is not None else None
        self._head = b""
        self._connected = False
        self._done: Done | None = done

    def start(self, sockaddr: tuple[str, int]) -> None:
        # watched before connect, so no edge is missed; a tcp check waits for writability
        self._poller.watch(self._fd, self._on_events, writable=self._rest is None)
        err = self._sock.connect_ex(sockaddr)
        if err not in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
            self._finish(ConnectFailed(err, os.strerror(err)))
        elif self._rest is not None:  # on loopback the handshake is often over: send now
            self._step(0)

    def close(self) -> None:
        if self._done is not None:
            self._done = None
            self._poller.forget(self._fd)
            self._sock.close()

    def _finish(self, outcome: Outcome) -> None:
        done = self._done
        self.close()
        if done is not None:
            done(outcome)

    def _on_events(self, events: int) -> None:
        try:
            self._step(events)
        except Exception as exc:  # a bug here must not break the poller's dispatch
            self._finish(RuntimeError(f"probe failed: {type(exc).__name__}: {exc}"))

    def _step(self, events: int) -> None:
        sock = self._sock
        if not self._connected and events & (ERR | HUP):
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                return self._finish(ConnectFailed(err, os.strerror(err)))
        rest = self._rest
        if rest is None:  # tcp check: connected once writable without an error
            if events & OUT:
                self._finish(None)
            return
        if rest:
            try:
                while rest:  # still connecting: EAGAIN; connect failed: its error
                    rest = self._rest = rest[sock.send(rest) :]
                    self._connected = True
            except (BlockingIOError, InterruptedError):
                self._poller.want_writable(self._fd)  # the next OUT edge brings us back
                return
            except OSError as exc:
                if self._connected:
                    return self._finish(exc)
                return self._finish(ConnectFailed(exc.errno, exc.strerror))
            self._connected = True
        if events & (IN | ERR | HUP):  # right after sending there is nothing to read yet
            self._read()

    def _read(self) -> None:
        head = self._head
        try:
            while b"\r\n" not in head:
                chunk = self._sock.recv(4096)
                if not chunk:
                    return self._finish("server disconnected")
                head += chunk
                if len(head) > MAX_HEAD:
                    return self._finish("malformed HTTP response")
        except (BlockingIOError, InterruptedError):
            self._head = head
            return
        except OSError as exc:
            return self._finish(exc)
        self._reset_on_close()
        status = parse_status(head)
        self._finish("malformed HTTP response" if status is None else status)

    def _reset_on_close(self) -> None:
        """The answer is in: close with a reset (``SO_LINGER`` 0) instead of a FIN, so that
        neither the backend nor this node keeps a TIME_WAIT socket per probe (at 1,000 probes
        a second that was ~60,000 of them, and each connect searched past them for a port:
        bench/). Only here: a tcp check, which sends nothing, still closes with a FIN, as
        some servers log a reset on a connection they have just accepted."""
        with contextlib.suppress(OSError):  # then an ordinary close
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)


class ConnectFailed(OSError):
    """The connection could not be made (refused, unreachable, ...)."""


Outcome = ConnectFailed | OSError | RuntimeError | int | str | None
Done = Callable[[Outcome], None]
Report = Callable[[str | Exception | None], None]  # a check's verdict: see judge()


def open_socket(address: IPAddress, source: IPAddress | None) -> _socket.socket | ConnectFailed:
    """A non-blocking TCP socket for ``address``, bound to ``source`` if given. The C
    socket object itself: ``socket.socket`` adds a Python ``__init__`` and ``close`` (file
    wrappers we never use), ~3 % of the agent's CPU at 1,000 probes a second (bench/)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = _socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    if source is not None:
        try:
            sock.bind((str(source), 0))
        except OSError as exc:
            sock.close()
            return ConnectFailed(exc.errno, exc.strerror)
    return sock


def judge(outcome: Outcome, expected: Callable[[int], bool] | None) -> str | Exception | None:
    """A check result from an outcome: None when healthy, else the reason; an exception for
    a bug. ``expected`` None: a tcp check (no ``connect:`` prefix, as the other tcp paths)."""
    if isinstance(outcome, ConnectFailed):
        return _reason(outcome) if expected is None else f"connect: {_reason(outcome)}"
    if isinstance(outcome, OSError):
        return _reason(outcome)
    if isinstance(outcome, RuntimeError):
        return outcome
    if isinstance(outcome, int):
        return None if expected is None or expected(outcome) else f"HTTP status {outcome}"
    return outcome


class Plan:
    """How to probe one target, worked out once (address, request, what a good status is);
    each call starts one probe: ``report`` gets its verdict (see :func:`judge`) exactly once,
    within ``timeout`` (to :data:`bgplb.wheel.RESOLUTION`), unless the returned callable was
    called first. Nothing here is a coroutine: this is the health runner's lean path.
    With ``lost``, a connection is held to the target between healthy results and ``lost()``
    is called when the target drops it (health/watch.py)."""

    __slots__ = (
        "_address",
        "_expected",
        "_lost",
        "_payload",
        "_poller",
        "_sockaddr",
        "_source",
        "_timeout",
        "_watch",
        "timed_out",
    )

    def __init__(
        self,
        poller: Poller,
        address: IPAddress,
        port: int,
        payload: bytes | None,
        expected: Callable[[int], bool] | None,
        timeout: float,
        source: IPAddress | None = None,
        lost: Callable[[], None] | None = None,
    ) -> None:
        self._poller, self._payload, self._expected = poller, payload, expected
        self._lost = lost
        self._watch: ConnectionWatch | None = None
        self._address = address
        self._sockaddr = sockaddr(address, port)
        self._source = source
        self._timeout = timeout
        self.timed_out = f"timeout after {timeout:g}s"

    def __call__(self, report: Report) -> Callable[[], None]:
        sock = open_socket(self._address, self._source)
        if isinstance(sock, ConnectFailed):
            report(judge(sock, self._expected))
            return _nothing
        flight = _Flight(self, sock, report)
        self._poller.expire_after(self._timeout, flight)
        flight.start(self._sockaddr)
        return flight.close

    def verdict(self, outcome: Outcome) -> str | Exception | None:
        verdict = judge(outcome, self._expected)
        self._follow(verdict is None)
        return verdict

    def _follow(self, healthy: bool) -> None:
        """Hold a watched connection while the target is healthy, none while it is not."""
        if self._lost is None:
            return
        watch = self._watch
        if not healthy:
            if watch is not None:
                watch.close()
                self._watch = None
        elif watch is None or not watch.open:
            sock = open_socket(self._address, self._source)
            if not isinstance(sock, ConnectFailed):  # no watch: the probes go on as ever
                self._watch = ConnectionWatch(self._poller, sock, self._sockaddr, self._lost)

    def close(self) -> None:
        self._follow(healthy=False)


class _Flight(Exchange):
    __slots__ = ("_plan", "_report")

    def __init__(self, plan: Plan, sock: _socket.socket, report: Report) -> None:
        super().__init__(plan._poller, sock, plan._payload, self._landed)
        self._plan, self._report = plan, report

    def _landed(self, outcome: Outcome) -> None:
        self._report(self._plan.verdict(outcome))

    def expire(self) -> None:
        if self._done is not None:  # still running
            self.close()
            self._plan._follow(healthy=False)
            self._report(self._plan.timed_out)


def _nothing() -> None:
    """Cancelling a probe that already reported."""
