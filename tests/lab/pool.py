"""The pool lab's scenario (issue 15), shared by its test, ``make demo`` and the benchmark.

Under new connections (``client load``, port 80) and long-lived echo connections (``client
echo``, port 7): drain lb2, SIGKILL lb3's agent, start lb4's agent, undrain lb2. Which LB node
carries each echo connection is read from the LB nodes themselves: an nftables set per node
(``update @flows`` in prerouting, 3 s element timeout) holds the client ports it received in
the last 3 s, so a snapshot before and after a step names the flows that really moved.

:func:`silent_death` freezes lb1 (nftables drops everything on its links, both ways) until the
routers' hold timer withdraws it, then thaws it.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .observe import Background, client_background, drain, fib_snapshot, wait_for_line
from .runner import REPO, Lab
from .scenario import wait_membership
from .topology import Topology, load_topology, with_agent_configs

POOL = REPO / "containerlab" / "pool.clab.yml"
CONTROL_CONFIGS = REPO / "containerlab" / "pool" / "control"
SERVICE = "web"
ECHO_PORT = 7
# Its agent starts with the lab, drained (never announced); "add lb4" undrains it. Starting
# the agent mid-run under the traffic took more than 7 min in a loaded TCG guest (Python
# imports starved of CPU; its log was still empty), too long for make test-lab.
JOINER = "lb4"
FLOW_TIMEOUT = 3.0  # seconds an nftables flow element lives without packets (> 2 echoes)
STEP_TIMEOUT = 180.0  # trigger -> FIBs converged: a loaded TCG guest delays the agents' passes
# Under TCG (2 vCPUs, shared with 3 agents) 1000 echoes/s (100 connections x 100 ms) and 50
# new connections/s overloaded the guest: health probes overran, weights flapped, a drain
# took 20+ s to reach the FIB. These defaults are what it carries; both are arguments.
RATE = 20.0
INTERVAL = 0.5
# a request slower than this fails. 3 s (the ECMP lab's) failed 65 of 3,214 requests by
# timeout, none by reset, in a starved guest that reached 3.8 requests/s: a blackholed flow
# still fails at 10 s, a flow served slowly by an overloaded guest does not.
REQUEST_TIMEOUT = 10.0
# under TCG a starting agent (ExaBGP import, pool settling) takes a while
JOIN_TIMEOUT = 600.0

FLOWS = f"""table ip poollab {{
  set flows {{ type ipv4_addr . inet_service; flags dynamic,timeout; timeout {FLOW_TIMEOUT:g}s; }}
  chain pre {{
    type filter hook prerouting priority -300; policy accept;
    tcp dport {ECHO_PORT} update @flows {{ ip saddr . tcp sport }}
  }}
}}
"""
_ELEMENT = re.compile(r"(\d+\.\d+\.\d+\.\d+) \. (\d+)")


def pool_topology(control: bool = False) -> Topology:
    topology = load_topology(POOL)
    if control:
        return with_agent_configs(topology, CONTROL_CONFIGS, "poolctl")
    return topology


def pool_lab(control: bool = False, keep_logs: Path | None = None) -> Lab:
    return Lab(pool_topology(control), keep_logs=keep_logs, deferred=(JOINER,))


def _nft(lab: Lab, node: str, script: str) -> None:
    argv = ["ip", "netns", "exec", lab.ns(node), "nft", "-f", "-"]
    res = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"nft on {node} failed: {res.stderr.strip()}\n{script}")


def track_flows(lab: Lab) -> None:
    """The flow set in every LB node (once: a second call leaves it as it is)."""
    for node in lab.topology.by_role("lb"):
        if "poollab" not in lab.exec_in(node.name, "nft", "list", "tables"):
            _nft(lab, node.name, FLOWS)


def carriers(lab: Lab) -> dict[int, tuple[str, ...]]:
    """client port -> the LB nodes that received packets of that echo flow in the last 3 s."""
    out: dict[int, list[str]] = {}
    for node in lab.topology.by_role("lb"):
        text = lab.exec_in(node.name, "nft", "list", "set", "ip", "poollab", "flows")
        for _, port in _ELEMENT.findall(text):
            out.setdefault(int(port), []).append(node.name)
    return {port: tuple(sorted(nodes)) for port, nodes in out.items()}


def freeze(lab: Lab, node: str) -> None:
    """Silent death: drop everything the node receives on its links and everything it sends
    (BGP keepalives included), so only the routers' hold timer can notice."""
    ifaces = lab.topology.node(node).interfaces
    chains = "\n".join(
        f'  chain in_{i} {{ type filter hook ingress device "{i}" priority -500; policy drop; }}'
        for i in ifaces
    )
    script = f"table netdev freeze {{\n{chains}\n}}\n"
    script += "table inet freeze {\n  chain out { type filter hook postrouting priority -500; "
    script += "policy drop; }\n}\n"
    _nft(lab, node, script)


def thaw(lab: Lab, node: str) -> None:
    _nft(lab, node, "delete table netdev freeze\ndelete table inet freeze\n")


@dataclass(frozen=True)
class StepResult:
    name: str
    seconds: float  # trigger -> every router FIB converged
    moved: int  # echo flows whose carrying LB node changed
    moved_pairs: dict[str, int]  # "lb2->lb1" -> flows
    tracked: int  # echo flows seen before the step
    vanished: int  # seen before, on no node after (reset: the control's moved flows)


@dataclass(frozen=True)
class RunResult:
    control: bool
    steps: list[StepResult]
    requests: int
    failed: int
    rate: float
    failed_errors: dict[str, int]
    held: int
    reset: int
    reasons: dict[str, int]
    max_stall: float
    late: int
    echo_rate: float
    opened: dict[str, int] = field(default_factory=dict)

    @property
    def moved(self) -> int:
        return sum(s.moved for s in self.steps)


def _moved(before: dict[int, tuple[str, ...]], after: dict[int, tuple[str, ...]]) -> list[str]:
    pairs = []
    for port, was in before.items():
        now = after.get(port)
        if now and len(was) == 1 and len(now) == 1 and was != now:
            pairs.append(f"{was[0]}->{now[0]}")
    return pairs


class Traffic:
    """The two clients: new connections at ``rate``/s and ``held`` echo connections."""

    def __init__(self, lab: Lab, workdir: Path, rate: float, held: int, interval: float) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        vip = lab.vips()[0]
        self.echo_log, self.load_log = workdir / "echo.jsonl", workdir / "load.jsonl"
        args = ["--port", str(ECHO_PORT), "--count", str(held), "--interval", str(interval)]
        self.echo: Background = client_background(
            lab, self.echo_log, "echo", vip, *args, "--duration", "3600"
        )
        wait_for_line(self.echo_log, '"opened"', timeout=180)
        workers = str(max(4, int(rate // 6)))
        self.load: Background = client_background(
            lab, self.load_log, "load", vip, "--rate", str(rate), "--workers", workers,
            "--duration", "3600", "--timeout", str(REQUEST_TIMEOUT),
        )  # fmt: skip
        wait_for_line(self.load_log, '"node"', timeout=120)

    def stop(self) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        return self.load.stop(), self.echo.stop()


def _settle(seconds: float) -> None:
    time.sleep(seconds)


def run_steps(
    lab: Lab,
    workdir: Path,
    control: bool,
    rate: float = RATE,
    held: int = 100,
    interval: float = INTERVAL,
    say: Callable[[str], None] = print,
) -> RunResult:
    """The four maintenance steps under traffic; the lab ends with lb1, lb2, lb4 announced
    (lb3's agent killed)."""
    track_flows(lab)
    traffic = Traffic(lab, workdir, rate, held, interval)
    steps: list[StepResult] = []

    def step(
        name: str, node: str, present: bool, timeout: float, trigger: Callable[[], object]
    ) -> None:
        _settle(FLOW_TIMEOUT + 1.0)  # every live flow is in exactly one node's set
        before = carriers(lab)
        baseline = fib_snapshot(lab)
        started = time.monotonic()
        trigger()
        conv = wait_membership(lab, node, present, timeout, started, baseline)
        _settle(FLOW_TIMEOUT + 1.5)  # the old carriers' elements have expired
        after = carriers(lab)
        pairs = _moved(before, after)
        counts: dict[str, int] = {}
        for p in pairs:
            counts[p] = counts.get(p, 0) + 1
        gone = len(set(before) - set(after))
        steps.append(StepResult(name, conv.seconds, len(pairs), counts, len(before), gone))
        say(
            f"{name}: FIBs converged in {conv.seconds:.1f}s; {len(pairs)} of {len(before)} echo "
            f"flows moved {counts}, {gone} vanished"
        )

    try:
        step("drain lb2", "lb2", False, STEP_TIMEOUT, lambda: drain(lab, "lb2", SERVICE))
        kill = lambda: lab.stop_process("lb3", "agent", kill=True)  # noqa: E731
        step("SIGKILL lb3's agent", "lb3", False, STEP_TIMEOUT, kill)
        add = lambda: drain(lab, JOINER, SERVICE, undo=True)  # noqa: E731
        step(f"add {JOINER}", JOINER, True, STEP_TIMEOUT, add)
        undrain = lambda: drain(lab, "lb2", SERVICE, undo=True)  # noqa: E731
        step("undrain lb2", "lb2", True, STEP_TIMEOUT, undrain)
        _settle(2.0)
    finally:
        load_lines, echo_lines = traffic.stop()
    return _result(control, steps, load_lines, echo_lines)


def _result(
    control: bool,
    steps: list[StepResult],
    load_lines: list[dict[str, object]],
    echo_lines: list[dict[str, object]],
) -> RunResult:
    records = [r for r in load_lines if "summary" not in r]
    lsum = next((r for r in load_lines if "summary" in r), {})
    esum = next((r for r in echo_lines if "summary" in r), {})
    opened = next((r["opened"] for r in echo_lines if "opened" in r), {})
    errors: dict[str, int] = {}
    for r in records:
        if "error" in r:
            name = str(r["error"]).split(":")[0]
            errors[name] = errors.get(name, 0) + 1
    return RunResult(
        control=control,
        steps=steps,
        requests=len(records),
        failed=sum(errors.values()),
        rate=float(lsum.get("rate", 0.0)),  # type: ignore[arg-type]
        failed_errors=errors,
        held=int(esum.get("connections", 0)),  # type: ignore[call-overload]
        reset=int(esum.get("reset", 0)),  # type: ignore[call-overload]
        reasons=dict(esum.get("reasons", {})),  # type: ignore[call-overload]
        max_stall=float(esum.get("max_stall", 0.0)),  # type: ignore[arg-type]
        late=int(esum.get("late", 0)),  # type: ignore[call-overload]
        echo_rate=float(esum.get("echo_rate", 0.0)),  # type: ignore[arg-type]
        opened=dict(opened),  # type: ignore[call-overload]
    )


@dataclass(frozen=True)
class DeathResult:
    node: str
    withdraw_seconds: float  # freeze -> gone from every router FIB (the hold timer)
    rejoin_seconds: float  # thaw -> back in every FIB
    flows_on_node: int  # echo flows it carried when it froze
    held: int
    reset: int
    reasons: dict[str, int]
    max_stall: float
    late: int
    requests: int
    failed: int


def silent_death(
    lab: Lab,
    workdir: Path,
    node: str = "lb1",
    rate: float = RATE,
    held: int = 100,
    interval: float = INTERVAL,
    say: Callable[[str], None] = print,
) -> DeathResult:
    track_flows(lab)
    traffic = Traffic(lab, workdir, rate, held, interval)
    try:
        _settle(FLOW_TIMEOUT + 1.0)
        before = carriers(lab)
        on_node = sum(1 for nodes in before.values() if nodes == (node,))
        baseline = fib_snapshot(lab)
        started = time.monotonic()
        freeze(lab, node)
        gone = wait_membership(lab, node, False, 90, started, baseline)
        say(f"{node} frozen: withdrawn by the routers after {gone.seconds:.1f}s")
        _settle(5.0)
        baseline = fib_snapshot(lab)
        started = time.monotonic()
        thaw(lab, node)
        back = wait_membership(lab, node, True, JOIN_TIMEOUT, started, baseline)
        say(f"{node} thawed: back in every FIB after {back.seconds:.1f}s")
        _settle(FLOW_TIMEOUT + 2.0)
    finally:
        load_lines, echo_lines = traffic.stop()
    r = _result(False, [], load_lines, echo_lines)
    return DeathResult(
        node, gone.seconds, back.seconds, on_node, r.held, r.reset, r.reasons, r.max_stall,
        r.late, r.requests, r.failed,
    )  # fmt: skip
