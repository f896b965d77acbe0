"""``bgp-lb doctor``'s report: findings, their levels, the JSON and the text."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Level(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Finding:
    step: str  # one of STEPS
    name: str  # what was looked at: "peer 10.0.0.254", "service web vip 10.99.0.1"
    level: Level
    detail: str = ""
    fix: str = ""


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not any(f.level is Level.FAIL for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failures": sum(f.level is Level.FAIL for f in self.findings),
            "findings": [{**asdict(f), "level": str(f.level)} for f in self.findings],
        }


# --------------------------------------------------------------------------- text


def render(report: Report) -> str:
    lines = []
    step = ""
    for f in report.findings:
        if f.step != step:
            step = f.step
            lines.append(f"== {step}")
        mark = {Level.OK: "ok  ", Level.WARN: "WARN", Level.FAIL: "FAIL", Level.SKIP: "skip"}
        lines.append(f"{mark[f.level]}  {f.name}" + (f": {f.detail}" if f.detail else ""))
        if f.fix and f.level in (Level.FAIL, Level.WARN):
            lines.append(f"      fix: {f.fix}")
    failures = sum(f.level is Level.FAIL for f in report.findings)
    lines.append("doctor: all good" if report.ok else f"doctor: {failures} failure(s)")
    return "\n".join(lines)
