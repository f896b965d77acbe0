"""The speaker Protocol. Real: ``exabgp.ExaBGPSpeaker``; tests: ``fake.FakeSpeaker``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ..config import Config
from ..model import PeerKey, PeerStatus, RouteSet


class SpeakerError(Exception):
    """The speaker could not take the routes (dead, timed out)."""


@dataclass(frozen=True)
class Supervision:
    """The speaker's supervision counters (totals since the agent started). Restart reasons
    are a bounded set (``bgp.supervisor.REASONS``)."""

    ack_timeouts: int = 0  # the ack deadline or a heartbeat was missed
    command_retries: int = 0  # refused commands sent again
    commands_refused: int = 0  # "error" acks
    restart_reasons: Mapping[str, int] = field(default_factory=dict)
    last_backoff_seconds: float = 0.0  # the wait before the latest restart


class Speaker(Protocol):
    async def start(self, config: Config, wake: Callable[[], None]) -> None:
        """Start the speaker for these peers; ``wake()`` on peer state changes and restarts."""

    async def reconfigure(self, config: Config) -> None:
        """Apply peer changes without flapping unchanged peers; routes are re-sent.

        All or nothing: it either returns with the new config in force, or raises
        ``SpeakerError`` with the old config still in force (the speaker's config, its
        rendered file, its peers and what it believes each peer holds). A reload that the
        speaker process may have half-applied (no answer) restarts it on the old config."""

    async def set_routes(self, routes: RouteSet) -> None:
        """The whole wanted set per peer. The speaker sends only the diff to what it sent,
        and re-sends everything when a peer comes up or the speaker restarts."""

    def advertised(self) -> RouteSet:
        """What the speaker believes each peer has now (empty while a peer is down)."""

    def peers(self) -> Mapping[PeerKey, PeerStatus]:
        """Session state per peer."""

    def restarts(self) -> int:
        """How many times the speaker process was restarted."""

    def supervision(self) -> Supervision:
        """Ack timeouts, retries, refusals and restarts by reason (for metrics/status)."""

    async def stop(self) -> None:
        """Withdraw everything and stop (the session closes)."""
