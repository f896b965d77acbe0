"""The speaker Protocol. Real: ``exabgp.ExaBGPSpeaker``; tests: ``fake.FakeSpeaker``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from ..config import Config
from ..model import PeerKey, PeerStatus, RouteSet


class SpeakerError(Exception):
    """The speaker could not take the routes (dead, timed out)."""


class Speaker(Protocol):
    async def start(self, config: Config, wake: Callable[[], None]) -> None:
        """Start the speaker for these peers; ``wake()`` on peer state changes and restarts."""

    async def reconfigure(self, config: Config) -> None:
        """Apply peer changes without flapping unchanged peers; routes are re-sent."""

    async def set_routes(self, routes: RouteSet) -> None:
        """The whole wanted set per peer. The speaker sends only the diff to what it sent,
        and re-sends everything when a peer comes up or the speaker restarts."""

    def advertised(self) -> RouteSet:
        """What the speaker believes each peer has now (empty while a peer is down)."""

    def peers(self) -> Mapping[PeerKey, PeerStatus]:
        """Session state per peer."""

    def restarts(self) -> int:
        """How many times the speaker process was restarted."""

    async def stop(self) -> None:
        """Withdraw everything and stop (the session closes)."""
