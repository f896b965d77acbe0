"""Fixtures for the fault-injection suite: FRR + the real agent + ExaBGP in namespaces."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.harness.agent_proc import agent_factory  # noqa: F401  (fixture)
from tests.harness.figures import record_figures  # noqa: F401  (fixture: JUnit figures)
from tests.harness.frr import bgp_lab_factory  # noqa: F401  (fixture)

if os.geteuid() != 0 or not shutil.which("vtysh"):
    pytest.skip("fault tests need root and FRR", allow_module_level=True)
