"""Settings shared by the fuzzers (tests/unit/test_fuzz_*.py).

In CI every fuzzer is derandomized (the same examples on every run, no example database), so
a red run is reproducible and a green one stays green. Explore with fresh random examples
and more of them by hand::

    FUZZ_RANDOM=1 FUZZ_SCALE=20 .venv/bin/pytest -q tests/unit/test_fuzz_config.py
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
RANDOM = os.environ.get("FUZZ_RANDOM", "") not in ("", "0")


def fuzz(examples: int) -> settings:
    """``examples`` (times FUZZ_SCALE) examples, no deadline (the box is shared and slow)."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
