"""Soak: the agent at 1,000 services for 30 min under reloads, drains and flapping backends,
with an independent checker comparing r1's BGP RIB with what the driver knows health is.

``python -m bench.soak [--duration 1800] [--services 1000] [--warmup 300]`` (root; ``make
soak``). r1 (FRR) + lb1 in network namespaces, the real agent (announce mode on ``lo``) with
its ExaBGP, one http check per service against ``bench.soak_backends``. ``--duration`` is the
time under churn, warm-up included; two quiet windows (after the warm-up and at the end: every
backend up, nothing drained, the base config) measure RSS / FDs / threads / tasks in the same
state. Under churn, on a single driver thread:

- every ``--flap-every`` s: backends whose down time is over come back, ``--flap-count``
  others go down for U(15, 45) s (503 or connection refused, bench/soak_backends.py);
- every ``--reload-every`` s: the config changes and ``POST /api/v1/reload``: ``--extras``
  services are added or removed (alternately) and a timing group (every 20th service) switches
  between two timings (interval 1 -> 1.5 s, timeout 0.8 -> 0.6 s);
- every ``--drain-every`` s: a drain (alternately 3 services and the whole node) through the
  API, and an undrain half a period later.

Observers (bench/soak_watch.py): ``/metrics`` every second from an unboosted process (status
and tasks gauge every scrape, prometheus_client's parser every ``--parse-every``-th), r1's RIB
every ``--rib-every`` s and every FIB change of a VIP (``ip monitor route``) against the
driver's truth (bench/soak_truth.py; per-change lateness and wrong episodes:
bench/soak_track.py), the agent's RSS / FDs / threads / asyncio tasks and the schedstat run
delay of the agent, ExaBGP and FRR every ``--sample-every`` s. The agent, ExaBGP (polled:
a restarted one too), the backends and FRR run boosted (``soak_watch.boost``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from tests.harness.agent_proc import API_PORT
from tests.harness.netns import kill_pids

from .convergence import SCALE_BASE_PORT, SCALE_CONTROL_PORT, agent_service, scale_vip
from .lab import PY, REPO, BenchAgent, bgp_lab, load_logged, make_agent, save, save_raw
from .scale import wait_fib
from .soak_records import records
from .soak_truth import Checker, Truth, drain_allowance, health_settle
from .soak_watch import (
    Booster,
    FibMonitor,
    LoopThread,
    NsHttp,
    Scraper,
    Scrapes,
    boost,
    fib_vips,
    renice,
    rib_vips,
    sample_processes,
)

TOKEN = "bench-token"
BASE_TIMING: dict[str, Any] = {}  # the config defaults: interval 1, fast 0.25, timeout 0.8, 3/2
ALT_TIMING: dict[str, Any] = {"interval": 1.5, "timeout": 0.6}
DRAIN_DELAY = 2.0  # the test harness's node.drain_delay (bench.lab's base_config)


class SoakAgent(BenchAgent):
    """``BenchAgent`` in a session (so an autogroup) of its own, boosted: the driver, the
    checker and its parsing of 2.6 MB scrapes stay out of the agent's share."""

    def start(self) -> None:
        popen = subprocess.Popen

        def own_session(*args: Any, **kw: Any) -> Any:
            subprocess.Popen = popen  # type: ignore[misc]  # only the agent's own Popen
            proc = popen(*args, **kw, start_new_session=True)
            boost(proc.pid)
            return proc

        subprocess.Popen = own_session  # type: ignore[assignment,misc]
        try:
            super().start()
        finally:
            subprocess.Popen = popen  # type: ignore[misc]


class Soak:
    def __init__(self, args: argparse.Namespace, bl: Any) -> None:
        self.args, self.bl = args, bl
        self.ns, self.address = bl.lb_ns[0], bl.lb_v4(1)
        n, extras = args.services, args.extras
        self.names = [f"s{i}" for i in range(n + extras)]
        self.base = set(self.names[:n])
        self.extras = self.names[n:]
        self.timing_group = {f"s{i}" for i in range(0, n, 20)}
        self.alt = False  # the timing group runs ALT_TIMING
        vips = {name: scale_vip(i) for i, name in enumerate(self.names)}
        self.truth = Truth(vips, set(self.base))
        self.checker = Checker(self.truth)
        self.health_settle = health_settle([BASE_TIMING, ALT_TIMING], args.margin)
        self.drain_settle = self.allowance(len(self.base), undrain=False)
        self.loop_thread = LoopThread()
        self.scraper: Scraper | None = None
        self.booster: Booster  # once the agent runs
        self.scrapes = Scrapes()  # the scraper's, once it runs
        self.samples: list[dict[str, Any]] = []
        self.actions: list[dict[str, Any]] = []
        self.down_until: dict[str, float] = {}
        self.phase = "start"
        self.stop = threading.Event()
        self.rng = random.Random(args.seed)

    # ------------------------------------------------------------------ config

    def services(self) -> list[dict[str, Any]]:
        out = []
        for i, name in enumerate(self.names):
            if name in self.truth.configured:
                timing = ALT_TIMING if self.alt and name in self.timing_group else BASE_TIMING
                port, path = SCALE_BASE_PORT + i, f"/svc/{i}"
                out.append(agent_service(name, scale_vip(i), self.address, port, path, timing))
        return out

    def allowance(self, routes: int, undrain: bool) -> float:
        a = self.args
        return drain_allowance(routes, DRAIN_DELAY, a.margin, a.bulk_per_route, undrain)

    # ------------------------------------------------------------------ actions

    def act(self, kind: str, fn: Callable[[], Any], **info: Any) -> Any:
        t0 = time.time()
        result = fn()
        self.actions.append({"t": t0, "kind": kind, "s": time.time() - t0, **info})
        return result

    def api(self, method: str, path: str, timeout: float = 60.0) -> tuple[int, bytes]:
        r = self.http.request(method, "127.0.0.1", API_PORT, path, TOKEN, timeout)
        return r.status, r.body

    def backends(self, verb: str, names: list[str]) -> None:
        ids = ",".join(n[1:] for n in names)
        r = self.http.request("GET", self.address, SCALE_CONTROL_PORT, f"/{verb}?ids={ids}")
        if r.status != 200:
            raise RuntimeError(f"backend control {verb} {ids}: {r.status} {r.error}")

    def flap(self, now: float) -> None:
        back = [n for n, t in self.down_until.items() if t <= now]
        if back:
            with self.truth.change(back, self.health_settle, "backend up"):
                self.backends("up", back)
                self.truth.down.difference_update(back)
            for n in back:
                del self.down_until[n]
        candidates = sorted(self.base - self.truth.down)
        victims = self.rng.sample(candidates, min(self.args.flap_count, len(candidates)))
        with self.truth.change(victims, self.health_settle, "backend down"):
            self.backends("down", victims)
            self.truth.down.update(victims)
        for n in victims:
            self.down_until[n] = now + self.rng.uniform(15, 45)
        self.actions.append({"t": now, "kind": "flap", "down": len(victims), "up": len(back)})

    def reload(self, add_extras: bool | None = None, alt: bool | None = None) -> None:
        adding = not any(e in self.truth.configured for e in self.extras)
        adding = adding if add_extras is None else add_extras
        alt = (not self.alt) if alt is None else alt
        touched = list(self.extras)  # added or removed: may take a health settle
        kind = "reload adds" if adding else "reload removes"
        with self.truth.change(touched, self.health_settle, kind):
            if adding:
                self.truth.configured.update(self.extras)
            else:
                self.truth.configured.difference_update(self.extras)
            self.alt = alt
            self.agent.config["services"] = self.services()
            self.agent.write_config()
            status, body = self.act(
                "reload", lambda: self.api("POST", "/api/v1/reload"), extras=adding, alt=alt
            )
        ok = status == 200 and json.loads(body or b"{}").get("ok") is True
        self.actions[-1].update(status=status, ok=ok, body=body[:300].decode(errors="replace"))
        if not ok:
            print(f"reload failed: {status} {body[:300]!r}", flush=True)

    def drain(self, cycle: int, undrain: bool) -> None:
        verb = "undrain" if undrain else "drain"
        status = 200
        if cycle % 2:  # the node: every route at once through ExaBGP and FRR
            settle = self.allowance(len(self.truth.configured), undrain)
            with self.truth.change(None, settle, f"node {verb}"):
                status, _ = self.act(f"node {verb}", lambda: self.api("POST", f"/api/v1/{verb}"))
                self.truth.node_drained = not undrain
        else:
            pick = self.rng.sample(sorted(self.base), 3)
            names = sorted(self.truth.drained) if undrain else pick
            settle = self.allowance(len(names), undrain)
            with self.truth.change(names, settle, f"service {verb}"):
                for name in names:
                    path = f"/api/v1/services/{name}/{verb}"
                    status, _ = self.act(f"service {verb}", partial(self.api, "POST", path))
                    if undrain:
                        self.truth.drained.discard(name)
                    else:
                        self.truth.drained.add(name)
        if status != 200:
            print(f"{verb} failed: {status}", flush=True)
        self.actions[-1]["status"] = status

    def restore(self) -> None:
        """Every backend up, nothing drained, the base config: the state of the quiet windows."""
        if self.truth.down:
            back = sorted(self.truth.down)
            with self.truth.change(back, self.health_settle, "backend up"):
                self.backends("up", back)
                self.truth.down.clear()
            self.down_until.clear()
        if self.truth.node_drained:
            self.drain(1, undrain=True)
        if self.truth.drained:
            self.drain(0, undrain=True)
        if self.alt or any(e in self.truth.configured for e in self.extras):
            self.reload(add_extras=False, alt=False)

    # ------------------------------------------------------------------ phases

    def churn(self, seconds: float) -> None:
        a = self.args
        start = time.time()
        next_flap, next_reload = start + a.flap_every, start + 10
        next_drain, next_undrain, cycle = start + 20, float("inf"), 0
        while (now := time.time()) < start + seconds:
            if now >= next_flap:
                self.flap(now)
                next_flap += a.flap_every
            if now >= next_reload:
                self.reload()
                next_reload += a.reload_every
            if now >= next_drain:
                self.drain(cycle, undrain=False)
                next_undrain, next_drain = now + a.drain_every / 2, next_drain + a.drain_every
            if now >= next_undrain:
                self.drain(cycle, undrain=True)
                next_undrain, cycle = float("inf"), cycle + 1
            time.sleep(0.1)
        if next_undrain != float("inf"):
            self.drain(cycle, undrain=True)

    def quiet(self, name: str) -> list[dict[str, Any]]:
        """Restore, let everything settle, then sample the agent once a second."""
        self.phase = f"{name} (settling)"
        self.restore()
        restore = max(self.health_settle, self.allowance(len(self.base), undrain=True))
        time.sleep(restore + self.args.quiet_extra)
        self.phase = name
        out = []
        for _ in range(self.args.quiet_samples):
            time.sleep(1.0)
            out.append(sample_processes(self.agent.pid, self.scrapes, self.bl.router.pids))
        return out

    # ------------------------------------------------------------------ observers

    def observe_loop(self, every: float, fn: Callable[[], None]) -> threading.Thread:
        def loop() -> None:
            nxt = time.monotonic()
            while not self.stop.is_set():
                try:
                    fn()
                except Exception as err:  # an observer must not die silently
                    print(f"observer {fn.__name__}: {type(err).__name__}: {err}", flush=True)
                nxt += every
                self.stop.wait(max(0.0, nxt - time.monotonic()))

        th = threading.Thread(target=loop, daemon=True, name=fn.__name__)
        th.start()
        return th

    def check_rib(self) -> None:
        started = time.time()
        self.report(self.checker.compare(rib_vips(self.bl.router.directory), started, "rib"))

    def check_fib(self) -> None:
        started = time.time()
        self.report(self.checker.compare(fib_vips(self.bl.router.ns), started, "fib"))

    def report(self, bad: list[Any]) -> None:
        for m in bad[:3]:
            print(f"WRONG ROUTE {self.phase}: {m}", flush=True)
        if len(bad) > 3:
            print(f"... and {len(bad) - 3} more", flush=True)

    def sample_loop_thread(self) -> None:
        self.loop_thread.sample(self.agent.pid)

    def boost_children(self) -> None:
        self.booster.poll()

    def sample(self) -> None:
        s = sample_processes(self.agent.pid, self.scrapes, self.bl.router.pids)
        s["phase"] = self.phase
        self.samples.append(s)

    # ------------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        a = self.args
        backends = start_soak_backends(self.ns, self.address, len(self.names))
        agent = make_agent(self.bl, 1, self.services(), drain_delay=DRAIN_DELAY)
        self.agent = SoakAgent(agent.ns, agent.workdir, agent.config)
        for pid in [backends.pid, *self.bl.router.pids.values()]:
            boost(pid)
            renice(pid, os.getpriority(os.PRIO_PROCESS, 0))
        self.http = NsHttp(self.ns)
        monitor: FibMonitor | None = None
        threads: list[threading.Thread] = []
        try:
            t0 = time.time()
            self.agent.start()
            self.booster = Booster(self.agent.pid)
            self.booster.poll()
            threads = [self.observe_loop(1.0, self.boost_children)]
            to_fib = wait_fib(self.bl, len(self.base), t0, 180)
            print(f"all {len(self.base)} routes in r1's FIB after {to_fib} s", flush=True)
            monitor = FibMonitor(self.bl.router.ns, self.checker)
            self.scraper = Scraper(self.ns, API_PORT, 1.0, a.parse_every)
            self.scrapes = self.scraper.scrapes
            threads += [
                self.observe_loop(a.rib_every, self.check_rib),
                self.observe_loop(1.0, self.check_fib),
                self.observe_loop(a.sample_every, self.sample),
                self.observe_loop(0.1, self.sample_loop_thread),
            ]
            warmup = min(a.warmup, a.duration / 2)
            self.phase = "warm-up"
            self.churn(warmup)
            baseline = self.quiet("quiet after warm-up")
            print(f"baseline: {baseline[-1]}", flush=True)
            self.phase = "churn"
            self.churn(a.duration - warmup)
            end = self.quiet("quiet at the end")
            print(f"end: {end[-1]}", flush=True)
            self.stop.set()
            for th in threads:
                th.join(30)
            time.sleep(1.0)  # the FIB monitor's last lines
            self.checker.finish(time.time())
            overruns = monitor.overruns() if monitor is not None else None
            return {
                "args": vars(a),
                "to_fib_s": to_fib,
                "settle_s": {
                    "health": self.health_settle,
                    "node drain": self.drain_settle,
                    "node undrain": self.allowance(len(self.base), undrain=True),
                    "service drain (3)": self.allowance(3, undrain=False),
                },
                "boosted": self.booster.boosted,
                "fib_monitor_overruns": overruns,
                "baseline": baseline,
                "end": end,
                "samples": self.samples,
                "scrapes": {k: v for k, v in vars(self.scrapes).items()},
                "checker": summary(self.checker),
                "actions": self.actions,
                "agent_exit": self.agent.proc.poll() if self.agent.proc else None,
                "exabgp_started": len(self.agent.exabgp_pids()),
                "agent_log": agent_log_summary(self.agent.log_path),
                "loop_thread": {
                    "states": dict(self.loop_thread.states),
                    "wchan_when_blocked": dict(self.loop_thread.wchan.most_common(20)),
                },
            }
        finally:
            self.stop.set()
            if monitor is not None:
                monitor.close()
            self.http.close()
            if self.scraper is not None:
                self.scraper.close()
            self.agent.kill()
            kill_pids(list(self.agent.exabgp_pids()))
            shutil.copy(self.agent.log_path, "/tmp/bench-agent-soak.log")
            shutil.rmtree(self.agent.workdir, ignore_errors=True)
            kill_pids([backends.pid])


def summary(c: Checker) -> dict[str, Any]:
    def rows(ms: list[Any]) -> list[dict[str, Any]]:
        return [vars(m) for m in ms[:2000]]

    return {
        "samples": c.samples,
        "samples_by_source": c.by_source,
        "comparisons": c.comparisons,
        "skipped_settling": c.skipped,
        "wrong": c.wrong_total,
        "wrong_first": rows(c.wrong),
        "events": c.events,
        "wrong_events": c.wrong_events_total,
        "wrong_events_first": rows(c.wrong_events),
        "wrong_by_kind": dict(c.by_kind),
        "wrong_by_minute": {str(k): v for k, v in sorted(c.by_minute.items())},
        "wrong_by_service_top": dict(c.by_service.most_common(50)),
        "rib": c.rib.summary(),
        "fib": c.fib.summary(),
    }


def agent_log_summary(path: Path) -> dict[str, int]:
    """WARNING/ERROR/CRITICAL lines of the agent's JSON log, counted by level and event."""
    out: Counter[str] = Counter()
    with path.open(errors="replace") as f:
        for line in f:
            if '"WARNING"' not in line and '"ERROR"' not in line and '"CRITICAL"' not in line:
                continue
            try:
                x = json.loads(line)
            except ValueError:
                out["(not JSON)"] += 1
                continue
            out[f"{x.get('level')} {x.get('event') or x.get('message', '')[:60]}"] += 1
    return dict(out.most_common())


def start_soak_backends(ns: str, address: str, count: int) -> subprocess.Popen[bytes]:
    argv = ["ip", "netns", "exec", ns, str(PY), "-m", "bench.soak_backends", address]
    argv += [str(SCALE_BASE_PORT), str(count), str(SCALE_CONTROL_PORT)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=REPO, start_new_session=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError("soak backends did not start")
    return proc


def commit() -> str:
    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", str(REPO), *argv], capture_output=True, text=True, check=False
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "agent")
    return git("rev-parse", "--short=10", "HEAD") + (" (agent/ modified)" if dirty else "")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=1800.0, help="seconds under churn")
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--extras", type=int, default=10, help="services added/removed by reloads")
    ap.add_argument("--warmup", type=float, default=300.0)
    ap.add_argument("--reload-every", type=float, default=30.0)
    ap.add_argument("--drain-every", type=float, default=60.0)
    ap.add_argument("--flap-every", type=float, default=5.0)
    ap.add_argument("--flap-count", type=int, default=5)
    ap.add_argument("--rib-every", type=float, default=1.0)
    ap.add_argument("--sample-every", type=float, default=5.0)
    ap.add_argument("--margin", type=float, default=3.0, help="propagation margin of a settle")
    ap.add_argument(
        "--bulk-per-route",
        type=float,
        default=0.01,
        help="allowance per UPDATE of a drain/undrain (2 per route for a drain: "
        "soak_truth.drain_allowance; 1,000 routes reach r1's FIB in ~2.7 s on a quiet host: "
        "bench/NOTES.md)",
    )
    ap.add_argument(
        "--parse-every",
        type=int,
        default=10,
        help="give every Nth /metrics scrape (1/s) to prometheus_client's parser; every "
        "scrape checks the status and the tasks gauge",
    )
    ap.add_argument("--quiet-extra", type=float, default=10.0)
    ap.add_argument("--quiet-samples", type=int, default=10)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument(
        "--no-save",
        action="store_true",
        help="a trial: no results.json records, raw data to raw/soak-trial.json",
    )
    args = ap.parse_args()
    rev = commit()
    name = "soak-trial" if args.no_save else "soak"  # a trial run keeps the record's raw data
    with load_logged(name), bgp_lab(n_lbs=1) as bl:
        load0 = os.getloadavg()
        out = Soak(args, bl).run()
        out.update(commit=rev, load_start=load0, load_end=os.getloadavg())
    save_raw(name, out)
    recs = records(out)
    for r in recs:
        print(f"{r.metric}: {r.value} {r.unit} (goal {r.goal})", flush=True)
    if not args.no_save:
        save(recs)
    c = out["checker"]
    for src in ("rib", "fib"):
        t = c[src]
        print(
            f"{src}: {t['wrong_episodes']} wrong episodes ({t['wrong_route_seconds']:.1f} "
            f"route-s), {t['route_changes']} route changes, {t['late']} late "
            f"{t['late_by_kind']}, {t['lost']} lost {t['lost_by_kind']}, max delay by kind "
            f"{ {k: round(v, 1) for k, v in t['delay_max_by_kind_s'].items()} }",
            flush=True,
        )
    print(f"soak done on {rev} (old per-sample count: {c['wrong']} + {c['wrong_events']} "
          f"events; by kind {c['wrong_by_kind']})", flush=True)  # fmt: skip
    print(f"agent log warnings/errors: {out['agent_log']}", flush=True)
    if out["scrapes"]["ms"]:
        p50 = statistics.median(out["scrapes"]["ms"])
        print(f"{out['scrapes']['total']} scrapes, p50 {p50:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
