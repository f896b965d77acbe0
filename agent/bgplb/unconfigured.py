"""Unconfigured mode: the node has no usable config, so it announces nothing and says why.

The appliance image runs ``bgp-lb unconfigured --reason TEXT`` instead of the agent when the
config disk is missing or invalid. It serves a tiny read-only API on its own: ``/healthz``
(200: the process is up), ``/readyz`` (503: not ready to serve), ``/api/v1/status``
(``{"state": "unconfigured", "reason": ...}``) and ``/metrics`` (``bgplb_unconfigured 1``).
Nothing here touches the network configuration, IPVS or BGP.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import __version__
from .buildinfo import image_version

if TYPE_CHECKING:  # aiohttp and prometheus_client load only when the mode runs (fast CLI start)
    from aiohttp import web

log = logging.getLogger(__name__)

STATE = "unconfigured"
MAX_REASON = 2000  # characters kept from --reason
DEFAULT_LISTEN = "0.0.0.0"
DEFAULT_PORT = 9180
BIND_TIMEOUT = 10.0  # seconds to bind the listener


@dataclass(frozen=True)
class Unconfigured:
    """Why the node is unconfigured (one line, shown verbatim by the API)."""

    reason: str

    @classmethod
    def from_text(cls, text: str) -> Unconfigured:
        reason = " ".join(text.split())[:MAX_REASON]
        return cls(reason or "no reason given")


def build_unconfigured_app(state: Unconfigured) -> web.Application:
    from aiohttp import web
    from prometheus_client import CollectorRegistry, Gauge, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    registry = CollectorRegistry()
    Gauge(
        "bgplb_unconfigured",
        "1 while the node runs without a usable config (nothing is announced)",
        registry=registry,
    ).set(1)
    Gauge(
        "bgplb_build_info", "bgp-lb version", ["version", "image_version"], registry=registry
    ).labels(version=__version__, image_version=image_version()).set(1)
    metrics_body = generate_latest(registry)
    status = {
        "state": STATE,
        "reason": state.reason,
        "version": __version__,
        "image_version": image_version(),
    }

    async def healthz(request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok", "state": STATE})

    async def readyz(request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"ready": False, "state": STATE, "reason": state.reason}, status=503
        )

    async def api_status(request: web.Request) -> web.StreamResponse:
        return web.json_response(status)

    async def metrics(request: web.Request) -> web.StreamResponse:
        resp = web.Response(body=metrics_body)
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/status", api_status)
    app.router.add_get("/metrics", metrics)
    return app


async def serve_unconfigured(
    state: Unconfigured, listen: str, port: int, stop: asyncio.Event
) -> None:
    """Serve until ``stop`` is set."""
    from aiohttp import web

    runner = web.AppRunner(build_unconfigured_app(state), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, listen, port)
        async with asyncio.timeout(BIND_TIMEOUT):
            await site.start()
        log.warning("unconfigured: %s (API on %s:%d)", state.reason, listen, port)
        await stop.wait()
    finally:
        await runner.cleanup()


def add_unconfigured_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("unconfigured", help="serve the unconfigured-mode API (no usable config)")
    p.add_argument("--reason", required=True, help="why the node is unconfigured")
    p.add_argument("--listen", default=DEFAULT_LISTEN, type=_address)
    p.add_argument("--port", default=DEFAULT_PORT, type=int)


def _address(text: str) -> str:
    return str(ipaddress.ip_address(text))


def run_unconfigured(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    state = Unconfigured.from_text(args.reason)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_unconfigured(state, args.listen, args.port, stop)

    asyncio.run(main())
    return 0
