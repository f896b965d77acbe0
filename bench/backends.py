"""Many HTTP backends in one process: port BASE+i serves ``/svc/i`` and counts the probes.

``python -m bench.backends ADDRESS BASE COUNT CONTROL_PORT``; ``GET /counts`` on the control
port returns ``{"i": hits}``. Run inside the LB namespace with ``ip netns exec``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

from aiohttp import web


async def serve(address: str, base: int, count: int, control: int) -> None:
    hits: Counter[int] = Counter()

    async def handle(request: web.Request) -> web.Response:
        hits[int(request.match_info["i"])] += 1
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/svc/{i:[0-9]+}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for i in range(count):
        await web.TCPSite(runner, address, base + i, backlog=64).start()

    async def counts(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps({str(k): v for k, v in hits.items()}))

    capp = web.Application()
    capp.router.add_get("/counts", counts)
    crunner = web.AppRunner(capp, access_log=None)
    await crunner.setup()
    await web.TCPSite(crunner, address, control).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    addr, base_, count_, control_ = sys.argv[1:5]
    asyncio.run(serve(addr, int(base_), int(count_), int(control_)))
