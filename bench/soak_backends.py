"""The soak's backends: port BASE+i answers 200 to ``GET /svc/i`` while backend i is up.

``python -m bench.soak_backends ADDRESS BASE COUNT CONTROL_PORT`` (inside the LB namespace).
``GET /down?ids=1,2,3`` / ``GET /up?ids=...`` on the control port take backends down / up and
answer once done (a plain "ok"). A down backend fails its probe in one of two ways, chosen
by its index so both are exercised all the time:

- even i: it still accepts, answers ``503`` (the check's expected status is 200);
- odd i: its listening socket is closed (connection refused, as after a crash) and any open
  connection is reset; ``up`` opens it again.

Plain asyncio protocols (bench/backends.py explains why not aiohttp).
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import parse_qs, urlsplit

from .backends import NOT_FOUND, OK

UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Pool:
    def __init__(self, address: str, base: int, count: int) -> None:
        self.address, self.base, self.count = address, base, count
        self.down: set[int] = set()
        self.servers: dict[int, asyncio.Server] = {}
        self.live: dict[int, set[asyncio.Transport]] = {}

    async def open(self, i: int) -> None:
        if i in self.servers:
            return
        loop = asyncio.get_running_loop()
        self.live.setdefault(i, set())
        self.servers[i] = await loop.create_server(
            lambda: Http(self, i), self.address, self.base + i, backlog=128, reuse_address=True
        )

    def close(self, i: int) -> None:
        server = self.servers.pop(i, None)
        if server is not None:
            server.close()
        for transport in list(self.live.get(i, ())):
            transport.abort()

    async def set_down(self, ids: list[int]) -> None:
        for i in ids:
            self.down.add(i)
            if i % 2:
                self.close(i)

    async def set_up(self, ids: list[int]) -> None:
        for i in ids:
            self.down.discard(i)
            await self.open(i)


class Http(asyncio.Protocol):
    def __init__(self, pool: Pool, index: int) -> None:
        self.pool, self.index = pool, index
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pool.live.setdefault(self.index, set()).add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.pool.live.get(self.index, set()).discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer or self.transport is None:
            return
        path = self.buffer.split(b" ", 2)[1] if self.buffer.count(b" ") >= 2 else b""
        if path != f"/svc/{self.index}".encode():
            self.transport.write(NOT_FOUND)
        elif self.index in self.pool.down:
            self.transport.write(UNAVAILABLE)
        else:
            self.transport.write(OK)
        self.transport.close()


class Control(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and self.task is None:
            self.task = asyncio.ensure_future(self.handle())

    async def handle(self) -> None:
        assert self.transport is not None
        target = self.buffer.split(b" ", 2)[1].decode()
        url = urlsplit(target)
        ids = [int(x) for x in parse_qs(url.query).get("ids", [""])[0].split(",") if x]
        if url.path == "/down":
            await self.pool.set_down(ids)
        elif url.path == "/up":
            await self.pool.set_up(ids)
        body = b"ok\n"
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        self.transport.write(head.encode() + body)
        self.transport.close()


async def serve(address: str, base: int, count: int, control: int) -> None:
    pool = Pool(address, base, count)
    for i in range(count):
        await pool.open(i)
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: Control(pool), address, control, reuse_address=True)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    addr, base_, count_, control_ = sys.argv[1:5]
    asyncio.run(serve(addr, int(base_), int(count_), int(control_)))
