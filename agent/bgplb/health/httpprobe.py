"""A lean HTTP/1.1 probe on raw non-blocking sockets, for plain ``http`` checks that only
look at the status code (no ``body_match``).

Why: bench/ profiled 1,000 services with an http check each at 1 s; aiohttp's client path
(URL building, connector, happy eyeballs, response parser) cost ~1 ms of CPU per probe, so
the agent's one event loop was saturated and probes timed out. This does one connect, one
send and reads until the status line is in (a small response arrives whole, so the close
is clean; like the aiohttp path, the rest of a large body is not read). Same results as
aiohttp: ``None`` on an expected status, else ``HTTP status N``, ``connect: <reason>``, ``server
disconnected``. The caller bounds the whole probe with its timeout (cancellation closes the
socket).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable

from ..model import IPAddress

MAX_HEAD = 16384  # bytes read while looking for the status line


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


def _sockaddr(address: IPAddress, port: int) -> tuple[str, int]:
    key = (address, port)
    found = _SOCKADDRS.get(key)
    if found is None:
        if len(_SOCKADDRS) > 65536:  # bounded: targets come from the config
            _SOCKADDRS.clear()
        found = _SOCKADDRS[key] = (str(address), port)
    return found


_SOCKADDRS: dict[tuple[IPAddress, int], tuple[str, int]] = {}


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, write: bool) -> None:
    """Until ``fd`` is writable (or readable). The loop's own sock_connect/sock_recv do the
    same with more layers (address resolution, transport checks, done callbacks): at 1,000
    probes/s those layers were a good part of the agent's CPU (bench/, py-spy)."""
    fut = loop.create_future()
    if write:
        loop.add_writer(fd, _wake, fut)
    else:
        loop.add_reader(fd, _wake, fut)
    try:
        await fut
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def probe(
    address: IPAddress,
    port: int,
    payload: bytes,
    expected: Callable[[int], bool],
    source: IPAddress | None = None,
) -> str | None:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        fd = sock.fileno()
        try:
            if source is not None:
                sock.bind((str(source), 0))
            err = sock.connect_ex(_sockaddr(address, port))
            if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EINTR):
                await _ready(loop, fd, write=True)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, os.strerror(err))
        except OSError as exc:
            return f"connect: {_reason(exc)}"
        try:
            try:
                sent = sock.send(payload)  # a request this small goes out whole, mostly
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent < len(payload):
                await loop.sock_sendall(sock, payload[sent:])
            head = b""
            while b"\r\n" not in head:
                try:
                    chunk = sock.recv(4096)
                except (BlockingIOError, InterruptedError):
                    await _ready(loop, fd, write=False)
                    continue
                if not chunk:
                    return "server disconnected"
                head += chunk
                if len(head) > MAX_HEAD:
                    return "malformed HTTP response"
            status = parse_status(head)
            if status is None:
                return "malformed HTTP response"
        except OSError as exc:
            return _reason(exc)
    return None if expected(status) else f"HTTP status {status}"
