"""An in-memory BFD for unit tests: sessions are set by the test."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..config import Config
from ..eventlog import EventLog
from ..model import PeerKey
from .base import BfdSession, BfdState

SOURCE = "bfd"


class FakeBfd:
    """Sessions start as ``initial``; start/stop/reconfigure go to ``log`` (shared with the
    other fakes: order checks)."""

    def __init__(self, initial: BfdState = BfdState.UP, log: EventLog | None = None) -> None:
        self._initial = initial
        self._log = log
        self._sessions: dict[PeerKey, BfdSession] = {}
        self._wake: Callable[[], None] = lambda: None
        self.started = False
        self.stopped = False
        self.reconfigured = 0
        self.restart_count = 0

    async def start(self, config: Config, wake: Callable[[], None]) -> None:
        self._wake = wake
        self.started = True
        self._follow(config)
        self._record("start")

    async def reconfigure(self, config: Config) -> None:
        self.reconfigured += 1
        self._follow(config)
        self._record("reconfigure")

    def _follow(self, config: Config) -> None:
        keys = {p.key for p in config.peers if p.bfd is not None}
        self._sessions = {
            k: self._sessions.get(k, BfdSession(k, self._initial)) for k in sorted(keys)
        }

    def set_state(self, key: PeerKey, state: BfdState, now: float = 0.0) -> None:
        self._sessions[key] = BfdSession(key, state, now)
        self._record(f"state {key} {state}")
        self._wake()

    def sessions(self) -> Mapping[PeerKey, BfdSession]:
        return dict(self._sessions)

    def restarts(self) -> int:
        return self.restart_count

    async def stop(self) -> None:
        self.stopped = True
        self._record("stop")

    def _record(self, kind: str) -> None:
        if self._log is not None:
            self._log.record(SOURCE, kind, tuple(sorted(self._sessions)))
