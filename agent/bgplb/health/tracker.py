"""The rise/fall state machine of one check: pure, time passed in, no I/O.

A new check starts DOWN and needs ``rise`` consecutive successes to go UP; an UP check goes
DOWN after ``fall`` consecutive failures. A success resets the failure count and vice versa.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..model import CheckStatus


@dataclass(frozen=True, order=True)
class CheckKey:
    """Which check: ``target`` is None for a service-level check, else ``addr:port``."""

    service: str
    target: str | None
    check: str

    def __str__(self) -> str:
        owner = self.service if self.target is None else f"{self.service}/{self.target}"
        return f"{owner}/{self.check}"


@dataclass(frozen=True)
class CheckResult:
    """One probe: ``time`` is ``clock.now()`` when it finished, ``latency`` its duration."""

    ok: bool
    time: float
    latency: float
    error: str | None = None


@dataclass(frozen=True)
class CheckState:
    """Where a check stands. ``successes``/``failures`` are the current consecutive counts;
    ``changed_at`` is the time of the result that last changed ``status`` (None: never)."""

    status: CheckStatus
    last: CheckResult | None
    changed_at: float | None
    successes: int
    failures: int

    @property
    def changing(self) -> bool:
        """True while results point the other way but have not reached the threshold yet."""
        if self.status is CheckStatus.UP:
            return self.failures > 0
        return self.successes > 0


HealthSnapshot = Mapping[CheckKey, CheckState]

INITIAL = CheckState(CheckStatus.DOWN, last=None, changed_at=None, successes=0, failures=0)


def advance(state: CheckState, result: CheckResult, rise: int, fall: int) -> CheckState:
    """The state after ``result``. ``rise`` and ``fall`` are at least 1."""
    if rise < 1 or fall < 1:
        raise ValueError(f"rise and fall must be >= 1 (got rise={rise}, fall={fall})")
    if result.ok:
        successes, failures = state.successes + 1, 0
        flips = state.status is CheckStatus.DOWN and successes >= rise
        status = CheckStatus.UP if flips else state.status
    else:
        successes, failures = 0, state.failures + 1
        flips = state.status is CheckStatus.UP and failures >= fall
        status = CheckStatus.DOWN if flips else state.status
    return CheckState(
        status=status,
        last=result,
        changed_at=result.time if flips else state.changed_at,
        successes=successes,
        failures=failures,
    )
