"""An ordered log of what the fakes did, shared by the fake dataplane and the fake speaker.

Tests assert orderings on it (e.g. "the withdraw precedes any teardown").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    seq: int
    time: float
    source: str  # "dataplane" | "speaker"
    kind: str  # action class name, or "set_routes"
    detail: Any


@dataclass
class EventLog:
    clock: Any = None  # object with .now() -> float; optional
    events: list[Event] = field(default_factory=list)

    def record(self, source: str, kind: str, detail: Any) -> Event:
        now = float(self.clock.now()) if self.clock is not None else 0.0
        ev = Event(len(self.events), now, source, kind, detail)
        self.events.append(ev)
        return ev

    def of(self, source: str | None = None, kind: str | None = None) -> list[Event]:
        return [
            e
            for e in self.events
            if (source is None or e.source == source) and (kind is None or e.kind == kind)
        ]

    def clear(self) -> None:
        self.events.clear()
