"""The soak's ground truth and its independent route checker.

``Truth`` is what the soak *driver* knows it did: which services are in the config, which of
their backends it took down, what it drained. It never asks the agent. From that, a VIP
should be announced iff its service is configured, its backend is up and neither the service
nor the node is drained. Every change opens a settle window for the services it touches
(``change(names, settle)``): from the moment the driver starts the change until ``settle``
seconds after the change returned, the route may be either way. Outside a window, a router
route that disagrees with the truth is a *wrong route state*.

``Checker.compare`` sets a set of VIPs the router has against the truth; ``Checker.event``
judges one FIB change (a route added or deleted) at the time it happened. Those counts are
per (service, sample) and grow with a backlog's square; the honest counts (per change:
delay, late, lost; wrong episodes and route-seconds) are the ``Tracker``s' (bench/soak_track.py)
that the checker feeds: one from the RIB samples, one from the FIB events.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .soak_track import Tracker


def health_settle(timing: Iterable[dict[str, Any]], margin: float) -> float:
    """Seconds a flip of a backend may take to reach the router, for the slowest of the
    ``timing`` variants in use: (fall + rise) x interval + timeout + margin."""
    worst = 0.0
    for t in timing:
        interval = float(t.get("interval", 1.0))
        fast = float(t.get("fast_interval", 0.25))
        rise, fall = int(t.get("rise", 3)), int(t.get("fall", 2))
        timeout = float(t.get("timeout", 0.8))
        worst = max(worst, (fall + rise) * max(interval, fast) + timeout)
    return worst + margin


def drain_allowance(
    routes: int, drain_delay: float, margin: float, per_route: float, undrain: bool
) -> float:
    """Seconds a drain (or undrain) of ``routes`` routes may take to be right at r1, counted
    from the API call's return.

    A drain makes the agent re-announce each route at once with the GRACEFUL_SHUTDOWN
    community, wait ``drain_delay``, then withdraw it: 2 UPDATEs per route, through ExaBGP in
    command order, so the last withdraw leaves ExaBGP after both batches, at most
    max(drain_delay, routes x per_route) + routes x per_route <= drain_delay + 2 x routes x
    per_route; ``margin`` covers the rest of the path (bgpd, zebra, the kernel, the sampler).
    An undrain is one announce per route: margin + routes x per_route. ``per_route`` is the
    measured bulk rate with ~4x headroom (1,000 routes reach r1's FIB in ~2.7 s on a quiet
    host, bench/NOTES.md; default 10 ms): at 1,000 routes 25 s for a drain, inside the 30 s
    the node stays drained, so a withdraw that never comes is still seen (``lost``,
    bench/soak_track.py), and it is never stretched by what a run measured."""
    if undrain:
        return margin + routes * per_route
    return drain_delay + margin + 2 * routes * per_route


@dataclass
class Truth:
    """What the driver did. ``vips`` maps every service name the soak may use to its VIP."""

    vips: dict[str, str]
    configured: set[str]
    down: set[str] = field(default_factory=set)
    drained: set[str] = field(default_factory=set)
    node_drained: bool = False
    until: dict[str, float] = field(default_factory=dict)  # settle window end per service
    lock: threading.Lock = field(default_factory=threading.Lock)
    trackers: list[Tracker] = field(default_factory=list)  # told of every window, under lock
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.by_vip = {v: k for k, v in self.vips.items()}

    def expected(self, name: str) -> bool:
        return (
            name in self.configured
            and name not in self.down
            and name not in self.drained
            and not self.node_drained
        )

    def settled(self, name: str, at: float) -> bool:
        """No change touching ``name`` was under way or settling at ``at``."""
        return self.until.get(name, -math.inf) < at

    @contextlib.contextmanager
    def change(
        self, names: Iterable[str] | None, settle: float, kind: str = "change"
    ) -> Iterator[None]:
        """Open a settle window for ``names`` (None: every service) around the caller's
        change; the caller mutates the truth inside (under no lock: a single driver). The
        window ends ``settle`` s (the allowance) after the change returned."""
        touched = list(self.vips) if names is None else list(names)
        with self.lock:
            started = self.clock()
            for tracker in self.trackers:
                tracker.opened(touched, started, kind)
            before = {n: self.until.get(n, -math.inf) for n in touched}
            for n in touched:
                self.until[n] = math.inf
        try:
            yield
        finally:
            with self.lock:
                end = self.clock() + settle
                for n in touched:
                    self.until[n] = max(before[n], end)
                for tracker in self.trackers:
                    tracker.closed(touched, started)


@dataclass
class Mismatch:
    at: float
    vip: str
    service: str
    expected: bool
    seen: bool
    how: str  # sample | event


@dataclass
class Checker:
    truth: Truth
    samples: int = 0
    by_source: dict[str, int] = field(default_factory=dict)  # samples per how
    by_kind: Counter[str] = field(default_factory=Counter)  # "how expected->seen" per mismatch
    by_minute: Counter[int] = field(default_factory=Counter)  # mismatches per minute (epoch)
    by_service: Counter[str] = field(default_factory=Counter)
    comparisons: int = 0
    skipped: int = 0  # (sample, service) pairs inside a settle window
    wrong: list[Mismatch] = field(default_factory=list)  # the first 2,000
    wrong_total: int = 0
    events: int = 0
    wrong_events: list[Mismatch] = field(default_factory=list)  # the first 2,000
    wrong_events_total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    rib: Tracker = field(init=False)  # from the RIB samples
    fib: Tracker = field(init=False)  # from the FIB events, corrected by the FIB samples

    def __post_init__(self) -> None:
        self.rib, self.fib = Tracker(self.truth, "rib"), Tracker(self.truth, "fib")
        self.truth.trackers += [self.rib, self.fib]

    def finish(self, at: float) -> None:
        with self.truth.lock:
            self.rib.finish(at)
            self.fib.finish(at)

    def compare(self, seen: set[str], started: float, how: str = "sample") -> list[Mismatch]:
        """``seen``: the soak's VIPs the router had, read from ``started`` on (``how``: from
        its RIB or its FIB)."""
        out = []
        t = self.truth
        with t.lock:
            names = list(t.vips)
            for name in names:
                if not t.settled(name, started):
                    self.skipped += 1
                    continue
                self.comparisons += 1
                exp, got = t.expected(name), t.vips[name] in seen
                if exp != got:
                    out.append(Mismatch(started, t.vips[name], name, exp, got, how))
            if how == "rib":
                self.rib.sample(seen, started)
            elif how == "fib":
                self.fib.correct(seen, started)
            for vip in seen - set(t.by_vip):
                out.append(Mismatch(started, vip, "?", False, True, how))
        with self.lock:
            self.samples += 1
            self.by_source[how] = self.by_source.get(how, 0) + 1
            self.wrong += out[: max(0, 2000 - len(self.wrong))]
            self.wrong_total += len(out)
            self.count(out)
        return out

    def event(self, vip: str, present: bool, at: float) -> Mismatch | None:
        """A FIB change seen at ``at``: the route to ``vip`` was installed (``present``) or
        deleted. Wrong when the truth was settled and says the opposite."""
        t = self.truth
        with t.lock:
            name = t.by_vip.get(vip)
            if name is not None:
                self.fib.observe(name, present, at)
            if name is None:
                bad: Mismatch | None = Mismatch(at, vip, "?", False, present, "event")
            elif t.settled(name, at) and t.expected(name) != present:
                bad = Mismatch(at, vip, name, t.expected(name), present, "event")
            else:
                bad = None
        with self.lock:
            self.events += 1
            if bad is not None:
                self.wrong_events_total += 1
                if len(self.wrong_events) < 2000:
                    self.wrong_events.append(bad)
                self.count([bad])
        return bad

    def count(self, ms: list[Mismatch]) -> None:
        for m in ms:
            self.by_kind[f"{m.how} {m.expected}->{m.seen}"] += 1
            self.by_minute[int(m.at // 60) * 60] += 1
            self.by_service[m.service] += 1
