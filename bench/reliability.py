"""Reliability records of the test suites (fault injection, API, fuzz) for bench/RESULTS.md.

``python -m bench.reliability SUITE JUNIT_XML [--command TEXT]`` reads pytest's JUnit XML
(``pytest ... --junitxml=FILE``) and writes ``bench/raw/reliability-SUITE.json``; ``python -m
bench.report`` shows it in the **Reliability** table (a missing file: "not run").

A test reports its figures with pytest's own ``record_property`` fixture (the tests call
``tests/harness/figures.py`` ``count()``; pyproject sets ``junit_family = "xunit1"``, the JUnit
flavour that keeps them); they are summed over the suite (a test that records none counts as
below):

- ``faults_injected``: faults the test injected (none recorded: 1);
- ``survived``: of those, how many the agent survived: kept routing, final state right (none
  recorded: all of them if the test passed, else 0);
- ``requests_lost``: client requests that failed because of the fault (none: not counted);
- ``wrong_announcements``: routes at the router that disagreed with health, flaps included;
- ``bad_inputs``: inputs tried (schemathesis cases, hypothesis examples, bad requests);
- ``server_errors``: 5xx answers;
- ``crashes``: agent/speaker crashes or unexpected exceptions (none recorded: 1 if the test
  failed, else 0).

The JSON (also writable directly by a plugin; every figure optional, null = not measured)::

    {"suite": "faults", "date": "2026-12-07T00:00:00+00:00", "commit": "abc1234",
     "command": "make test (pytest tests/faults)",
     "tests": 40, "passed": 39, "failed": 1, "skipped": 0,
     "faults_injected": 57, "survived": 56, "requests_lost": 0, "wrong_announcements": 0,
     "bad_inputs": null, "server_errors": null, "crashes": 1}
"""

from __future__ import annotations

import argparse
import json
import subprocess
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .lab import RAW, REPO

FIGURES = (
    "faults_injected",
    "survived",
    "requests_lost",
    "wrong_announcements",
    "bad_inputs",
    "server_errors",
    "crashes",
)


def path(suite: str) -> Path:
    return RAW / f"reliability-{suite}.json"


def summarise(junit: Path, suite: str, command: str) -> dict[str, Any]:
    root = ET.parse(junit).getroot()
    totals: dict[str, float | None] = dict.fromkeys(FIGURES)
    counts = {"tests": 0, "passed": 0, "failed": 0, "skipped": 0}

    def add(key: str, value: float) -> None:
        totals[key] = (totals[key] or 0) + value

    for case in root.iter("testcase"):
        counts["tests"] += 1
        if case.find("skipped") is not None:
            counts["skipped"] += 1
            continue
        failed = case.find("failure") is not None or case.find("error") is not None
        counts["failed" if failed else "passed"] += 1
        props: dict[str, float] = {}
        for p in case.iter("property"):
            name, value = p.get("name", ""), p.get("value", "")
            if name in FIGURES:
                try:
                    props[name] = props.get(name, 0) + float(value)
                except ValueError:
                    continue
        if suite == "faults" or "faults_injected" in props:
            injected = props.get("faults_injected", 1)
            add("faults_injected", injected)
            add("survived", props.get("survived", 0 if failed else injected))
        add("crashes", props.get("crashes", 1 if failed else 0))
        for key in ("requests_lost", "wrong_announcements", "bad_inputs", "server_errors"):
            if key in props:
                add(key, props[key])
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=10", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "suite": suite,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": rev,
        "command": command,
        **counts,
        **{k: int(v) if v is not None and float(v).is_integer() else v for k, v in totals.items()},
    }


def load(suite: str) -> dict[str, Any] | str:
    """The suite's record, or why there is none ("not run", "unreadable: ...")."""
    p = path(suite)
    if not p.exists():
        return "not run"
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        return f"unreadable: {err}"
    return data if isinstance(data, dict) else "unreadable: not an object"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("suite", help="faults | api | fuzz (any name: one row of its own)")
    ap.add_argument("junit", type=Path)
    ap.add_argument("--command", default=None)
    args = ap.parse_args()
    data = summarise(args.junit, args.suite, args.command or f"pytest --junitxml={args.junit}")
    RAW.mkdir(parents=True, exist_ok=True)
    path(args.suite).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {path(args.suite)}: {data}")


if __name__ == "__main__":
    main()
