"""The rise/fall state machine, table-driven."""

from __future__ import annotations

import pytest

from bgplb.health.tracker import INITIAL, CheckKey, CheckResult, CheckState, advance
from bgplb.model import CheckStatus

UP, DOWN = CheckStatus.UP, CheckStatus.DOWN


def run(sequence: str, rise: int, fall: int) -> list[CheckState]:
    """Feed ``sequence`` ('+' success, '-' failure, one per second) to a new check."""
    state, states = INITIAL, []
    for i, c in enumerate(sequence):
        result = CheckResult(
            ok=c == "+", time=float(i), latency=0.01, error=None if c == "+" else "x"
        )
        state = advance(state, result, rise, fall)
        states.append(state)
    return states


def statuses(states: list[CheckState]) -> str:
    return "".join("U" if s.status is UP else "D" for s in states)


@pytest.mark.parametrize(
    ("sequence", "rise", "fall", "expected"),
    [
        ("", 3, 2, ""),
        ("+", 1, 1, "U"),
        ("+++", 3, 2, "DDU"),
        ("++-+++", 3, 2, "DDDDDU"),  # a failure resets the success count
        ("+++-", 3, 2, "DDUU"),  # one failure never flaps
        ("+++-+-+", 3, 2, "DDUUUUU"),  # alternating: a success resets the failure count
        ("+++--", 3, 2, "DDUUD"),
        ("+++---+++", 3, 2, "DDUUDDDDU"),
        ("-----", 3, 2, "DDDDD"),  # a new check starts DOWN and stays DOWN
        ("+-+-+-", 1, 1, "UDUDUD"),
        ("++++++", 6, 1, "DDDDDU"),
        ("+++++----", 2, 4, "DUUUUUUUD"),
    ],
)
def test_rise_fall_sequences(sequence: str, rise: int, fall: int, expected: str) -> None:
    assert statuses(run(sequence, rise, fall)) == expected


@pytest.mark.parametrize(
    ("sequence", "successes", "failures", "changing"),
    [
        ("", 0, 0, False),
        ("+", 1, 0, True),  # DOWN and rising
        ("+++", 3, 0, False),  # UP, steady
        ("+++++", 5, 0, False),  # counts keep going
        ("+++-", 0, 1, True),  # UP and falling
        ("+++--", 0, 2, False),  # DOWN, steady
        ("+++---", 0, 3, False),
        ("+++--+", 1, 0, True),
    ],
)
def test_counts_and_changing(sequence: str, successes: int, failures: int, changing: bool) -> None:
    state = run(sequence, 3, 2)[-1] if sequence else INITIAL
    assert (state.successes, state.failures, state.changing) == (successes, failures, changing)


def test_changed_at_is_the_time_of_the_flipping_result() -> None:
    states = run("+++--+", 3, 2)
    assert [s.changed_at for s in states] == [None, None, 2.0, 2.0, 4.0, 4.0]
    assert states[-1].last == CheckResult(ok=True, time=5.0, latency=0.01, error=None)


def test_initial_state_is_down_without_result() -> None:
    assert CheckState(DOWN, last=None, changed_at=None, successes=0, failures=0) == INITIAL


@pytest.mark.parametrize(("rise", "fall"), [(0, 1), (1, 0)])
def test_thresholds_below_one_are_rejected(rise: int, fall: int) -> None:
    with pytest.raises(ValueError, match="rise and fall"):
        advance(INITIAL, CheckResult(True, 0.0, 0.0), rise, fall)


def test_key_is_hashable_and_printable() -> None:
    a = CheckKey("web", "10.0.0.1:80", "http")
    assert {a: 1}[CheckKey("web", "10.0.0.1:80", "http")] == 1
    assert str(a) == "web/10.0.0.1:80/http"
    assert str(CheckKey("web", None, "tcp")) == "web/tcp"
