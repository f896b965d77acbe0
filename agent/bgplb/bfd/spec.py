"""Pure: the bfdd peers a config wants, their config text and vtysh edits, and the session
states parsed from ``show bfd peers json``.

A single-hop peer is bound to the interface (and source address) the kernel routes it
through (``lookup.py``); a peer with ``multihop`` set gets a multihop session, which bfdd
keys by the local address (``peers[].local_address``, else the route's source address).
The text has no ``exit`` lines: FRR climbs nodes by itself, and an ``exit`` read by a daemon
that does not know a block drops it out of config mode (frr-exabgp-lab.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..config import Config, PeerConfig
from ..model import PeerKey
from .base import BfdSession, BfdState


@dataclass(frozen=True)
class PeerRoute:
    """How the kernel reaches a peer: the outgoing interface and the source address."""

    interface: str | None
    source: str | None


@dataclass(frozen=True, order=True)
class BfdPeerSpec:
    key: PeerKey
    peer: str
    local: str | None
    interface: str | None  # single hop only
    multihop: bool
    interval_ms: int
    multiplier: int

    def header(self) -> str:
        """``peer ...``: the identity bfdd keys the session by (also for ``no peer``)."""
        words = ["peer", self.peer]
        if self.multihop:
            words.append("multihop")
        if self.local:
            words += ["local-address", self.local]
        if self.interface and not self.multihop:
            words += ["interface", self.interface]
        return " ".join(words)

    def timers(self) -> list[str]:
        return [
            f"detect-multiplier {self.multiplier}",
            f"receive-interval {self.interval_ms}",
            f"transmit-interval {self.interval_ms}",
        ]


def bfd_peers(config: Config) -> list[PeerConfig]:
    return [p for p in config.peers if p.bfd is not None]


def peer_specs(config: Config, routes: Mapping[PeerKey, PeerRoute]) -> tuple[BfdPeerSpec, ...]:
    out = []
    for p in bfd_peers(config):
        assert p.bfd is not None
        route = routes.get(p.key, PeerRoute(None, None))
        local = str(p.local_address) if p.local_address is not None else route.source
        out.append(
            BfdPeerSpec(
                key=p.key,
                peer=str(p.address),
                local=local,
                interface=None if p.multihop else route.interface,
                multihop=p.multihop is not None,
                interval_ms=p.bfd.interval_ms,
                multiplier=p.bfd.multiplier,
            )
        )
    return tuple(sorted(out))


HEADER = ("frr defaults traditional", "hostname bgp-lb")


def render_zebra() -> str:
    return "\n".join(HEADER) + "\n"


def render_bfdd(specs: Iterable[BfdPeerSpec]) -> str:
    lines = [*HEADER, "bfd"]
    for s in specs:
        lines.append(f" {s.header()}")
        lines += [f"  {t}" for t in s.timers()]
    return "\n".join(lines) + "\n"


def edit_commands(old: Sequence[BfdPeerSpec], new: Sequence[BfdPeerSpec]) -> list[str]:
    """vtysh commands turning bfdd's ``old`` peers into ``new``: removed or re-keyed peers
    are deleted, added or retimed ones (re)defined; unchanged ones are not touched. Empty
    when nothing changed."""
    old_by = {s.header(): s for s in old}
    new_by = {s.header(): s for s in new}
    removed = [h for h in old_by if h not in new_by]
    changed = [h for h, s in new_by.items() if old_by.get(h) != s]
    if not removed and not changed:
        return []
    cmds = ["configure terminal", "bfd"]
    cmds += [f"no {h}" for h in removed]
    for h in changed:
        cmds += [h, *new_by[h].timers(), "exit"]
    return [*cmds, "end"]


def parse_sessions(
    text: str,
    specs: Sequence[BfdPeerSpec],
    previous: Mapping[PeerKey, BfdSession],
    now: float,
) -> dict[PeerKey, BfdSession]:
    """``show bfd peers json`` -> one session per wanted peer; a peer bfdd does not list is
    ``unknown``. ``since`` moves only when the state changes. Raises ValueError on junk."""
    data = json.loads(text or "[]")
    if not isinstance(data, list):
        raise ValueError("show bfd peers json: not a list")
    seen: dict[tuple[str, bool], tuple[BfdState, str]] = {}
    for item in data:
        if not isinstance(item, dict):
            continue
        try:
            state = BfdState(str(item.get("status", "")))
        except ValueError:
            state = BfdState.UNKNOWN
        diag = str(item.get("diagnostic", ""))
        seen[(str(item.get("peer", "")), bool(item.get("multihop", False)))] = (
            state,
            "" if diag == "ok" else diag,
        )
    out = {}
    for s in specs:
        state, detail = seen.get((s.peer, s.multihop), (BfdState.UNKNOWN, "not listed by bfdd"))
        out[s.key] = session(s.key, state, detail, previous, now)
    return out


def session(
    key: PeerKey,
    state: BfdState,
    detail: str,
    previous: Mapping[PeerKey, BfdSession],
    now: float,
) -> BfdSession:
    before = previous.get(key)
    since = before.since if before is not None and before.state is state else now
    return BfdSession(key, state, since, detail)
