"""The soak's checker (bench/soak_truth.py): what counts as a wrong route state."""

from __future__ import annotations

import time

from bench.soak_truth import Checker, Truth, health_settle


def make() -> tuple[Truth, Checker]:
    truth = Truth({"a": "10.99.1.1", "b": "10.99.1.2", "x": "10.99.1.3"}, {"a", "b"})
    return truth, Checker(truth)


def test_settled_disagreements_are_wrong_both_ways() -> None:
    _, checker = make()
    bad = checker.compare({"10.99.1.1", "10.99.1.3"}, time.time())  # b missing, x extra
    assert {(m.service, m.expected, m.seen) for m in bad} == {
        ("b", True, False),
        ("x", False, True),
    }
    assert checker.wrong_total == 2
    assert checker.comparisons == 3


def test_no_verdict_inside_a_settle_window() -> None:
    truth, checker = make()
    started = time.time()
    with truth.change(["b"], settle=60):
        truth.down.add("b")
        assert checker.compare({"10.99.1.1", "10.99.1.2"}, time.time()) == []  # under way
    assert checker.compare({"10.99.1.1", "10.99.1.2"}, time.time()) == []  # settling
    assert checker.skipped == 2
    # a sample read before the change started is judged against the old truth window-free
    assert not truth.settled("b", started + 1)


def test_window_closes_after_settle() -> None:
    truth, checker = make()
    with truth.change(["b"], settle=0.0):
        truth.down.add("b")
    time.sleep(0.01)
    bad = checker.compare({"10.99.1.1", "10.99.1.2"}, time.time())
    assert [(m.service, m.expected, m.seen) for m in bad] == [("b", False, True)]


def test_node_drain_touches_every_service_and_events_are_judged_at_their_time() -> None:
    truth, checker = make()
    assert checker.event("10.99.1.1", present=False, at=time.time()) is not None  # healthy
    with truth.change(None, settle=0.0):
        truth.node_drained = True
    time.sleep(0.01)
    assert checker.event("10.99.1.1", present=False, at=time.time()) is None  # drained: right
    assert checker.event("10.99.1.2", present=True, at=time.time()) is not None  # drained
    assert checker.event("10.99.1.9", present=True, at=time.time()) is not None  # unknown VIP
    assert checker.wrong_events_total == 3


def test_health_settle_takes_the_slowest_timing() -> None:
    default = health_settle([{}], margin=3)
    assert default == (2 + 3) * 1.0 + 0.8 + 3
    assert health_settle([{}, {"interval": 1.5, "timeout": 0.6}], margin=3) == 5 * 1.5 + 0.6 + 3
