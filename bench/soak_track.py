"""Per-route timelines of the soak: how late each change reached r1, which never did, and
how long routes were wrong beyond their allowance, each wrong stretch counted once.

The old count (``Checker.wrong_total``: every (service, sample) pair that disagreed) grows
with the sample rate and with the square of a backlog (a tail 3x longer counted ~40x more in
the f924920 run). A ``Tracker`` keeps, per service and per source (r1's RIB from samples,
r1's FIB from ``ip monitor`` events), the route it last saw and since when, and the truth's
settle windows (``Truth.change``) tell it when a change started, when its allowance ends and
what the route must then be. Definitions (all outside settle windows = "beyond the
allowance"):

- **route change**: a (change, service) pair whose expected route flips (announce <->
  withdraw); a change that leaves the expectation as it was (e.g. a node drain for a service
  whose backend is down) is none.
- **delay**: change started -> the route at r1 last became what the truth says (seconds;
  0 if it already was).
- **late**: reached after the allowance ended (``late_over``: by how much).
- **lost**: the allowance ended and the route had not reached its state when the next change
  touching the service began, or when the run ended. (A change superseded *before* its
  allowance ended is ``superseded``: neither late nor lost, not judged.)
- **wrong episode**: a maximal stretch in which a service's route at r1 disagreed with the
  truth outside any settle window: a late change, a lost one, or a flip nobody asked for
  (e.g. a reload withdrawing a healthy service). Counted once however long it lasts;
  ``wrong_seconds`` sums their lengths (route-seconds).

Every method is called with ``truth.lock`` held (by ``Truth`` or ``Checker``).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .soak_truth import Truth

FIB_EVENT_GUARD = 1.0  # s: a FIB sample only corrects a route with no event for this long


@dataclass
class Pending:
    kind: str
    started: float
    deadline: float
    expected: bool


@dataclass
class Line:
    """One service's route at one source."""

    seen: bool
    since: float  # when ``seen`` last flipped (or was first read)
    accounted: float  # wrongness is accounted up to here
    wrong_open: bool = False  # an episode is in progress (already counted)
    before: bool | None = None  # the expectation when the current window opened
    kind: str = ""
    pending: Pending | None = None


@dataclass
class Tracker:
    truth: Truth
    source: str
    lines: dict[str, Line] = field(default_factory=dict)
    changes: int = 0
    changes_by_kind: Counter[str] = field(default_factory=Counter)
    delays: list[float] = field(default_factory=list)  # s, of the route changes reached
    delays_by_kind: dict[str, list[float]] = field(default_factory=dict)
    late: int = 0
    late_by_kind: Counter[str] = field(default_factory=Counter)
    late_over: list[float] = field(default_factory=list)
    lost: int = 0
    lost_by_kind: Counter[str] = field(default_factory=Counter)
    superseded: int = 0
    unjudged: int = 0  # still within the allowance when the run ended
    episodes: int = 0
    wrong_seconds: float = 0.0
    gaps: int = 0  # FIB samples that corrected a missed event
    first: list[dict[str, Any]] = field(default_factory=list)  # first 200 late/lost/episode/gap

    # ------------------------------------------------------------------ observations

    def seed(self, name: str, seen: bool, at: float) -> None:
        if name not in self.lines:
            self.lines[name] = Line(seen, at, at)

    def observe(self, name: str, seen: bool, at: float) -> None:
        """The route of ``name`` is ``seen`` at r1 from ``at`` on."""
        line = self.lines.get(name)
        if line is None:
            self.seed(name, seen, at)
            return
        if seen == line.seen:
            return
        at = max(at, line.since)  # an event read after a later sample: keep the order
        self._account(name, line, at)
        line.seen, line.since, line.wrong_open = seen, at, False
        p = line.pending
        if p is not None and seen == p.expected:
            self._reached(name, p, at)
            line.pending = None

    def sample(self, seen: set[str], at: float) -> None:
        """A full read of r1 (every VIP it had) at ``at``."""
        for name, vip in self.truth.vips.items():
            self.observe(name, vip in seen, at)

    def correct(self, seen: set[str], at: float) -> None:
        """A full read of r1's FIB at ``at`` against what the events said: a route that
        disagrees and had no event for ``FIB_EVENT_GUARD`` s missed one (counted in ``gaps``);
        the sample's value is taken from ``at``."""
        for name, vip in self.truth.vips.items():
            line = self.lines.get(name)
            present = vip in seen
            if line is None:
                self.seed(name, present, at)
            elif present != line.seen and line.since < at - FIB_EVENT_GUARD:
                self.gaps += 1
                self._note("gap", name, "", at, line.since, None, present)  # started: last event
                self.observe(name, present, at)

    # ------------------------------------------------------------------ the truth's windows

    def opened(self, names: list[str], at: float, kind: str) -> None:
        """A change touching ``names`` starts at ``at`` (their windows are still the old ones)."""
        for name in names:
            line = self.lines.get(name)
            if line is None:
                continue
            self._account(name, line, at)
            line.wrong_open = False
            self._settle_pending(name, line, at, "superseded")
            line.before, line.kind = self.truth.expected(name), kind

    def closed(self, names: list[str], started: float) -> None:
        """The change that opened at ``started`` returned; the truth is the new one and each
        name's window ends at ``truth.until[name]`` (its allowance)."""
        for name in names:
            line = self.lines.get(name)
            if line is None or line.before is None:
                continue
            expected = self.truth.expected(name)
            if expected != line.before:
                self.changes += 1
                self.changes_by_kind[line.kind] += 1
                p = Pending(line.kind, started, self.truth.until[name], expected)
                if line.seen == expected:
                    self._reached(name, p, max(line.since, started))
                else:
                    line.pending = p
            line.before = None

    def finish(self, at: float) -> None:
        for name, line in self.lines.items():
            if self.truth.settled(name, at):
                self._account(name, line, at)
            self._settle_pending(name, line, at, "unjudged")

    # ------------------------------------------------------------------ bookkeeping

    def _reached(self, name: str, p: Pending, at: float) -> None:
        delay = max(0.0, at - p.started)
        self.delays.append(delay)
        self.delays_by_kind.setdefault(p.kind, []).append(delay)
        if at > p.deadline:
            self.late += 1
            self.late_by_kind[p.kind] += 1
            self.late_over.append(at - p.deadline)
            self._note("late", name, p.kind, at, p.started, p.deadline, p.expected)

    def _settle_pending(self, name: str, line: Line, at: float, early: str) -> None:
        """The change pending on ``line`` ends unreached at ``at``: lost if its allowance had
        ended, else ``early`` (superseded / unjudged)."""
        p = line.pending
        if p is None:
            return
        line.pending = None
        if p.deadline < at:
            self.lost += 1
            self.lost_by_kind[p.kind] += 1
            self._note("lost", name, p.kind, at, p.started, p.deadline, p.expected)
        elif early == "superseded":
            self.superseded += 1
        else:
            self.unjudged += 1

    def _account(self, name: str, line: Line, at: float) -> None:
        """Wrongness of ``name`` from what was accounted up to ``at`` (no flip, no window
        opening in between: ``seen`` and the truth are constant; the window may end in it)."""
        start = max(line.accounted, self.truth.until.get(name, -math.inf))
        line.accounted = max(line.accounted, at)
        if start >= at or self.truth.expected(name) == line.seen:
            return
        self.wrong_seconds += at - start
        if not line.wrong_open:
            line.wrong_open = True
            self.episodes += 1
            self._note("episode", name, "", start, None, None, self.truth.expected(name))

    def _note(self, what: str, name: str, kind: str, at: float, *rest: Any) -> None:
        if len(self.first) < 200:
            started, deadline, expected = rest
            self.first.append(
                {
                    "what": what,
                    "service": name,
                    "kind": kind,
                    "at": at,
                    "started": started,
                    "deadline": deadline,
                    "expected": expected,
                }
            )

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "route_changes": self.changes,
            "route_changes_by_kind": dict(self.changes_by_kind),
            "delays_s": self.delays,
            "delay_max_by_kind_s": {k: max(v) for k, v in self.delays_by_kind.items()},
            "late": self.late,
            "late_by_kind": dict(self.late_by_kind),
            "late_over_s": self.late_over,
            "lost": self.lost,
            "lost_by_kind": dict(self.lost_by_kind),
            "superseded": self.superseded,
            "unjudged": self.unjudged,
            "wrong_episodes": self.episodes,
            "wrong_route_seconds": self.wrong_seconds,
            "event_gaps": self.gaps,
            "first": self.first,
        }
