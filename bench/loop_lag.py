"""Benchmark 8: event loop lag of the agent at 1,000 services during reload, drain and status
calls (issue 13, item 8: p99 <= 5 ms).

``python -m bench.loop_lag [--services 1000] [--phase 20]`` (no root needed). The agent runs
in its own process (``--agent CONFIG``): the real health runner and probes (plain http checks,
interval 1 s, against ``bench.backends`` on 127.0.0.1: one port and path per service), the
real HTTP API, the real admin state file (fsync), the real reload (file parsed in a child
process); the dataplane and the BGP speaker are the in-memory fakes (no root, no FRR, so no
ExaBGP config fsync or netlink here: those are timed on their own in bench/NOTES.md).

Phases, each ``--phase`` seconds after warm-up (every service announced, or ``--warmup`` s:
a starved host may not get there; the count is recorded): idle; reload
(``POST /api/v1/reload`` back to back, alternating two files that differ in 10 services'
check timing); drain (drain/undrain one service every 0.5 s); status
(``GET /api/v1/status`` every 0.5 s). The lag comes from the agent's own
``bgplb_event_loop_lag_seconds`` (scraped before and after each phase): p99 as the upper bound
of the bucket holding the 99th percentile, and the share of ticks later than 5 ms (the goal
holds iff that share is <= 1 %).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from .lab import PY, REPO, Record, load_logged, save, save_raw

BENCH = "8 event loop lag"
COMMAND = "python -m bench.loop_lag"
LAG = "bgplb_event_loop_lag_seconds"
GOAL_MS = 5.0


# --------------------------------------------------------------------------- agent child


def run_agent(config_path: Path) -> None:
    """The agent with fake dataplane/BGP and everything else real (``--agent``)."""
    from bgplb.agent import Agent
    from bgplb.api import build_app, serve
    from bgplb.bgp.fake import FakeSpeaker
    from bgplb.clock import SystemClock
    from bgplb.config import load_config
    from bgplb.dataplane.fake import FakeDataplane
    from bgplb.eventlog import Event, EventLog
    from bgplb.logs import setup_logging

    class NoHistory(EventLog):
        """The fakes' log keeps every event for the tests to read. Nobody reads it here, and
        every route set kept (16,708 Route objects after a minute of drains) made the
        collector's full passes 35-85 ms: lag of the bench's fakes, not of the agent."""

        def record(self, source: str, kind: str, detail: Any) -> Event:
            return Event(0, 0.0, source, kind, detail)

    config = load_config(config_path)
    api = config.node.api
    token = Path(api.token_file).read_text().strip() if api.token_file else None

    async def main() -> int:
        setup_logging("json", "warning")
        clock = SystemClock()
        events = NoHistory(clock)
        agent = Agent(
            config,
            dataplane=FakeDataplane(events, clock),
            speaker=FakeSpeaker(events),
            clock=clock,
            config_path=config_path,
        )
        runner = await serve(build_app(agent, agent.metrics, token), api.listen, api.port)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, agent.stopping.set)
        try:
            return await agent.run()
        finally:
            await runner.cleanup()

    sys.exit(asyncio.run(main()))


# --------------------------------------------------------------------------- setup


def free_ports(count: int) -> int:
    """A base port with ``count`` free ports above it on 127.0.0.1."""
    for base in range(20000 + os.getpid() % 97 * 100, 60000, 1500):
        socks = []
        try:
            for p in range(base, base + count + 2):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def config(workdir: Path, n: int, base: int, api_port: int, slow: int = 0) -> dict[str, Any]:
    """``n`` announce-mode services; ``slow`` of them probe every 2 s instead of 1 s."""
    return {
        "node": {
            "router_id": "127.0.0.1",
            "local_as": 65001,
            "state_dir": str(workdir / "state"),
            "runtime_dir": str(workdir / "run"),
            "api": {
                "listen": "127.0.0.1",
                "port": api_port,
                "token_file": str(workdir / "token"),
            },
        },
        "peers": [{"address": "127.0.0.2", "asn": 65000}],
        "services": [
            {
                "name": f"s{i}",
                "mode": "announce",
                "interface": "lo",
                "vips": [f"10.99.{1 + i // 250}.{1 + i % 250}"],
                "checks": [
                    {
                        "type": "http",
                        "address": "127.0.0.1",
                        "port": base + i,
                        "path": f"/svc/{i}",
                        "interval": 2.0 if i < slow else 1.0,
                    }
                ],
            }
            for i in range(n)
        ],
    }


class Api:
    def __init__(self, port: int, token: str) -> None:
        self.base, self.token = f"http://127.0.0.1:{port}", token

    def call(self, method: str, path: str, timeout: float = 120.0) -> tuple[int, bytes]:
        req = urllib.request.Request(self.base + path, method=method)
        if method == "POST":
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def lag_buckets(self) -> dict[float, float]:
        """Cumulative count per ``le`` bound of the lag histogram."""
        _, body = self.call("GET", "/metrics")
        out = {}
        for line in body.decode().splitlines():
            if line.startswith(f"{LAG}_bucket"):
                le = line.split('le="', 1)[1].split('"', 1)[0]
                out[float(le)] = float(line.rsplit(" ", 1)[1])
        return out


def summary(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """Ticks in the phase, p99 (upper bound of its bucket, ms), share later than 5 ms (%)."""
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = delta[max(delta)]
    p99 = next((le for le, c in delta.items() if c >= 0.99 * total), float("inf"))
    within = delta.get(GOAL_MS / 1000, 0.0)
    late = 100.0 * (total - within) / total if total else 0.0
    return {"ticks": total, "p99_ms": p99 * 1000, "late_pct": late}


def phase(api: Api, seconds: float, action: Any, every: float) -> dict[str, float]:
    before = api.lag_buckets()
    done, errors, took = 0, 0, []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        if action is not None:
            ok = action()
            done += 1
            errors += 0 if ok else 1
            took.append(time.monotonic() - t)
        time.sleep(max(0.0, every - (time.monotonic() - t)))
    s = summary(before, api.lag_buckets())
    s.update(calls=done, errors=errors, call_max_s=max(took, default=0.0))
    return s


def warm_up(api: Api, agent: subprocess.Popen[bytes], n: int, limit: float) -> int:
    """Until every service is announced, or ``limit`` s (a starved host may never get there:
    the lag is measured anyway, and the count is recorded)."""
    deadline = time.monotonic() + limit
    announced = 0
    while time.monotonic() < deadline:
        assert agent.poll() is None, "the agent exited"
        try:
            _, body = api.call("GET", "/api/v1/status")
            st = json.loads(body)
            announced = sum(s["decision"] == "announce" for s in st["services"])
        except (OSError, ValueError, KeyError):
            pass
        if announced == n:
            break
        time.sleep(2)
    return announced


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--phase", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=120.0)
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--from-raw", type=Path, help="only write the records of a raw file")
    args = ap.parse_args()
    if args.agent:
        run_agent(args.agent)
        return
    if args.from_raw:
        from_raw(args.from_raw)
        return
    n = args.services
    workdir = Path(
        subprocess.check_output(["mktemp", "-d", "/tmp/bench-looplag.XXXX"]).decode().strip()
    )
    (workdir / "token").write_text("bench-token\n")
    (workdir / "token").chmod(0o600)
    base = free_ports(n + 1)
    api_port = base + n + 1
    files = [workdir / "a.yaml", workdir / "b.yaml"]
    files[0].write_text(yaml.safe_dump(config(workdir, n, base, api_port)))
    files[1].write_text(yaml.safe_dump(config(workdir, n, base, api_port, slow=10)))
    live = workdir / "config.yaml"
    live.write_bytes(files[0].read_bytes())
    backends = subprocess.Popen(
        [str(PY), "-m", "bench.backends", "127.0.0.1", str(base), str(n), str(base + n)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        start_new_session=True,
    )
    assert backends.stdout is not None
    if backends.stdout.readline().strip() != b"ready":
        raise RuntimeError("backends did not start")
    agent = subprocess.Popen(
        [str(PY), "-m", "bench.loop_lag", "--agent", str(live)],
        cwd=REPO,
        start_new_session=True,
        stderr=(workdir / "agent.log").open("wb"),
    )
    api = Api(api_port, "bench-token")
    results: dict[str, dict[str, float]] = {}
    announced = 0
    try:
        with load_logged("loop_lag"):
            announced = warm_up(api, agent, n, args.warmup)
            print(f"{announced} of {n} services announced after warm-up", flush=True)
            time.sleep(5)
            flip = [0]

            def reload() -> bool:
                flip[0] ^= 1
                live.write_bytes(files[flip[0]].read_bytes())
                code, body = api.call("POST", "/api/v1/reload")
                return code == 200 and bool(json.loads(body).get("ok"))

            drained = [False]

            def drain() -> bool:
                drained[0] = not drained[0]
                verb = "drain" if drained[0] else "undrain"
                return api.call("POST", f"/api/v1/services/s1/{verb}")[0] == 200

            def status() -> bool:
                return api.call("GET", "/api/v1/status")[0] == 200

            for name, action, every in (
                ("idle", None, 1.0),
                ("reload", reload, 0.0),
                ("drain", drain, 0.5),
                ("status", status, 0.5),
            ):
                print(f"== {name}", flush=True)
                results[name] = phase(api, args.phase, action, every)
                print(results[name], flush=True)
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            agent.wait(30)
        except subprocess.TimeoutExpired:
            agent.kill()
        os.killpg(backends.pid, signal.SIGKILL)
    save_raw(
        f"loop_lag-{n}",
        {"services": n, "announced": announced, "phase_seconds": args.phase, **results},
    )
    if not args.no_save:
        save(records(n, announced, results))


def records(n: int, announced: int, results: dict[str, dict[str, float]]) -> list[Record]:
    bench = f"{BENCH}: {n} services (fake BGP + dataplane)"
    out = [
        Record(
            bench,
            "services announced when the phases began",
            "count",
            announced,
            None,
            None,
            1,
            COMMAND,
        )
    ]
    for name, r in results.items():
        goal = name != "idle"
        p99 = r["p99_ms"] if math.isfinite(r["p99_ms"]) else None  # None: above the top bucket
        out += [
            Record(
                bench,
                f"loop lag p99 during {name} (bucket bound; empty: > 1 s)",
                "ms",
                p99,
                f"<= {GOAL_MS:g}" if goal else None,
                None,
                int(r["ticks"]),
                COMMAND,
            ),
            Record(
                bench,
                f"ticks later than 5 ms during {name}",
                "%",
                r["late_pct"],
                "<= 1" if goal else None,
                None,
                int(r["ticks"]),
                COMMAND,
            ),
        ]
        if goal:
            out.append(
                Record(
                    bench,
                    f"{name} calls failed",
                    "count",
                    r["errors"],
                    "<= 0",
                    None,
                    int(r["calls"]),
                    COMMAND,
                )
            )
    return out


def from_raw(path: Path) -> None:
    """Records from a raw result file (``--from-raw bench/raw/loop_lag-1000.json``)."""
    raw = json.loads(path.read_text())
    results = {k: v for k, v in raw.items() if isinstance(v, dict)}
    save(records(int(raw["services"]), int(raw.get("announced", 0)), results))


if __name__ == "__main__":
    main()
