"""The route lookup behind a single-hop BFD session: which interface and source address
the kernel uses for a peer (``ip -j route get``, in the speaker's namespace, with a timeout).
A failed lookup leaves the session unbound (bfdd then picks by itself) and is logged."""

from __future__ import annotations

import asyncio
import json
import logging

from ..logs import log_event
from .spec import PeerRoute

log = logging.getLogger("bgplb.bfd")

LOOKUP_TIMEOUT = 2.0


def route_argv(address: str, netns: str | None) -> list[str]:
    ns = ["-n", netns] if netns else []
    return ["ip", *ns, "-j", "route", "get", address]


def parse_route(text: str) -> PeerRoute:
    data = json.loads(text or "[]")
    first = data[0] if isinstance(data, list) and data else {}
    dev = first.get("dev") if isinstance(first, dict) else None
    src = first.get("prefsrc") if isinstance(first, dict) else None
    return PeerRoute(str(dev) if dev else None, str(src) if src else None)


async def lookup_route(address: str, netns: str | None) -> PeerRoute:
    try:
        proc = await asyncio.create_subprocess_exec(
            *route_argv(address, netns),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        log_event(log, "bfd_route_lookup_failed", level=logging.WARNING, peer=address, error=str(e))
        return PeerRoute(None, None)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), LOOKUP_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log_event(
            log, "bfd_route_lookup_failed", level=logging.WARNING, peer=address, error="timeout"
        )
        return PeerRoute(None, None)
    if proc.returncode != 0:
        why = err.decode(errors="replace").strip()
        log_event(log, "bfd_route_lookup_failed", level=logging.WARNING, peer=address, error=why)
        return PeerRoute(None, None)
    try:
        return parse_route(out.decode(errors="replace"))
    except ValueError as e:
        log_event(log, "bfd_route_lookup_failed", level=logging.WARNING, peer=address, error=str(e))
        return PeerRoute(None, None)
