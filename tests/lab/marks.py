"""The marks of every test that needs a running lab (root, IPVS + dummy in this kernel)."""

from __future__ import annotations

import os

import pytest

from tests.harness.vm import running_kernel_has_dataplane

LAB = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(
        not running_kernel_has_dataplane(),
        reason="needs IPVS + dummy: run `make test-lab` (boots a VM)",
    ),
]
