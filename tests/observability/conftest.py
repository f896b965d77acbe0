"""Fixtures for the observability tests: the dashboards/ scripts on sys.path, the BGP lab."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
if str(DASHBOARDS) not in sys.path:
    sys.path.insert(0, str(DASHBOARDS))

from tests.harness.agent_proc import agent_factory  # noqa: E402, F401  (fixture)
from tests.harness.frr import bgp_lab_factory  # noqa: E402, F401  (fixture)
