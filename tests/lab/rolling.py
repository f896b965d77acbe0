"""A rolling upgrade of the running lab under client traffic: ``bgp-lb fleet roll`` (the
operator's tool, as a subprocess) over the topology's fleet file, with the lab's own stop and
install commands (``python -m tests.lab node stop|replace``: a new disk = empty state_dir, the
new IMAGE_VERSION in the agent's /etc/os-release, node.start_drained) and the client's log as
its traffic counter. A thread polls the routers' FIBs meanwhile, so a failed request can be
told apart: open while a next-hop set changed and reset (stateless ECMP rehashed it: counted,
as in the drain test) or anything else (a failed new request)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .observe import client_background, fib_snapshot, wait_for_line
from .runner import REPO, VENV_BIN, Lab
from .scenario import RESET_ERRORS

Window = tuple[str, float, float]  # vip, wall time of the poll before a change, of the one after


class FibRecorder:
    """Polls every FIB in a thread; records when a (router, vip)'s next hops changed."""

    def __init__(self, lab: Lab, interval: float = 0.1) -> None:
        self.lab = lab
        self.interval = interval
        self.windows: list[Window] = []
        self.changes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FibRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        last = fib_snapshot(self.lab)
        last_poll = time.time()
        while not self._stop.wait(self.interval):
            polling = time.time()
            snap = fib_snapshot(self.lab)
            polled = time.time()
            for key, nodes in snap.items():
                if last.get(key) != nodes:
                    self.changes += 1
                    self.windows.append((key[1], last_poll, polled))
            last, last_poll = snap, polling


def reset_across_change(record: Mapping[str, object], windows: list[Window]) -> bool:
    """A reset of a request that was open while a router's next hops for its VIP changed."""
    if not str(record.get("error", "")).startswith(RESET_ERRORS):
        return False
    start = float(record["t"])  # type: ignore[arg-type]
    end = start + float(record["ms"]) / 1000.0  # type: ignore[arg-type]
    return any(
        vip == record["vip"] and start <= after and end >= before for vip, before, after in windows
    )


@dataclass
class RollRun:
    exit_status: int
    seconds: float
    output: str
    summary: dict[str, object]
    requests: int
    rate: float
    failures: int  # failed requests not open across a next-hop change
    errors: list[str]
    in_flight_resets: int
    fib_changes: int
    per_node: dict[str, float] = field(default_factory=dict)


def traffic_counter(log: Path) -> str:
    """The roll's --traffic-counter: the client's log so far (one line per finished request,
    ``"error"`` in a failed one), counted by grep: a Python start-up per step costs seconds
    under TCG."""
    q = shlex.quote(str(log))
    return (
        'printf \'{"sent": %d, "failed": %d}\\n\' '
        f"$(grep -c '^{{\"t\":' {q}) $(grep -c '\"error\":' {q})"
    )


def roll_command(lab: Lab, image_version: str, version: str, counter_log: Path) -> list[str]:
    assert lab.topology.fleet is not None
    py = shlex.quote(sys.executable)
    name = lab.topology.name
    return [
        str(VENV_BIN / "bgp-lb"), "fleet", "roll", str(lab.topology.fleet),
        "--on-node", f"ip netns exec {lab.ns('')}{{node}}",
        "--bgp-lb", str(VENV_BIN / "bgp-lb"),
        "--node-config", str(lab.dir / "{node}" / "config.yaml"),
        "--stop", f"{py} -m tests.lab node stop {name} {{node}}",
        "--install",
        f"{py} -m tests.lab node replace {name} {{node}} --image-version {image_version}",
        "--version", version,
        "--image-version", image_version,
        "--traffic-counter", traffic_counter(counter_log),
        "--drain-timeout", "180",
        "--healthy-timeout", "400",  # a TCG agent start: 30 s idle, minutes loaded
        "--announce-timeout", "120",
        "--poll", "2",
        "--json",
    ]  # fmt: skip


def _run_printed(argv: list[str], t0: float, timeout: float = 1300.0) -> tuple[int, list[str]]:
    """Run the roll, printing its lines as they come (with the seconds since ``t0``): a run
    killed by the VM's timeout still shows how far it got."""
    proc = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line.rstrip("\n"))
            print(f"  [{time.monotonic() - t0:6.1f}s] {out[-1]}", flush=True)
        return proc.wait(), out
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:  # left open it failed the test (an unraisable warning)
            proc.stdout.close()


def roll_under_load(
    lab: Lab, workdir: Path, image_version: str, version: str, rate: float = 20.0
) -> RollRun:
    log = workdir / "roll-load.jsonl"
    load = client_background(
        lab, log, "load", *lab.vips(),
        "--rate", str(rate), "--workers", "8", "--duration", "3600",
    )  # fmt: skip
    try:
        wait_for_line(log, '"node"', timeout=120)
        with FibRecorder(lab) as fibs:
            t0 = time.monotonic()
            status, out = _run_printed(roll_command(lab, image_version, version, log), t0)
            seconds = time.monotonic() - t0
            time.sleep(2.0)  # requests opened just before the last change finish
    finally:
        lines = load.stop()
    output = "\n".join(out)
    last = [line for line in out if line.startswith("{")][-1:] or ["{}"]
    try:
        summary = json.loads(last[0])
    except ValueError:
        summary = {}
    records = [r for r in lines if "summary" not in r]
    done = next((r for r in lines if "summary" in r), {})
    failed = [r for r in records if "error" in r]
    in_flight = [r for r in failed if reset_across_change(r, fibs.windows)]
    other = [r for r in failed if r not in in_flight]
    nodes = summary.get("nodes", []) if isinstance(summary, dict) else []
    return RollRun(
        exit_status=status,
        seconds=seconds,
        output=output,
        summary=summary if isinstance(summary, dict) else {},
        requests=len(records),
        rate=float(done.get("rate", 0.0)),  # type: ignore[arg-type]
        failures=len(other),
        errors=sorted({str(r["error"]) for r in other})[:5],
        in_flight_resets=len(in_flight),
        fib_changes=fibs.changes,
        per_node={str(n["node"]): float(n["seconds"]) for n in nodes if isinstance(n, dict)},
    )
