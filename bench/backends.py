"""Many HTTP backends in one process: port BASE+i answers 200 to ``GET /svc/i`` (else 404)
and counts the probes per port.

``python -m bench.backends ADDRESS BASE COUNT CONTROL_PORT``; ``GET /counts`` on the control
port returns ``{"i": hits}``. Run inside the LB namespace with ``ip netns exec``. Plain asyncio
protocols, not aiohttp: an aiohttp server costs ~1 ms of CPU per request, and at 1,000 probes a
second on this 2-vCPU box the backend (not the agent) became the bottleneck.

``python -m bench.backends toggle ADDRESS PORT``: one backend whose port SIGUSR1 closes
(connection refused, like a killed backend: its open connections are reset too, as the kernel
does when a process dies) and SIGUSR2 reopens; it prints ``closed`` / ``open`` once done.
Used by the convergence benchmark: restarting a Python server takes ~1 s under load, which
made each trial seconds longer.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Probe(asyncio.Protocol):
    def __init__(
        self,
        index: int,
        hits: Counter[int],
        counts: bool = False,
        any_path: bool = False,
        live: set[asyncio.Transport] | None = None,
    ) -> None:
        self.index, self.hits, self.counts, self.any_path = index, hits, counts, any_path
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.live = live  # the open connections, when the owner wants to reset them

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.live is not None:
            self.live.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.live is not None and self.transport is not None:
            self.live.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" not in self.buffer or self.transport is None:
            return
        path = self.buffer.split(b" ", 2)[1] if self.buffer.count(b" ") >= 2 else b""
        if self.counts:
            body = json.dumps({str(k): v for k, v in self.hits.items()}).encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            self.transport.write(head.encode() + body)
        elif self.any_path or path == f"/svc/{self.index}".encode():
            self.hits[self.index] += 1
            self.transport.write(OK)
        else:
            self.transport.write(NOT_FOUND)
        self.transport.close()


async def serve(address: str, base: int, count: int, control: int) -> None:
    loop = asyncio.get_running_loop()
    hits: Counter[int] = Counter()
    for i in range(count):
        await loop.create_server(lambda i=i: Probe(i, hits), address, base + i, backlog=128)  # type: ignore[misc]
    await loop.create_server(lambda: Probe(-1, hits, counts=True), address, control)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def toggle(address: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    hits: Counter[int] = Counter()
    state: dict[str, asyncio.Server | None] = {"server": None}
    live: set[asyncio.Transport] = set()

    async def open_() -> None:
        if state["server"] is None:
            state["server"] = await loop.create_server(
                lambda: Probe(0, hits, any_path=True, live=live),
                address,
                port,
                reuse_address=True,
            )
        print("open", flush=True)

    def close() -> None:
        server = state["server"]
        if server is not None:
            server.close()  # connection refused from now on
            state["server"] = None
        for transport in list(live):  # what a killed process's connections get: a reset
            transport.abort()
        print("closed", flush=True)

    loop.add_signal_handler(signal.SIGUSR1, close)
    loop.add_signal_handler(signal.SIGUSR2, lambda: asyncio.ensure_future(open_()))
    await open_()
    await asyncio.Event().wait()


if __name__ == "__main__":
    if sys.argv[1] == "toggle":
        asyncio.run(toggle(sys.argv[2], int(sys.argv[3])))
    else:
        addr, base_, count_, control_ = sys.argv[1:5]
        asyncio.run(serve(addr, int(base_), int(count_), int(control_)))
