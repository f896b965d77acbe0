"""Health checks: probes (``checks``), the pure rise/fall tracker, and their scheduler."""

from .checks import Prober, RealProber
from .runner import HealthRunner
from .targets import ResolvedCheck, real_server_target, resolve_checks
from .tracker import CheckKey, CheckResult, CheckState, HealthSnapshot, advance

__all__ = [
    "CheckKey",
    "CheckResult",
    "CheckState",
    "HealthRunner",
    "HealthSnapshot",
    "Prober",
    "RealProber",
    "ResolvedCheck",
    "advance",
    "real_server_target",
    "resolve_checks",
]
