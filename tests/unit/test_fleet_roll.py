"""`bgp-lb fleet roll`: the walk (roll.py) against fake nodes, the status reading, the
command adapter (roll_ops.py) and the command line."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bgplb.cli import _parser, main
from bgplb.fleet.cli import run_fleet
from bgplb.fleet.roll import (
    Counts,
    NodeView,
    Roll,
    StepFailed,
    Target,
    Timing,
    mismatch,
    read_status,
)
from bgplb.fleet.roll_ops import CommandCounter, CommandOps, Commands, run_command

OLD, NEW = "img-1", "img-2"


def status_doc(
    *,
    image: str = OLD,
    ready: bool = True,
    drained: bool = False,
    peers_up: bool = True,
    healthy: bool = True,
    announced: bool = True,
) -> dict[str, Any]:
    """A status as the agent serves it (the fields the roll reads, plus some it does not)."""
    peers = ["10.0.0.1", "10.0.1.1"]
    decision = "announce" if announced and not drained and healthy else "withdraw"
    return {
        "node": {
            "router_id": "10.0.0.2",
            "local_as": 65001,
            "version": "0.1.0",
            "image_version": image,
            "ready": ready,
            "drained": drained,
            "uptime": 5.0,
            "some_future_field": {"x": 1},  # a newer agent's: tolerated
        },
        "services": [
            {
                "name": "web",
                "mode": "ipvs",
                "decision": decision,
                "reason": "healthy" if decision == "announce" else "node_draining",
                "drained": False,
                "checks": [{"check": "tcp", "status": "up" if healthy else "down"}],
                "real_servers": [
                    {"address": "10.0.0.2", "port": 8080, "weight": 1, "healthy": healthy}
                ],
                "peers": peers,
                "routes": {p: ["10.99.0.1/32"] for p in peers} if decision == "announce" else {},
            }
        ],
        "peers": [
            {
                "address": p,
                "name": f"r{i}",
                "asn": 65000,
                "type": "ebgp",
                "state": "up" if peers_up else "connected",
                "reason": "" if peers_up else "hold timer",
            }
            for i, p in enumerate(peers, start=1)
        ],
        "processes": [{"name": "exabgp", "running": True, "pid": 7}],
    }


# ---------------------------------------------------------------- reading a status


def test_read_status_healthy_announced_node() -> None:
    view = read_status(status_doc())
    assert view.healthy
    assert view.announced
    assert not view.drained
    assert (view.version, view.image_version) == ("0.1.0", OLD)


def test_read_status_drained_node_is_healthy_but_not_announced() -> None:
    view = read_status(status_doc(drained=True))
    assert view.healthy
    assert view.drained
    assert not view.announced
    assert view.withdrawn == ("web",)


def test_read_status_names_every_problem() -> None:
    doc = status_doc(ready=False, peers_up=False, healthy=False)
    doc["processes"][0]["running"] = False
    doc["prerequisites"] = [
        {"name": "ip_vs", "ok": False, "detail": "module not loaded"},
        {"name": "dummy", "ok": True},
    ]
    view = read_status(doc)
    assert "ip_vs: module not loaded" in view.problems
    assert not any(p.startswith("dummy") for p in view.problems)
    assert not view.healthy
    assert "not ready" in view.problems
    assert "exabgp not running" in view.problems
    assert "peer r1 connected (hold timer)" in view.problems
    assert "web: no healthy real server" in view.problems


def test_read_status_a_service_missing_at_one_peer_is_not_announced() -> None:
    doc = status_doc()
    doc["services"][0]["routes"] = {"10.0.0.1": ["10.99.0.1/32"]}
    view = read_status(doc)
    assert view.healthy
    assert not view.announced


def test_read_status_refuses_what_is_not_a_status() -> None:
    with pytest.raises(StepFailed, match="not a bgp-lb status"):
        read_status({"error": "unauthorized"})


def test_mismatch_compares_the_versions_given() -> None:
    view = read_status(status_doc(image=OLD))
    assert mismatch(view, Target(image_version=NEW)) == [f"image {OLD} (want {NEW})"]
    assert mismatch(view, Target(version="0.1.0")) == []
    assert mismatch(view, Target(version="0.2.0", image_version=OLD)) == [
        "version 0.1.0 (want 0.2.0)"
    ]


# ---------------------------------------------------------------- the walk, against fakes


class FakeTime:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class FakeNode:
    """A node's life: announced -> drained -> stopped -> starting (not reachable, then not
    ready) -> healthy drained at the installed image -> undrained (announced one poll later)."""

    def __init__(self, image: str = OLD, drained: bool = False, start_polls: int = 3) -> None:
        self.image = image
        self.drained = drained
        self.running = True
        self.start_polls = start_polls  # status reads before a started agent is healthy
        self.starting = 0
        self.announce_in = 0
        self.installs: str = NEW
        self.broken = False
        self.breaks = False  # the installed version never gets healthy

    def status(self) -> NodeView:
        if not self.running:
            raise StepFailed("exit 1: cannot reach the bgp-lb agent")
        if self.starting > 0:
            self.starting -= 1
            return read_status(status_doc(image=self.image, ready=False, drained=self.drained))
        if self.announce_in > 0:
            self.announce_in -= 1
            return read_status(status_doc(image=self.image, announced=False))
        return read_status(
            status_doc(image=self.image, drained=self.drained, healthy=not self.broken)
        )


class FakeOps:
    def __init__(self, nodes: dict[str, FakeNode], clock: FakeTime) -> None:
        self.nodes = nodes
        self.clock = clock
        self.calls: list[tuple[str, str]] = []
        self.fail: dict[tuple[str, str], str] = {}

    def _do(self, what: str, node: str) -> FakeNode:
        self.calls.append((what, node))
        self.clock.t += 1.0
        if (what, node) in self.fail:
            raise StepFailed(self.fail[(what, node)])
        return self.nodes[node]

    def drain(self, node: str) -> None:
        self._do("drain", node).drained = True

    def stop(self, node: str) -> None:
        self._do("stop", node).running = False

    def install(self, node: str) -> None:
        n = self._do("install", node)
        n.image = n.installs
        n.broken = n.breaks
        n.running = True
        n.starting = n.start_polls
        # a new disk: start_drained keeps it drained; `drained` stays True

    def undrain(self, node: str) -> None:
        n = self._do("undrain", node)
        n.drained = False
        n.announce_in = 1

    def status(self, node: str) -> NodeView:
        self.calls.append(("status", node))
        return self.nodes[node].status()


class FakeCounter:
    """Requests at 10/s of fake time; failures only while ``failing`` says so."""

    def __init__(self, clock: FakeTime) -> None:
        self.clock = clock
        self.t0 = clock.t
        self.failed = 0

    def read(self) -> Counts:
        return Counts(int((self.clock.t - self.t0) * 10), self.failed)


def roll(
    nodes: dict[str, FakeNode], timing: Timing | None = None, counter: bool = False
) -> tuple[Any, FakeOps, list[str], FakeTime]:
    clock = FakeTime()
    ops = FakeOps(nodes, clock)
    out: list[str] = []
    r = Roll(
        list(nodes),
        Target(image_version=NEW),
        ops,
        now=clock.now,
        sleep=clock.sleep,
        say=out.append,
        timing=timing or Timing(),
        counter=FakeCounter(clock) if counter else None,
    )
    return r.run(), ops, out, clock


def _mutations(ops: FakeOps) -> list[tuple[str, str]]:
    return [c for c in ops.calls if c[0] != "status"]


def test_roll_replaces_one_node_after_the_other_in_order() -> None:
    nodes = {n: FakeNode() for n in ("lb1", "lb2", "lb3")}
    result, ops, out, _ = roll(nodes)
    assert result.ok, out
    want = []
    for n in ("lb1", "lb2", "lb3"):
        want += [("drain", n), ("stop", n), ("install", n), ("undrain", n)]
    assert _mutations(ops) == want
    assert [r.outcome for r in result.nodes] == ["rolled"] * 3
    assert all(n.image == NEW and not n.drained for n in nodes.values())
    # a node is undrained only once the status said healthy at the new version, and the next
    # node is drained only once the previous one announced again
    calls = ops.calls
    for n in ("lb1", "lb2"):
        after_undrain = calls[calls.index(("undrain", n)) + 1 :]
        nxt = f"lb{int(n[2]) + 1}"
        between = after_undrain[: after_undrain.index(("drain", nxt))]
        assert ("status", n) in between
    assert [s.step for s in result.nodes[0].steps] == [
        "drain --all --wait",
        "stop",
        "install",
        "healthy",
        "undrain",
    ]
    assert any("[1/3] lb1: healthy done in" in line for line in out)
    assert out[-1].startswith("roll done: 3/3 nodes at image img-2")


def test_roll_prints_request_counts_per_step_and_per_node() -> None:
    nodes = {n: FakeNode() for n in ("lb1", "lb2")}
    result, _, out, _ = roll(nodes, counter=True)
    assert result.ok
    per_node = [r.traffic for r in result.nodes]
    assert all(t is not None and t.sent > 0 and t.failed == 0 for t in per_node)
    assert result.traffic is not None
    assert result.traffic.sent == sum(t.sent for t in per_node if t is not None)
    steps = result.nodes[0].steps
    assert all(s.traffic is not None for s in steps)
    assert sum(s.traffic.sent for s in steps if s.traffic) == per_node[0].sent
    assert any(line.startswith("[1/2] lb1: rolled in") and "sent, 0 failed" in line for line in out)
    assert "requests" in out[-1]
    assert "sent, 0 failed" in out[-1]


def test_a_node_that_never_gets_healthy_stops_the_roll_drained() -> None:
    nodes = {n: FakeNode() for n in ("lb1", "lb2", "lb3")}
    nodes["lb2"].breaks = True
    result, ops, out, _ = roll(nodes, Timing(healthy_timeout=60, poll=2))
    assert not result.ok
    assert [r.outcome for r in result.nodes] == ["rolled", "failed", "not reached"]
    assert ("undrain", "lb2") not in ops.calls  # it stays drained: the others serve
    assert not any(n == "lb3" for _, n in _mutations(ops))
    assert nodes["lb2"].drained
    assert result.error is not None
    assert "not healthy at image img-2 within 60 s" in result.error
    assert "web: no healthy real server" in result.error
    assert any("FAILED" in line and "lb2" in line for line in out)
    assert out[-1].startswith("roll STOPPED: 1/3 nodes")


def test_a_node_that_keeps_its_old_version_is_not_undrained() -> None:
    nodes = {n: FakeNode() for n in ("lb1", "lb2")}
    nodes["lb1"].installs = OLD  # the install command did not change the disk
    result, ops, _, _ = roll(nodes, Timing(healthy_timeout=20, poll=2))
    assert not result.ok
    assert ("undrain", "lb1") not in ops.calls
    assert result.error is not None
    assert f"image {OLD} (want {NEW})" in result.error


def test_a_failed_drain_stops_before_anything_is_stopped() -> None:
    nodes = {n: FakeNode() for n in ("lb1", "lb2")}
    clock = FakeTime()
    ops = FakeOps(nodes, clock)
    ops.fail[("drain", "lb1")] = "drain --all --wait: exit 1: traffic still arriving"
    out: list[str] = []
    result = Roll(
        list(nodes), Target(image_version=NEW), ops, clock.now, clock.sleep, out.append
    ).run()
    assert not result.ok
    assert _mutations(ops) == [("drain", "lb1")]
    assert result.nodes[0].outcome == "failed"


def test_preflight_refuses_when_another_node_is_not_serving() -> None:
    nodes = {n: FakeNode() for n in ("lb1", "lb2", "lb3")}
    nodes["lb3"].drained = True
    result, ops, out, _ = roll(nodes)
    assert not result.ok
    assert _mutations(ops) == []  # nothing changed
    assert result.error is not None
    assert "lb3: not announcing" in result.error
    assert any(line.startswith("roll refused") for line in out)


def test_preflight_refuses_an_unreachable_node() -> None:
    nodes = {n: FakeNode() for n in ("lb1", "lb2")}
    nodes["lb2"].running = False
    result, ops, _, _ = roll(nodes)
    assert not result.ok
    assert _mutations(ops) == []
    assert result.error is not None
    assert "lb2: status:" in result.error


def test_an_interrupted_roll_skips_done_nodes_and_undrains_a_drained_new_one() -> None:
    nodes = {
        "lb1": FakeNode(image=NEW),  # done
        "lb2": FakeNode(image=NEW, drained=True),  # healthy at the new version, not undrained
        "lb3": FakeNode(),
    }
    result, ops, out, _ = roll(nodes)
    assert result.ok, out
    assert [r.outcome for r in result.nodes] == ["skipped", "resumed", "rolled"]
    assert _mutations(ops) == [
        ("undrain", "lb2"),
        ("drain", "lb3"),
        ("stop", "lb3"),
        ("install", "lb3"),
        ("undrain", "lb3"),
    ]


def test_undrained_but_never_announced_fails_with_what_the_status_said() -> None:
    nodes = {"lb1": FakeNode(), "lb2": FakeNode()}
    nodes["lb1"].announce_in = 0
    clock = FakeTime()
    ops = FakeOps(nodes, clock)
    original = ops.undrain

    def undrain(node: str) -> None:
        original(node)
        nodes[node].announce_in = 10_000  # never

    ops.undrain = undrain  # type: ignore[method-assign]
    out: list[str] = []
    result = Roll(
        list(nodes),
        Target(image_version=NEW),
        ops,
        clock.now,
        clock.sleep,
        out.append,
        Timing(announce_timeout=30, poll=2),
    ).run()
    assert not result.ok
    assert result.error is not None
    assert "undrained but not announced within 30 s" in result.error
    assert "not announced: web" in result.error


# ---------------------------------------------------------------- the commands


class FakeRunner:
    def __init__(self, replies: dict[str, tuple[int, list[str]]] | None = None) -> None:
        self.argvs: list[list[str]] = []
        self.envs: list[dict[str, str] | None] = []
        self.replies = replies or {}

    def __call__(
        self, argv: Sequence[str], timeout: float, say: Any, env: dict[str, str] | None
    ) -> tuple[int, list[str]]:
        self.argvs.append(list(argv))
        self.envs.append(env)
        for key, reply in self.replies.items():
            if key in " ".join(argv):
                return reply
        return 0, []


def test_command_ops_run_the_cli_on_the_node_and_the_operator_commands_here() -> None:
    runner = FakeRunner({"status --json": (0, json.dumps(status_doc(image=NEW)).splitlines())})
    ops = CommandOps(
        Commands(
            on_node="ip netns exec lab-{node}",
            bgp_lb="/venv/bin/bgp-lb",
            node_config="/run/lab/{node}/config.yaml",
            stop="kill-agent {node}",
            install="replace-disk {node} --image img-2",
            drain_timeout=120,
        ),
        say=lambda _: None,
        runner=runner,
    )
    ops.drain("lb1")
    ops.stop("lb1")
    ops.install("lb1")
    view = ops.status("lb1")
    ops.undrain("lb1")
    cfg = ["--config", "/run/lab/lb1/config.yaml"]
    prefix = ["ip", "netns", "exec", "lab-lb1", "/venv/bin/bgp-lb"]
    assert runner.argvs == [
        [*prefix, "drain", "--all", "--wait", "--timeout", "120", *cfg],
        ["sh", "-c", "kill-agent lb1"],
        ["sh", "-c", "replace-disk lb1 --image img-2"],
        [*prefix, "status", "--json", *cfg],
        [*prefix, "undrain", "--all", *cfg],
    ]
    assert runner.envs[2] is not None
    assert runner.envs[2]["BGPLB_NODE"] == "lb1"
    assert view.image_version == NEW
    assert view.announced


def test_command_ops_default_stop_is_systemctl_on_the_node_and_names_are_quoted() -> None:
    runner = FakeRunner()
    ops = CommandOps(
        Commands(on_node="ssh root@{node}", install="make-disk {node}"), lambda _: None, runner
    )
    ops.stop("lb-1")
    ops.install("lb 1")  # a name is one shell word, whatever it holds
    assert runner.argvs == [
        ["ssh", "root@lb-1", "systemctl", "stop", "bgp-lb"],
        ["sh", "-c", "make-disk 'lb 1'"],
    ]


def test_command_ops_failures_say_which_command_exit_and_output() -> None:
    runner = FakeRunner(
        {
            "drain": (1, ["drained node", "traffic still arriving at the timeout: web 40/s"]),
            "status": (0, ["not json"]),
            "stop": (124, []),
        }
    )
    ops = CommandOps(Commands(step_timeout=5), lambda _: None, runner)
    with pytest.raises(StepFailed, match=r"drain --all --wait: exit 1: .*still arriving"):
        ops.drain("lb1")
    with pytest.raises(StepFailed, match="status: not JSON"):
        ops.status("lb1")
    with pytest.raises(StepFailed, match="stop: no result within 5 s"):
        ops.stop("lb1")


def test_command_counter_reads_the_last_line() -> None:
    runner = FakeRunner({"count": (0, ["progress", '{"sent": 12, "failed": 1}', ""])})
    assert CommandCounter("count", runner=runner).read() == Counts(12, 1)
    for reply in (["12 1"], ['{"sent": -1, "failed": 0}'], ['{"sent": 1}']):
        bad = FakeRunner({"count": (0, reply)})
        with pytest.raises(StepFailed):
            CommandCounter("count", runner=bad).read()


def test_run_command_kills_the_whole_group_at_its_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    t0 = time.monotonic()
    status, _ = run_command(
        ["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], timeout=0.5, say=None
    )
    assert status == 124
    assert time.monotonic() - t0 < 10
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------- the command line

FLEET = """\
routers: [{name: r1, asn: 65000}]
nodes:
  - {name: lb1, node: {router_id: 10.0.0.2, local_as: 65001},
     sessions: [{router: r1, address: 10.0.0.1}]}
  - {name: lb2, node: {router_id: 10.0.0.3, local_as: 65001},
     sessions: [{router: r1, address: 10.0.0.1}]}
"""


def test_cli_refuses_bad_input_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    base = ["fleet", "roll", str(fleet), "--install", "true"]
    assert main([*base, "--image-version", NEW, "--nodes", "lb1,lb9"]) == 2
    assert "--nodes: lb9 (the fleet's nodes: lb1, lb2)" in capsys.readouterr().err
    assert main(base) == 2
    assert "--version and/or --image-version" in capsys.readouterr().err
    assert main([*base, "--image-version", NEW, "--poll", "0"]) == 2
    assert "--poll: must be positive" in capsys.readouterr().err


def test_cli_rolls_fake_nodes_end_to_end(tmp_path: Path) -> None:
    """The real adapter and CLI against a fake `bgp-lb` (a script keeping each node's state in
    a file): the commands run in order and the JSON summary says so."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    state = tmp_path / "state"
    state.mkdir()
    for n in ("lb1", "lb2"):
        (state / n).write_text(json.dumps({"image": OLD, "drained": False, "running": True}))
    fake = tmp_path / "fake-bgp-lb"
    docs = {
        f"{image}-{drained}": status_doc(image=image, drained=drained)
        for image in (OLD, NEW)
        for drained in (False, True)
    }
    (tmp_path / "docs.json").write_text(json.dumps(docs))
    fake.write_text(
        f"#!{sys.executable} -S\n"  # stdlib only: starts in milliseconds
        "import json, sys\n"
        "verb, node = sys.argv[1], sys.argv[sys.argv.index('--config') + 1]\n"
        f"path = {str(state)!r} + '/' + node\n"
        "s = json.load(open(path))\n"
        "if not s['running']: sys.exit('cannot reach the agent')\n"
        "if verb == 'status':\n"
        f"    docs = json.load(open({str(tmp_path / 'docs.json')!r}))\n"
        "    print(json.dumps(docs[f\"{s['image']}-{s['drained']}\"]))\n"
        "elif verb == 'drain': s['drained'] = True; print('drained node'); print('quiet')\n"
        "elif verb == 'undrain': s['drained'] = False; print('undrained node')\n"
        "json.dump(s, open(path, 'w'))\n"
    )
    fake.chmod(0o755)
    log = tmp_path / "log"
    setter = (
        f"{sys.executable} -S -c \"import json,sys; p='{state}/'+sys.argv[1]; "
        "s=json.load(open(p)); s.update(json.loads(sys.argv[2])); json.dump(s, open(p, 'w'))\""
    )
    out = io.StringIO()

    args = _parser().parse_args(
        [
            "fleet", "roll", str(fleet),
            "--bgp-lb", str(fake), "--node-config", "{node}",
            "--stop", f"echo stop $BGPLB_NODE >> {log}; {setter} {{node}} '{{\"running\": false}}'",
            "--install",
            f"echo install {{node}} >> {log}; "
            f"{setter} {{node}} '{{\"running\": true, \"image\": \"{NEW}\"}}'",
            "--image-version", NEW,
            "--traffic-counter", "echo '{\"sent\": 5, \"failed\": 0}'",
            "--poll", "0.05",
            "--json",
        ]
    )  # fmt: skip
    assert run_fleet(args, out, io.StringIO()) == 0, out.getvalue()
    assert log.read_text().split("\n") == ["stop lb1", "install lb1", "stop lb2", "install lb2", ""]
    summary = json.loads(out.getvalue().splitlines()[-1])
    assert summary["ok"] is True
    assert [n["outcome"] for n in summary["nodes"]] == ["rolled", "rolled"]
    assert summary["sent"] == 0
    assert summary["failed"] == 0
    for n in ("lb1", "lb2"):
        s = json.loads((state / n).read_text())
        assert s == {"image": NEW, "drained": False, "running": True}
    assert os.environ.get("BGPLB_NODE") is None
