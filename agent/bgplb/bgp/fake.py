"""An in-memory speaker for tests: records every change of the wanted route set in the EventLog.

``set_routes`` is recorded as ``("speaker", "set_routes", routes)`` only when the whole wanted
set changes (like the real speaker, which sends only the diff). ``advertised()`` is the wanted
set restricted to peers whose session is up. Peers start up when the speaker starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..config import Config
from ..eventlog import EventLog
from ..model import PeerKey, PeerState, PeerStatus, Route, RouteSet
from .base import SpeakerError, Supervision

SOURCE = "speaker"


def _canonical(routes: RouteSet) -> dict[PeerKey, frozenset[Route]]:
    return {peer: frozenset(rs) for peer, rs in sorted(routes.items()) if rs}


class FakeSpeaker:
    def __init__(self, event_log: EventLog) -> None:
        self.log = event_log
        self.wanted: dict[PeerKey, frozenset[Route]] = {}
        self.states: dict[PeerKey, PeerState] = {}
        self.config: Config | None = None
        self.stopped = False
        self.fail_set_routes = 0  # make the next N set_routes raise SpeakerError
        self._restarts = 0
        self._wake: Callable[[], None] | None = None

    # ------------------------------------------------------------------ Speaker Protocol

    async def start(self, config: Config, wake: Callable[[], None]) -> None:
        self.config = config
        self._wake = wake
        self.stopped = False
        for peer in config.peers:
            self.states.setdefault(peer.key, PeerState.UP)
        self.log.record(SOURCE, "start", tuple(p.key for p in config.peers))

    async def reconfigure(self, config: Config) -> None:
        self.config = config
        keys = {p.key for p in config.peers}
        self.states = {k: v for k, v in self.states.items() if k in keys}
        for key in keys:
            self.states.setdefault(key, PeerState.UP)
        self.wanted = {k: v for k, v in self.wanted.items() if k in keys}
        self.log.record(SOURCE, "reconfigure", tuple(sorted(keys)))

    async def set_routes(self, routes: RouteSet) -> None:
        if self.fail_set_routes > 0:
            self.fail_set_routes -= 1
            raise SpeakerError("injected failure")
        if self.stopped:
            raise SpeakerError("the speaker is stopped")
        new = _canonical(routes)
        if new != self.wanted:
            self.wanted = new
            self.log.record(SOURCE, "set_routes", dict(new))

    def advertised(self) -> RouteSet:
        return {
            peer: rs
            for peer, rs in self.wanted.items()
            if self.states.get(peer, PeerState.UP) is PeerState.UP
        }

    def peers(self) -> Mapping[PeerKey, PeerStatus]:
        return {k: PeerStatus(k, v) for k, v in sorted(self.states.items())}

    def restarts(self) -> int:
        return self._restarts

    def supervision(self) -> Supervision:
        return Supervision(restart_reasons={"exited": self._restarts})

    @property
    def running(self) -> bool:
        """The fake's "process": started and not stopped (status ``processes``)."""
        return self.config is not None and not self.stopped

    async def stop(self) -> None:
        self.wanted = {}
        self.stopped = True
        self.log.record(SOURCE, "stop", None)

    # ------------------------------------------------------------------ test hooks

    def set_peer_state(self, key: PeerKey, state: PeerState) -> None:
        self.states[key] = state
        self.log.record(SOURCE, "peer_state", (key, state))
        if self._wake is not None:
            self._wake()

    def restart(self) -> None:
        """The speaker process died and came back: it re-sends the wanted set, and wakes."""
        self._restarts += 1
        self.log.record(SOURCE, "restart", self._restarts)
        if self._wake is not None:
            self._wake()

    def routes_for(self, peer: PeerKey) -> frozenset[Route]:
        return self.wanted.get(peer, frozenset())
