"""What a fuzz, API or fault test tried, for its JUnit record.

A test calls :func:`count` (``count("bad_inputs")``, ``count("faults_injected", 5)``, ...);
the autouse fixture :func:`record_figures` (imported by the suites' conftest or module) resets
the counts before each test and writes the non-zero ones with pytest's ``record_property``
after it. ``bench/reliability.py`` sums them per suite from the JUnit XML into the Reliability
table; its module docstring defines the figures. ``crashes`` is left to it (a failed test).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from bench.reliability import FIGURES

_counts: Counter[str] = Counter()


def count(figure: str, n: int = 1) -> None:
    """Add ``n`` to ``figure`` for the running test."""
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r} (bench/reliability.py FIGURES)")
    _counts[figure] += n


@pytest.fixture(autouse=True)
def record_figures(record_property: Callable[[str, object], None]) -> Iterator[None]:
    _counts.clear()
    yield
    for figure, n in sorted(_counts.items()):
        record_property(figure, n)
    _counts.clear()
