"""Regenerate bench/RESULTS.md from bench/results.json (``python -m bench.report``)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from .lab import RAW, REPO, RESULTS
from .reliability import load as load_reliability

OUT = REPO / "bench" / "RESULTS.md"
NOTES = REPO / "bench" / "NOTES.md"


def _cmd(*argv: str) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine() -> list[str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    frr = _cmd("/usr/lib/frr/zebra", "--version").splitlines()
    exa = _cmd(str(REPO / ".venv/bin/exabgp"), "version").splitlines()
    loads = []
    for f in sorted(RAW.glob("load-*.json")):
        d = json.loads(f.read_text())
        loads.append(f"{f.stem[5:]}: {d['start'][0]:.1f} -> {d['end'][0]:.1f}")
    return [
        f"- CPU: {os.cpu_count()} x {cpu}; RAM {int(mem) // 1024} MiB; kernel {platform.release()}",
        f"- {frr[0] if frr else 'FRR ?'}; {exa[0] if exa else 'ExaBGP ?'}; Python "
        f"{platform.python_version()}",
        "- 1-minute load average at the start -> end of each run: " + ("; ".join(loads) or "?"),
    ]


def _goal_met(goal: str | None, value: float | None, baseline: float | None) -> str:
    if goal is None or value is None:
        return ""
    m = re.match(
        r"\s*(<=|>=)\s*([0-9.]+)\s*(x baseline)?", goal.replace(" x baseline p50", " x baseline")
    )
    if not m:
        return "?"
    limit = float(m.group(2))
    if m.group(3):
        if baseline is None:
            return "?"
        limit *= baseline
    ok = value <= limit if m.group(1) == "<=" else value >= limit
    return "met" if ok else "**missed**"


def _fmt(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def tables(records: list[dict[str, Any]]) -> list[str]:
    timing: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    plain: list[dict[str, Any]] = []
    for r in records:
        if ":" in r["metric"] and r["metric"].rsplit(":", 1)[1] in ("p50", "p99", "max"):
            base, stat = r["metric"].rsplit(":", 1)
            timing[(r["benchmark"], base)][stat] = r
        else:
            plain.append(r)
    out = [
        "| benchmark | metric | unit | median | p99 | max | goal | baseline (same run) | met"
        " | trials | command | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (bench, metric), stats in sorted(timing.items()):
        any_r = next(iter(stats.values()))
        goals, mets, bases = [], [], []
        for stat in ("p50", "p99", "max"):
            rs = stats.get(stat)
            if rs and rs["goal"]:
                goals.append(f"{stat} {rs['goal']}")
                mets.append(_goal_met(rs["goal"], rs["value"], rs["baseline"]))
            if rs and rs["baseline"] is not None:
                bases.append(f"{stat} {_fmt(rs['baseline'])}")
        out.append(
            f"| {bench} | {metric} | {any_r['unit']} | "
            + " | ".join(
                _fmt(stats[s]["value"]) if s in stats else "" for s in ("p50", "p99", "max")
            )
            + f" | {'; '.join(goals)} | {'; '.join(bases)} | {' '.join(mets)} | {any_r['trials']}"
            f" | `{any_r['command']}` | {any_r['date'][:16]} |"
        )
    out += [
        "",
        "| benchmark | metric | unit | value | goal | baseline (same run) | met | trials"
        " | command | date |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(plain, key=lambda r: (r["benchmark"], r["metric"])):
        out.append(
            f"| {r['benchmark']} | {r['metric']} | {r['unit']} | {_fmt(r['value'])}"
            f" | {r['goal'] or ''}"
            f" | {_fmt(r['baseline'])} | {_goal_met(r['goal'], r['value'], r['baseline'])}"
            f" | {r['trials']} | `{r['command']}` | {r['date'][:16]} |"
        )
    return out


SUITES = (
    ("faults", "fault injection (tests/faults: real agent + ExaBGP + FRR)"),
    ("api", "API (schemathesis, auth, oversized, many connections)"),
    ("fuzz", "fuzz (hypothesis: config loader, ExaBGP parser)"),
)
SOAK = "5 soak"


def _n(v: Any) -> str:
    if v is None:
        return ""
    return str(int(v)) if float(v).is_integer() else _fmt(float(v))


def reliability(records: list[dict[str, Any]]) -> list[str]:
    """The Reliability tables: suites from bench/raw/reliability-*.json, soak from records."""
    out = [
        "| suite | faults injected | survived | requests lost | wrong announcements | bad inputs"
        " tried | 5xx | crashes | tests passed / failed | command | commit | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    known = [s for s, _ in SUITES]
    extra = sorted(p.stem.removeprefix("reliability-") for p in RAW.glob("reliability-*.json"))
    for suite, what in [*SUITES, *((s, s) for s in extra if s not in known)]:
        d = load_reliability(suite)
        if isinstance(d, str):
            out.append(f"| {what} | {d} |  |  |  |  |  |  |  |  |  |  |")
            continue
        out.append(
            f"| {what} | {_n(d.get('faults_injected'))} | {_n(d.get('survived'))}"
            f" | {_n(d.get('requests_lost'))} | {_n(d.get('wrong_announcements'))}"
            f" | {_n(d.get('bad_inputs'))} | {_n(d.get('server_errors'))}"
            f" | {_n(d.get('crashes'))} | {d.get('passed', '?')} / {d.get('failed', '?')}"
            f" | `{d.get('command', '?')}` | {d.get('commit', '?')}"
            f" | {str(d.get('date', '?'))[:16]} |"
        )
    soak = [r for r in records if r["benchmark"].startswith(SOAK) and ":" not in r["metric"][5:]]
    out += ["", "Soak (`make soak`; every figure is also in the Results tables):", ""]
    if not soak:
        return [*out, "not run"]
    out += ["| run | figure | value | goal | met |", "|---|---|---|---|---|"]
    for r in sorted(soak, key=lambda r: (r["benchmark"], r["goal"] is None, r["metric"])):
        out.append(
            f"| {r['benchmark']} | {r['metric'].removeprefix('soak: ')} | {_fmt(r['value'])}"
            f" {r['unit']} | {r['goal'] or ''} | {_goal_met(r['goal'], r['value'], None)} |"
        )
    return out


def main() -> None:
    records = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    text = [
        "# bgp-lb benchmarks (generated by `python -m bench.report` from bench/results.json)",
        "",
        "Run with `make bench` (root). **Natively on host network namespaces** (FRR 8.4 r1 + LB "
        "namespaces from tests/harness), **announce mode on `lo`** because this host kernel has no "
        "dummy links and no IPVS; no VM, so TCG does not distort the times. Timings: median, p99 "
        "(nearest rank) and max over the trials. The baseline is ExaBGP's bundled healthcheck "
        "run in the same lab, in the same run.",
        "",
        "## Machine",
        *machine(),
        "",
        "## Results",
        *tables(records),
        "",
        "## Reliability",
        "",
        *reliability(records),
        "",
    ]
    if NOTES.exists():
        text += [NOTES.read_text()]
    OUT.write_text("\n".join(text) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
