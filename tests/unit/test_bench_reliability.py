"""bench/reliability.py: the figures a suite's JUnit XML carries (pytest's record_property,
see tests/harness/figures.py), summed per suite for the Reliability table."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.reliability import summarise

from tests.harness import figures

GOLDEN = Path(__file__).parent / "golden" / "junit-reliability.xml"


def test_recorded_figures_are_summed_and_defaults_fill_the_rest() -> None:
    data = summarise(GOLDEN, "faults", "pytest tests/faults")
    assert (data["tests"], data["passed"], data["failed"], data["skipped"]) == (7, 4, 2, 1)
    # 5 + 30 + 20 recorded, 1 each for the two tests that record none (test_plain,
    # test_broken) and for test_two_properties_blocks
    assert data["faults_injected"] == 5 + 30 + 20 + 1 + 1 + 1
    # 5 (passed, none recorded) + 0 (failed) + 19 (recorded) + 1 + 0 (error) + 1
    assert data["survived"] == 5 + 0 + 19 + 1 + 0 + 1
    assert data["requests_lost"] == 2
    assert data["server_errors"] == 1
    assert data["wrong_announcements"] == 0  # recorded as 0: measured, not null
    assert data["bad_inputs"] == 3 + 4  # the unparsable value is skipped
    # the hammer failed without recording crashes (1), test_broken errored (1)
    assert data["crashes"] == 2
    assert data["suite"] == "faults"
    assert data["command"] == "pytest tests/faults"


def test_a_suite_without_figures_keeps_them_null(tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="a" name="ok" /><testcase classname="a" name="bad">'
        '<failure message="x" /></testcase></testsuite></testsuites>'
    )
    data = summarise(junit, "api", "make test-api")
    assert (data["tests"], data["passed"], data["failed"]) == (2, 1, 1)
    assert data["crashes"] == 1
    for figure in ("faults_injected", "survived", "requests_lost", "bad_inputs"):
        assert data[figure] is None, figure


def test_only_the_figures_the_bench_reads_can_be_counted() -> None:
    with pytest.raises(ValueError, match="unknown figure"):
        figures.count("bad_input")
