"""A check's place in the schedule and what a reload carries over.

:class:`Entry` is one check's schedule and state (its next deadline, the probe in flight, the
timer or task driving it); :func:`carry_over` builds the entries of a new set of checks from
the old ones (``HealthRunner.configure_checks`` documents the rules); :func:`splay` spreads the
first deadlines over the first interval.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from ..clock import Timer
from ..cooperative import Steps, run_to_end
from .checks import Cancel, Starter
from .targets import ResolvedCheck, target_address
from .tracker import INITIAL, CheckKey, CheckState

BACKSTOP = 1.0  # extra seconds a prober may overrun its timeout before the runner cuts it


def splay(key: CheckKey, interval: float) -> float:
    """A deterministic offset in ``[0, interval)`` spreading first probes."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return interval * (int.from_bytes(digest, "big") / 2**64)


@dataclass
class Entry:
    spec: ResolvedCheck
    state: CheckState
    due: float  # deadline of the next probe
    probing_since: float | None = None
    task: asyncio.Task[None] | None = None
    timer: Timer | None = None  # callback-driven checks: the next probe's start
    start: Starter | None = None  # callback-driven checks: starts one probe
    cancel: Cancel | None = None  # callback-driven checks: stops the probe in flight
    flight: int = 0  # callback-driven checks: which probe a result belongs to
    poked_at: float = -math.inf  # the last probe a dropped watch started (``_poke``)
    stopped: bool = False
    verifying: bool = False  # the target changed on reload: fast interval until settled

    def next_interval(self) -> float:
        """The interval after the current result: fast while the state is changing or a
        changed target is being verified."""
        fast = self.state.changing or self.verifying
        return self.spec.fast_interval if fast else self.spec.interval

    @property
    def started(self) -> bool:
        return self.task is not None or self.timer is not None or self.probing_since is not None

    def stop(self) -> None:
        """No more probes; the one in flight (if any) is abandoned, its result ignored."""
        self.stopped = True
        if self.task is not None:
            self.task.cancel()
        if self.timer is not None:
            self.timer.cancel()
        if self.cancel is not None:
            self.cancel()
        if self.start is not None:
            self.start.close()
        self.task = self.timer = self.cancel = None
        self.probing_since = None
        self.flight += 1

    def late_after(self) -> float:
        """When this check is overdue (the runner is stuck if it is much later than this)."""
        if self.probing_since is not None:
            return self.probing_since + self.spec.timeout + BACKSTOP
        return self.due


def _retimed_due(old: Entry, spec: ResolvedCheck, now: float) -> float:
    """When a check whose timing changed probes next: at its old deadline, or earlier when
    the new interval says so (a 10 s -> 1 s change does not wait out the old 10 s). A probe
    in flight is abandoned with the old entry, so it is repeated at once."""
    if old.probing_since is not None:
        return now
    last = old.due - old.next_interval()  # the previous deadline
    fast = old.state.changing or old.verifying
    interval = spec.fast_interval if fast else spec.interval
    return max(now, min(old.due, last + interval))


def _moved(
    entries: Mapping[CheckKey, Entry], specs: Mapping[CheckKey, ResolvedCheck]
) -> dict[CheckKey, CheckKey]:
    """New real-server check keys that replace exactly one removed key of the same service,
    check name and real server address (only the port in ``target`` changed)."""

    def ident(key: CheckKey) -> tuple[str, str, str] | None:
        if key.target is None:
            return None
        return key.service, key.check, target_address(key.target)

    gone: dict[tuple[str, str, str], list[CheckKey]] = {}
    for key in entries:
        i = ident(key)
        if i is not None and key not in specs:
            gone.setdefault(i, []).append(key)
    new: dict[tuple[str, str, str], list[CheckKey]] = {}
    for key in specs:
        i = ident(key)
        if i is not None and key not in entries:
            new.setdefault(i, []).append(key)
    return {
        keys[0]: gone[i][0]
        for i, keys in new.items()
        if len(keys) == 1 and len(gone.get(i, ())) == 1
    }


class Carry(enum.Enum):
    """What a reload does with one check of the new set (``HealthRunner.configure_checks``)."""

    SAME = "same"  # the old entry itself
    RETIMED = "retimed"  # a new entry, the old state and counters
    RETARGETED = "retargeted"  # a new entry, the old state, counters reset, verifying
    NEW = "new"  # a new entry, DOWN


Carries = dict[CheckKey, tuple[Carry, CheckKey | None]]  # new key -> (how, old key)


def carry_steps(
    entries: Mapping[CheckKey, Entry], specs: Mapping[CheckKey, ResolvedCheck]
) -> Steps[Carries]:
    """How each new check carries over from ``entries``: the costly part of a reload (a spec
    comparison per check: ~4-7 ms at 1,000 on the event loop), as steps (cooperative.py).
    It reads the entries' keys and specs only, which nothing but a reload changes."""
    moved = _moved(entries, specs)
    yield
    out: Carries = {}
    for key, spec in specs.items():
        yield
        old_key = key if key in entries else moved.get(key)
        if old_key is None:
            out[key] = (Carry.NEW, None)
        elif entries[old_key].spec == spec:
            out[key] = (Carry.SAME, old_key)
        elif entries[old_key].spec.same_target(spec):
            out[key] = (Carry.RETIMED, old_key)
        else:
            out[key] = (Carry.RETARGETED, old_key)
    return out


def carry_over(
    entries: Mapping[CheckKey, Entry],
    specs: Mapping[CheckKey, ResolvedCheck],
    now: float,
    carries: Carries | None = None,
) -> dict[CheckKey, Entry]:
    """The entries of ``specs``: an unchanged one is the old entry itself, a retimed or
    retargeted one a new entry with the old state *now*, a new key a new entry (DOWN).
    ``carries``: :func:`carry_steps` of the same entries and specs, run earlier."""
    if carries is None:
        carries = run_to_end(carry_steps(entries, specs))
    new: dict[CheckKey, Entry] = {}
    for key, spec in specs.items():
        how, old_key = carries[key]
        if how is Carry.NEW or old_key is None:
            new[key] = Entry(spec, INITIAL, due=now + splay(key, spec.interval))
            continue
        old = entries[old_key]
        if how is Carry.SAME:
            new[key] = old
        elif how is Carry.RETIMED:
            new[key] = Entry(
                spec, old.state, due=_retimed_due(old, spec, now), verifying=old.verifying
            )
        else:
            state = replace(old.state, successes=0, failures=0)
            new[key] = Entry(spec, state, due=now, verifying=True)
    return new
