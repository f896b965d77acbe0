"""The observability tests: paths shared by the modules (dashboards/ scripts run as programs)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"
