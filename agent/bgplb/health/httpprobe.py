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
        try:
            if source is not None:
                sock.bind((str(source), 0))
            await loop.sock_connect(sock, (str(address), port))
        except OSError as exc:
            return f"connect: {_reason(exc)}"
        try:
            await loop.sock_sendall(sock, payload)
            head = b""
            while b"\r\n" not in head:
                chunk = await loop.sock_recv(sock, 4096)
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
