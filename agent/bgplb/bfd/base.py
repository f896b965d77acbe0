"""The BFD Protocol. Real: ``frr.FrrBfd``; tests: ``fake.FakeBfd``."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..config import Config
from ..model import PeerKey


class BfdState(enum.StrEnum):
    """bfdd's session states (``show bfd peers json`` "status"), plus ``unknown``: bfdd is
    not running or did not answer. A bounded set: safe as a metric label."""

    UP = "up"
    DOWN = "down"
    INIT = "init"
    SHUTDOWN = "shutdown"  # administratively down
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class BfdSession:
    key: PeerKey  # the BGP peer it protects
    state: BfdState
    since: float = 0.0  # clock time of the last change seen
    detail: str = ""  # why it is unknown (bfdd down, no answer) or bfdd's diagnostic


class Bfd(Protocol):
    async def start(self, config: Config, wake: Callable[[], None]) -> None:
        """Start bfdd for the peers with ``bfd`` set (nothing when none has it); ``wake()``
        whenever a session changes state."""

    async def reconfigure(self, config: Config) -> None:
        """Follow a reload: sessions added, removed or retimed; unchanged ones kept."""

    def sessions(self) -> Mapping[PeerKey, BfdSession]:
        """One entry per peer with ``bfd`` set."""

    def restarts(self) -> int:
        """How many times bfdd or zebra was restarted."""

    async def stop(self) -> None:
        """Stop bfdd and zebra (after the speaker closed its sessions)."""
