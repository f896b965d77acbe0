"""``bgp-lb fleet roll``: replace the nodes one at a time, never more than one out of service.

Pure: what the roll reads from a node's status (:class:`NodeView`), whether a node is at the
new version, and the walk itself (:class:`Roll`), through a :class:`NodeOps` (roll_ops.py runs
the operator's commands) and an optional :class:`TrafficCounter`. Per node::

    drain --all --wait -> stop -> install -> healthy at the new version -> undrain -> announced

A failed step stops the roll there (the node stays drained: the others keep serving) and says
which step and why. Before the first node, every node's status is read: a node not yet at the
new version must be announcing (the roll takes one node out at a time and counts on the
others); a node already at it and announcing is skipped, one at it but still drained (an
interrupted roll) is undrained. docs/operations.md#rolling-upgrade is the operator's side.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Say = Callable[[str], None]


class StepFailed(Exception):
    """A step did not succeed: the message says why (shown to the operator)."""


@dataclass(frozen=True)
class Target:
    """The new version: the agent's (status ``node.version``), the image's
    (``node.image_version``), or both."""

    version: str | None = None
    image_version: str | None = None

    def describe(self) -> str:
        parts = []
        if self.version is not None:
            parts.append(f"version {self.version}")
        if self.image_version is not None:
            parts.append(f"image {self.image_version or '(none)'}")
        return ", ".join(parts)


@dataclass(frozen=True)
class NodeView:
    """What the roll needs from one node's ``/api/v1/status``."""

    version: str
    image_version: str
    drained: bool
    problems: tuple[str, ...]  # why the node is not healthy (a drain is not a problem)
    withdrawn: tuple[str, ...]  # services not announced to every one of their peers

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def announced(self) -> bool:
        return self.healthy and not self.drained and not self.withdrawn

    def describe(self) -> str:
        text = f"version {self.version}, image {self.image_version or '(none)'}"
        if self.problems:
            return f"{text}, not healthy: {'; '.join(self.problems)}"
        if self.drained:
            return f"{text}, healthy, drained"
        if self.withdrawn:
            return f"{text}, healthy, not announced: {', '.join(self.withdrawn)}"
        return f"{text}, healthy, announced"


def read_status(data: Any) -> NodeView:
    """A node's status JSON -> :class:`NodeView`. Healthy: ready, every supervised process
    running, no failed prerequisite, every BGP session up, every service with a healthy real
    server (or, without real servers, no check down) and no dataplane problem. Read field by
    field, not through the API's own model (which refuses unknown fields): the node may run a
    newer agent than the roll."""
    if not isinstance(data, Mapping) or not isinstance(data.get("node"), Mapping):
        raise StepFailed("not a bgp-lb status (no node section)")
    node = data["node"]
    problems: list[str] = []
    if node.get("ready") is not True:
        problems.append("not ready")
    for p in _items(data, "processes"):
        if p.get("running") is not True:
            problems.append(f"{p.get('name', '?')} not running")
    for q in _items(data, "prerequisites"):  # kernel modules, sysctls (check-node)
        if q.get("ok") is False:
            problems.append(f"{q.get('name', '?')}: {q.get('detail', '')}".rstrip(": "))
    for peer in _items(data, "peers"):
        if peer.get("state") != "up":
            why = f" ({peer['reason']})" if peer.get("reason") else ""
            name = peer.get("name") or peer.get("address", "?")
            problems.append(f"peer {name} {peer.get('state', '?')}{why}")
    withdrawn: list[str] = []
    drained = node.get("drained") is True
    for s in _items(data, "services"):
        name = str(s.get("name", "?"))
        real = [r for r in s.get("real_servers") or () if isinstance(r, Mapping)]
        checks = [c for c in s.get("checks") or () if isinstance(c, Mapping)]
        if real:
            if not any(r.get("healthy") is True for r in real):
                problems.append(f"{name}: no healthy real server")
        elif any(c.get("status") == "down" for c in checks):
            problems.append(f"{name}: a check is down")
        if s.get("reason") in DATAPLANE_PROBLEMS:
            problems.append(f"{name}: {s['reason']} {s.get('detail', '')}".rstrip())
        routes = s.get("routes") or {}
        held = [p for p in s.get("peers") or () if not routes.get(p)]
        if s.get("decision") != "announce" or held:
            withdrawn.append(name)
        drained |= s.get("drained") is True
    return NodeView(
        version=str(node.get("version", "")),
        image_version=str(node.get("image_version") or ""),
        drained=drained,
        problems=tuple(problems),
        withdrawn=tuple(withdrawn),
    )


DATAPLANE_PROBLEMS = ("vip_missing", "ipvs_missing", "dataplane_conflict")


def _items(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    return [x for x in data.get(key) or () if isinstance(x, Mapping)]


def mismatch(view: NodeView, target: Target) -> list[str]:
    """How the node's versions differ from the target's ([]: it runs the new version)."""
    out = []
    if target.version is not None and view.version != target.version:
        out.append(f"version {view.version} (want {target.version})")
    if target.image_version is not None and view.image_version != target.image_version:
        out.append(f"image {view.image_version or '(none)'} (want {target.image_version})")
    return out


class NodeOps(Protocol):
    """The operator's commands for one node; each raises :class:`StepFailed`."""

    def drain(self, node: str) -> None:
        """``bgp-lb drain --all --wait`` on the node."""

    def stop(self, node: str) -> None: ...

    def install(self, node: str) -> None:
        """Put the new version in place and start it (a VM: the new disk, booted)."""

    def undrain(self, node: str) -> None: ...

    def status(self, node: str) -> NodeView:
        """The node's status now (StepFailed: unreachable, e.g. still starting)."""


@dataclass(frozen=True)
class Counts:
    sent: int
    failed: int

    def __sub__(self, other: Counts) -> Counts:
        return Counts(self.sent - other.sent, self.failed - other.failed)

    def describe(self) -> str:
        return f"requests {self.sent} sent, {self.failed} failed"


class TrafficCounter(Protocol):
    def read(self) -> Counts:
        """Cumulative requests sent and failed so far (StepFailed: cannot read)."""


@dataclass(frozen=True)
class Timing:
    healthy_timeout: float = 600.0  # install done -> healthy at the new version
    announce_timeout: float = 120.0  # undrain -> every service announced
    poll: float = 2.0  # between two status reads


@dataclass(frozen=True)
class StepResult:
    step: str
    seconds: float
    traffic: Counts | None = None


Outcome = Literal["rolled", "resumed", "skipped", "failed", "not reached"]


@dataclass
class NodeResult:
    node: str
    outcome: Outcome = "not reached"
    seconds: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    traffic: Counts | None = None
    error: str | None = None


@dataclass
class RollResult:
    nodes: list[NodeResult]
    seconds: float = 0.0
    error: str | None = None  # the pre-flight refused, or the failed node's error
    traffic: Counts | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(
            n.outcome in ("rolled", "resumed", "skipped") for n in self.nodes
        )


class Roll:
    """One rolling replacement. ``now``/``sleep`` are injected (tests: a fake time)."""

    def __init__(
        self,
        nodes: Sequence[str],
        target: Target,
        ops: NodeOps,
        now: Callable[[], float],
        sleep: Callable[[float], None],
        say: Say,
        timing: Timing = Timing(),
        counter: TrafficCounter | None = None,
    ) -> None:
        self.nodes = list(nodes)
        self.target = target
        self.ops = ops
        self.now = now
        self.sleep = sleep
        self.say = say
        self.timing = timing
        self.counter = counter
        self._counts: Counts | None = None

    # ------------------------------------------------------------------ the walk
    def run(self) -> RollResult:
        t0 = self.now()
        result = RollResult([NodeResult(n) for n in self.nodes])
        count = f"{len(self.nodes)} node{'s' if len(self.nodes) != 1 else ''}"
        self.say(f"roll: {count} to {self.target.describe()}: {', '.join(self.nodes)}")
        views = self._preflight(result)
        if result.error is not None:
            result.seconds = self.now() - t0
            return result
        start = self._read_counter()
        for i, node in enumerate(self.nodes, start=1):
            res = result.nodes[i - 1]
            tag = f"[{i}/{len(self.nodes)}] {node}"
            view = views[node]
            if not mismatch(view, self.target) and view.announced:
                res.outcome = "skipped"
                self.say(f"{tag}: already at {self.target.describe()} and announced: skipped")
                continue
            n0 = self.now()
            c0 = self._counts
            try:
                if mismatch(view, self.target):
                    self._replace(tag, node, res)
                    res.outcome = "rolled"
                else:  # an interrupted roll: new version, healthy, still drained
                    self.say(f"{tag}: already at {self.target.describe()}, drained: undrain only")
                    res.outcome = "resumed"
                self._step(tag, "undrain", res, functools.partial(self._undrain, node))
            except StepFailed as e:
                res.outcome = "failed"
                res.error = str(e)
                result.error = f"{node}: {e}"
            res.seconds = self.now() - n0
            if c0 is not None and self._counts is not None:
                res.traffic = self._counts - c0
            traffic = f"; {res.traffic.describe()}" if res.traffic else ""
            if res.outcome == "failed":
                self.say(
                    f"{tag}: FAILED after {res.seconds:.1f} s: {res.error}{traffic}. The roll "
                    f"stops here: {node} stays as it is (drained unless its drain failed); "
                    "the nodes after it were not touched"
                )
                break
            self.say(f"{tag}: {res.outcome} in {res.seconds:.1f} s{traffic}")
        if start is not None and self._counts is not None:
            result.traffic = self._counts - start
        result.seconds = self.now() - t0
        done = sum(1 for n in result.nodes if n.outcome in ("rolled", "resumed", "skipped"))
        traffic = f"; {result.traffic.describe()}" if result.traffic else ""
        verdict = "done" if result.ok else "STOPPED"
        self.say(
            f"roll {verdict}: {done}/{len(self.nodes)} nodes at {self.target.describe()} "
            f"in {result.seconds:.1f} s{traffic}"
        )
        return result

    def _preflight(self, result: RollResult) -> dict[str, NodeView]:
        views: dict[str, NodeView] = {}
        refused = []
        for node in self.nodes:
            try:
                view = self.ops.status(node)
            except StepFailed as e:
                refused.append(f"{node}: status: {e}")
                continue
            views[node] = view
            self.say(f"  {node}: {view.describe()}")
            if mismatch(view, self.target):
                if not view.announced:
                    refused.append(
                        f"{node}: not announcing ({view.describe()}): the roll takes one node "
                        "out at a time and needs the others serving: fix it, or leave it out "
                        "(--nodes)"
                    )
            elif not view.healthy:
                refused.append(f"{node}: at {self.target.describe()} but not healthy")
        if refused:
            result.error = "pre-flight: " + "; ".join(refused)
            self.say(f"roll refused: nothing was changed. {result.error}")
        return views

    def _replace(self, tag: str, node: str, res: NodeResult) -> None:
        self._step(tag, "drain --all --wait", res, lambda: self.ops.drain(node))
        self._step(tag, "stop", res, lambda: self.ops.stop(node))
        self._step(tag, "install", res, lambda: self.ops.install(node))
        self._step(tag, "healthy", res, lambda: self._healthy(tag, node))

    def _step(self, tag: str, name: str, res: NodeResult, fn: Callable[[], str | None]) -> None:
        self.say(f"{tag}: {name} ...")
        t0 = self.now()
        c0 = self._counts
        try:
            detail = fn()
        finally:
            seconds = self.now() - t0
            self._read_counter()
            traffic = self._counts - c0 if c0 is not None and self._counts is not None else None
            res.steps.append(StepResult(name, seconds, traffic))
        extra = f" ({detail})" if detail else ""
        counts = f"; {traffic.describe()}" if traffic else ""
        self.say(f"{tag}: {name} done in {seconds:.1f} s{extra}{counts}")

    def _healthy(self, tag: str, node: str) -> str:
        """Poll the status until the node is healthy at the new version."""

        def judge(view: NodeView) -> tuple[str | None, str]:
            wrong = mismatch(view, self.target)
            if not wrong and view.healthy:
                if not view.drained:
                    self.say(
                        f"{tag}: note: it came up undrained (a replaced disk should start "
                        "drained: node.start_drained, docs/operations.md)"
                    )
                return view.describe(), ""
            return None, "; ".join(wrong) if wrong else view.describe()

        timeout = self.timing.healthy_timeout
        return self._poll(
            node, judge, timeout, f"not healthy at {self.target.describe()} within {timeout:g} s"
        )

    def _undrain(self, node: str) -> str:
        self.ops.undrain(node)
        timeout = self.timing.announce_timeout
        return self._poll(
            node,
            lambda view: ("announced", "") if view.announced else (None, view.describe()),
            timeout,
            f"undrained but not announced within {timeout:g} s",
        )

    def _poll(
        self,
        node: str,
        judge: Callable[[NodeView], tuple[str | None, str]],
        timeout: float,
        failure: str,
    ) -> str:
        """Read the node's status every poll interval until ``judge`` returns a result (its
        first item); after ``timeout`` fail with ``failure`` and the last reason it gave."""
        t0 = self.now()
        last = "no status yet"
        while True:
            try:
                view = self.ops.status(node)
            except StepFailed as e:
                last = f"status: {e}"
            else:
                done, last = judge(view)
                if done is not None:
                    return done
            if self.now() - t0 >= timeout:
                raise StepFailed(f"{failure}: {last}")
            self.sleep(self.timing.poll)

    def _read_counter(self) -> Counts | None:
        if self.counter is None:
            return None
        try:
            self._counts = self.counter.read()
        except StepFailed as e:  # the roll goes on; the counts are then missing
            self.say(f"  traffic counter: {e}")
        return self._counts


def summary_rows(result: RollResult) -> list[Mapping[str, object]]:
    """One row per node (for --json)."""
    return [
        {
            "node": n.node,
            "outcome": n.outcome,
            "seconds": round(n.seconds, 1),
            "error": n.error,
            "steps": [
                {
                    "step": s.step,
                    "seconds": round(s.seconds, 1),
                    **({"sent": s.traffic.sent, "failed": s.traffic.failed} if s.traffic else {}),
                }
                for s in n.steps
            ],
            **({"sent": n.traffic.sent, "failed": n.traffic.failed} if n.traffic else {}),
        }
        for n in result.nodes
    ]
