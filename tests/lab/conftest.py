"""One ECMP lab for every lab test module of a run (it takes a minute to build under TCG).

Modules run in file order: test_ecmp.py, then test_observability.py; each test leaves the lab
as it found it (every node announced, every backend up, every session established).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .demo import ECMP
from .runner import REPO, Lab, teardown
from .topology import load_topology


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    topology = load_topology(ECMP)
    teardown(topology.name)
    lab = Lab(topology, keep_logs=REPO / "_work" / "lab-logs-test")
    lab.up(say=print)
    yield lab
    lab.down()
