"""Lines ExaBGP writes to its API process: plain-text acks, JSON events, chatter.

With ``exabgp.api.ack=true`` every command is answered by a plain ``done`` or ``error`` line,
also with ``encoder json``. Events are one JSON object per line; the ones we act on are
``"type": "state"`` (connected / up / down, with a reason on down).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from ..model import PeerKey, PeerState


@dataclass(frozen=True)
class Ack:
    ok: bool


@dataclass(frozen=True)
class StateEvent:
    peer: PeerKey
    state: PeerState
    reason: str = ""


@dataclass(frozen=True)
class Other:
    """Anything else (other event types, ``reload in progress``); kept for debug logging."""

    text: str


Event = Ack | StateEvent | Other

_STATES = {
    "connected": PeerState.CONNECTED,
    "up": PeerState.UP,
    "down": PeerState.DOWN,
}


def normalize_peer(text: str) -> PeerKey:
    """ExaBGP's spelling of a peer address -> ours (``str(ipaddress.ip_address(..))``)."""
    return str(ipaddress.ip_address(text))


def parse_line(line: str) -> Event:
    text = line.strip()
    if text == "done":
        return Ack(ok=True)
    if text == "error":
        return Ack(ok=False)
    if not text.startswith("{"):
        return Other(text)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's limit
        return Other(text)
    if not isinstance(obj, dict) or obj.get("type") != "state":
        return Other(text)
    neighbor = obj.get("neighbor")
    if not isinstance(neighbor, dict):
        return Other(text)
    address = neighbor.get("address")
    state = _STATES.get(str(neighbor.get("state", "")))
    if not isinstance(address, dict) or state is None:
        return Other(text)
    try:
        peer = normalize_peer(str(address.get("peer", "")))
    except ValueError:
        return Other(text)
    reason = str(neighbor.get("reason", "")) if state is PeerState.DOWN else ""
    return StateEvent(peer=peer, state=state, reason=reason)
