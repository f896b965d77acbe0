"""results.json records of a soak run (bench/soak.py's raw output -> ``Record``s).

The route-state goal is on *episodes* (bench/soak_track.py: a stretch in which one route
disagreed with the truth beyond its allowance, counted once), not on (service, sample)
pairs, which the old records counted (kept, without a goal, to compare with earlier runs).

Baseline / end of RSS, FDs, threads and tasks come from the two quiet windows (same state:
every backend up, nothing drained, the base config; churn stopped and settled): FDs and
threads use the *minimum* of the window's samples (the persistent floor: a probe socket in
flight at the sampling instant is not a leak), tasks and RSS the median (the task gauge also
dips: a periodic task between two runs; a 5-min trial's baseline minimum was one sample of
12 among nine of 14, which read as "+2" against an end window of 14 throughout).
"""

from __future__ import annotations

import itertools
import statistics
from typing import Any

from .lab import Record, timing_records

COMMAND = "make soak (python -m bench.soak)"


def _floor(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in samples if s.get(key) is not None]
    return min(values) if values else None


def _median(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(values) if values else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def run_delay(samples: list[dict[str, Any]]) -> dict[str, float]:
    """Per role (agent, exabgp, bgpd, zebra...): the run delay its schedstat grew by between
    consecutive samples of the same pid, in % of the wall time between them (100 %: one
    thread runnable all the time and never on a CPU)."""
    delay: dict[str, float] = {}
    wall: dict[str, float] = {}
    for a, b in itertools.pairwise(samples):
        for role, (pid, _, d1, _) in b.get("schedstat", {}).items():
            prev = a.get("schedstat", {}).get(role)
            if prev is None or prev[0] != pid:
                continue
            delay[role] = delay.get(role, 0.0) + (d1 - prev[2]) / 1e9
            wall[role] = wall.get(role, 0.0) + b["t"] - a["t"]
    return {r: 100 * delay[r] / wall[r] for r in delay if wall[r] > 0}


def records(out: dict[str, Any]) -> list[Record]:
    a = out["args"]
    bench = f"5 soak: {a['services']} services, {a['duration'] / 60:g} min"
    command = f"{COMMAND}, commit {out['commit']}"
    c, s = out["checker"], out["scrapes"]
    base, end = out["baseline"], out["end"]
    nq = len(end)

    def rec(metric: str, unit: str, value: float | None, goal: str | None, trials: int) -> Record:
        return Record(bench, f"soak: {metric}", unit, value, goal, None, trials, command)

    rss0, rss1 = _median(base, "rss_kib"), _median(end, "rss_kib")
    churn = [x for x in out["samples"] if x.get("phase") == "churn"]
    rss_max = max((x["rss_kib"] for x in churn if x.get("rss_kib")), default=None)
    tree0, tree1 = _median(base, "tree_rss_kib"), _median(end, "tree_rss_kib")
    reloads = [x for x in out["actions"] if x["kind"] == "reload"]
    api = [x for x in out["actions"] if "drain" in x["kind"] or x["kind"] == "reload"]
    loads = [x["load1"] for x in out["samples"]]
    mib = 1 / 1024
    rib, fib = c["rib"], c["fib"]
    recs = [
        rec(
            "wrong route states: episodes a VIP at r1 disagreed with the truth beyond its "
            "allowance, each once (RIB, ~1 s samples)",
            "count",
            rib["wrong_episodes"],
            "<= 0",
            rib["route_changes"],
        ),
        rec(
            "wrong route states: episodes (FIB, kernel route events)",
            "count",
            fib["wrong_episodes"],
            "<= 0",
            fib["route_changes"],
        ),
        rec(
            "route-seconds wrong beyond the allowance (RIB)",
            "s",
            rib["wrong_route_seconds"],
            None,
            rib["route_changes"],
        ),
        rec(
            "route-seconds wrong beyond the allowance (FIB)",
            "s",
            fib["wrong_route_seconds"],
            None,
            fib["route_changes"],
        ),
        rec(
            "route changes at r1's FIB after their allowance (late)",
            "count",
            fib["late"],
            None,
            fib["route_changes"],
        ),
        rec(
            "route changes never at r1's FIB before the next change or the end (lost)",
            "count",
            fib["lost"],
            None,
            fib["route_changes"],
        ),
        rec(
            "route changes never in r1's RIB before the next change or the end (lost)",
            "count",
            rib["lost"],
            None,
            rib["route_changes"],
        ),
        rec(
            "FIB events missed by ip monitor (corrected from the 1 s FIB samples)",
            "count",
            fib["event_gaps"],
            None,
            c["samples_by_source"].get("fib", 0),
        ),
        rec(
            "ip monitor netlink overruns (messages lost in a burst)",
            "count",
            out.get("fib_monitor_overruns"),
            None,
            1,
        ),
        rec(
            "old count: (service, sample) pairs wrong, RIB+FIB (grows with a backlog's square)",
            "count",
            c["wrong"],
            None,
            c["samples"],
        ),
        rec(
            "old count: FIB add/delete events against a settled truth",
            "count",
            c["wrong_events"],
            None,
            c["events"],
        ),
        rec(
            "agent RSS growth after warm-up (quiet end - quiet after warm-up, medians)",
            "MiB",
            None if rss0 is None or rss1 is None else (rss1 - rss0) * mib,
            "<= 5",
            nq,
        ),
        rec(
            "agent RSS after warm-up (quiet, median)",
            "MiB",
            None if rss0 is None else rss0 * mib,
            None,
            len(base),
        ),
        rec(
            "agent RSS max under churn - after warm-up",
            "MiB",
            None if rss_max is None or rss0 is None else (rss_max - rss0) * mib,
            None,
            len(churn),
        ),
        rec(
            "agent+ExaBGP+relay RSS growth after warm-up (medians)",
            "MiB",
            None if tree0 is None or tree1 is None else (tree1 - tree0) * mib,
            None,
            nq,
        ),
        rec(
            "open FDs, end - after warm-up (min of each quiet window)",
            "count",
            _diff(_floor(base, "fds"), _floor(end, "fds")),
            "<= 0",
            nq,
        ),
        rec(
            "threads, end - after warm-up (min of each quiet window)",
            "count",
            _diff(_floor(base, "threads"), _floor(end, "threads")),
            "<= 0",
            nq,
        ),
        rec(
            "asyncio tasks, end - after warm-up (median; bgplb_asyncio_tasks)",
            "count",
            _diff(_median(base, "tasks"), _median(end, "tasks")),
            "<= 0",
            nq,
        ),
        rec("open FDs after warm-up (min)", "count", _floor(base, "fds"), None, len(base)),
        rec("threads after warm-up (min)", "count", _floor(base, "threads"), None, len(base)),
        rec(
            "asyncio tasks after warm-up (median)", "count", _median(base, "tasks"), None, len(base)
        ),
        rec(
            "/metrics scrapes not answered 200 (incl. no answer)",
            "count",
            s["non_200"] + s["no_answer"],
            "<= 0",
            s["total"],
        ),
        rec(
            "/metrics scrapes prometheus_client's parser refused",
            "count",
            s["parse_failures"],
            "<= 0",
            s["total"],
        ),
        rec("reloads not ok", "count", sum(not x.get("ok") for x in reloads), None, len(reloads)),
        rec(
            "drain/undrain/reload API calls not answered 200",
            "count",
            sum(x.get("status") not in (None, 200) for x in api),
            None,
            len(api),
        ),
        rec(
            "agent log lines at ERROR/CRITICAL",
            "count",
            sum(v for k, v in out["agent_log"].items() if not k.startswith("WARNING")),
            None,
            1,
        ),
        rec(
            "agent log lines at WARNING",
            "count",
            sum(v for k, v in out["agent_log"].items() if k.startswith("WARNING")),
            None,
            1,
        ),
        rec(
            "ExaBGP processes started (1: never restarted)", "count", out["exabgp_started"], None, 1
        ),
        rec(
            "1-minute load average (mean of the samples)",
            "load",
            statistics.fmean(loads) if loads else None,
            None,
            len(loads),
        ),
        rec(
            "1-minute load average (max of the samples)",
            "load",
            max(loads, default=None),
            None,
            len(loads),
        ),
    ]
    recs.append(
        rec(
            "start -> all routes in r1's FIB (empty: not within 180 s)",
            "s",
            out["to_fib_s"],
            None,
            1,
        )
    )
    lt = out["loop_thread"]["states"]
    n_lt = sum(lt.values())
    recs.append(
        rec(
            "agent's event-loop thread blocked in the kernel (D state), of 100 ms samples",
            "%",
            100 * lt.get("D", 0) / n_lt if n_lt else None,
            None,
            n_lt,
        )
    )
    for role, pct in run_delay(churn).items():
        recs.append(
            rec(
                f"{role} run delay (runnable, waiting for a CPU) under churn",
                "%",
                pct,
                None,
                len(churn),
            )
        )
    recs.append(
        rec(
            "/metrics scrapes given to prometheus_client's parser (every Nth)",
            "count",
            s.get("parsed"),
            None,
            s["total"],
        )
    )
    delays = [d * 1000 for d in fib["delays_s"]]
    recs += timing_records(bench, "soak: route change -> correct at r1's FIB", delays, command)
    recs += timing_records(bench, "soak: /metrics scrape", s["ms"], command)
    recs += timing_records(
        bench, "soak: reload API call", [x["s"] * 1000 for x in reloads], command
    )
    return recs
