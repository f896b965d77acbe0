"""Reproduce a containerlab topology with network namespaces, veths and real processes.

Per node one namespace ``bgplab-<lab>-<node>``; per link one veth pair named as in the file;
the node's ``sysctls`` and ``exec`` lines (see :mod:`tests.lab.netcmd`) are applied in it.
Then, by role: routers run FRR's zebra + bgpd (+ bfdd when their daemons file says
``bfdd=yes``) directly ("method B", see
:mod:`tests.harness.frr`); lb nodes run the local backend (containerlab/node/backend.py) and
``bgp-lb run`` with the bound agent config; servers (real servers) run the backend only;
clients and switches (a bridge per L2 segment, from their exec lines) run nothing.

Everything created is recorded in ``/run/bgplb-lab/<lab>/state.json`` as it is created, so
:func:`teardown` removes it after a crash too: it kills the recorded processes (by pid, after
checking their start time), every process left in a ``bgplab-`` namespace, and the namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.harness.frr import Router, fib
from tests.harness.netns import alive, kill_pids, ns_pids, run

from .fib import close_all as close_fib_sockets
from .netcmd import AddrAdd, LinkUp
from .topology import (
    AGENT_CONF,
    FRR_CONF,
    FRR_DAEMONS,
    SHARED_TOKEN,
    TOKEN,
    Node,
    Topology,
    frr_daemons,
    zebra_long_options,
)

RUN_ROOT = Path("/run/bgplb-lab")
NS_PREFIX = "bgplab-"
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
BACKEND = REPO / "containerlab" / "node" / "backend.py"

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class ProcessRecord:
    node: str
    name: str  # zebra, bgpd, backend, agent
    pid: int
    start_time: int  # /proc/<pid>/stat field 22: guards against a recycled pid


@dataclass
class LabState:
    lab: str
    topology: str
    netns: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.replace(path)

    @staticmethod
    def load(path: Path) -> LabState:
        data = json.loads(path.read_text())
        procs = [ProcessRecord(**p) for p in data.pop("processes", [])]
        return LabState(**data, processes=procs)


def start_time(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return -1


class LabRouter(Router):
    """A harness router that runs the topology's own frr.conf (logging sent to a file)."""

    conf_text: str = ""
    bfdd: bool = False  # the daemons file says bfdd=yes (its frr.conf has the bfd profile)

    def daemons(self) -> tuple[str, ...]:
        return ("zebra", "bfdd", "bgpd") if self.bfdd else ("zebra", "bgpd")

    def config(self) -> str:
        text = self.conf_text.replace("log stdout", f"log file {self.directory}/frr.log")
        return text


class Lab:
    """One running lab. ``up()`` builds it; ``down()`` (or :func:`teardown`) removes it."""

    def __init__(
        self,
        topology: Topology,
        agents: bool = True,
        root: Path = RUN_ROOT,
        keep_logs: Path | None = None,
        deferred: tuple[str, ...] = (),
    ) -> None:
        self.topology = topology
        # lb nodes whose agent up() starts with every service drained (admin.json written
        # first): never announced until undrained, i.e. a node that joins later
        self.deferred = deferred
        self.keep_logs = keep_logs  # down() copies the nodes' logs here first
        self.agents = agents
        self.dir = root / topology.name
        self.state = LabState(lab=topology.name, topology=str(topology.path))
        self.routers: dict[str, LabRouter] = {}
        self.procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}

    # ---------------------------------------------------------------- names and paths
    def ns(self, node: str) -> str:
        return f"{NS_PREFIX}{self.topology.name}-{node}"

    def node_dir(self, node: str) -> Path:
        return self.dir / node

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    def agent_config(self, node: str) -> Path:
        return self.node_dir(node) / "config.yaml"

    def address_owner(self) -> dict[str, str]:
        """Every lb node's link address -> node name (to name FIB next hops)."""
        out = {}
        for n in self.topology.by_role("lb"):
            for c in n.commands:
                if isinstance(c, AddrAdd):
                    out[str(c.address.ip)] = n.name
        return out

    @property
    def fleet_dir(self) -> Path:
        """Where up() renders the topology's fleet file (`bgp-lb fleet render` output)."""
        return self.dir / "fleet"

    def config_source(self, node: Node) -> Path:
        """The lb node's agent config before the runner maps its paths: rendered from the
        topology's fleet file at lab-up, else the topology's bound file."""
        if self.topology.fleet is not None:
            return self.fleet_dir / "nodes" / node.name / "config.yaml"
        source = node.bind_source(AGENT_CONF)
        assert source is not None
        return source

    def vips(self) -> list[str]:
        vips: list[str] = []
        for n in self.topology.by_role("lb"):
            source = self.config_source(n)
            for svc in yaml.safe_load(source.read_text()).get("services", []):
                vips += [str(v) for v in svc["vips"] if str(v) not in vips]
        return vips

    # ---------------------------------------------------------------- bring-up
    def up(self, say: Say = _quiet, timeout: float = 480.0) -> float:
        """Build the lab; with agents, wait for full ECMP. Returns the seconds it took."""
        t0 = time.monotonic()
        existing = [ns for ns in list_namespaces() if ns.startswith(self.ns(""))]
        if existing or self.state_file.exists():
            raise RuntimeError(f"lab {self.topology.name!r} is already up (run `make lab-down`)")
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir.parent, 0o755)
        os.chmod(self.dir, 0o755)
        self.state.save(self.state_file)
        try:
            self._namespaces(say)
            self._links(say)
            for node in self.topology.nodes:
                self._configure(node, say)
            say(
                f"network ready: {len(self.topology.nodes)} namespaces, "
                f"{len(self.topology.links)} veth pairs"
            )
            for node in self.topology.by_role("router"):
                self._router(node, say)
            for node in self.topology.by_role("server"):
                self.start_backend(node.name)
                say(f"{node.name}: real server backend :{node.backend_port}")
            self.render_fleet(say)
            for node in self.topology.by_role("lb"):
                self._lb(node, say)
            if self.agents:
                count = len(self.topology.by_role("lb")) - len(self.deferred)
                self.wait_ecmp(count, timeout=timeout, say=say)
        except BaseException:
            self.down()
            raise
        return time.monotonic() - t0

    def _namespaces(self, say: Say) -> None:
        for node in self.topology.nodes:
            ns = self.ns(node.name)
            self.state.netns.append(ns)
            self.state.save(self.state_file)
            run("ip", "netns", "add", ns, timeout=60)
            self.node_dir(node.name).mkdir(exist_ok=True)

    def _links(self, say: Say) -> None:
        lines = []
        for link in self.topology.links:
            a, b = link.a, link.b
            lines.append(
                f"link add {a.iface} netns {self.ns(a.node)} type veth "
                f"peer name {b.iface} netns {self.ns(b.node)}"
            )
        if lines:
            _batch(None, lines)

    def _configure(self, node: Node, say: Say) -> None:
        ns = self.ns(node.name)
        sysctls = node.sysctls
        if not self.agents:  # no agents: IPVS may be missing (its sysctls with it)
            skipped = [k for k, _ in sysctls if k.startswith("net.ipv4.vs.")]
            sysctls = tuple((k, v) for k, v in sysctls if k not in skipped)
            if skipped:
                say(f"{node.name}: no agents, IPVS sysctls skipped: {', '.join(skipped)}")
        if sysctls:
            run(
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                *(f"{k}={v}" for k, v in sysctls),
                timeout=60,
            )
        lines = ["link set dev lo up"]
        lines += [LinkUp(i).batch_line() for i in node.interfaces]
        lines += [c.batch_line() for c in node.commands]
        _batch(ns, lines)

    def _router(self, node: Node, say: Say) -> None:
        conf = node.bind_source(FRR_CONF)
        assert conf is not None
        r = LabRouter(self.ns(node.name), 0, "", [], self.node_dir(node.name) / "frr")
        r.command_timeout = 60.0  # TCG: a daemon start can take 10+ s
        r.conf_text = conf.read_text()
        daemons = node.bind_source(FRR_DAEMONS)
        if daemons is not None and daemons.is_file():
            r.zebra_args = zebra_long_options(daemons)
            r.bfdd = "bfdd" in frr_daemons(daemons)
        r.start()
        self.routers[node.name] = r
        for daemon, pid in r.pids.items():
            self._record(node.name, daemon, pid)
        deadline = time.monotonic() + 30
        while True:
            try:
                r.vtysh("show bgp summary")
                break
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        names = "+".join(r.pids)
        say(f"{node.name}: FRR {names} up (pids {', '.join(map(str, r.pids.values()))})")

    def _lb(self, node: Node, say: Say) -> None:
        self.start_backend(node.name)
        self.write_agent_config(node)
        if node.name in self.deferred:
            self.write_drained(node)
        if self.agents:
            self.start_agent(node.name)
        drained = " (every service drained)" if node.name in self.deferred else ""
        say(
            f"{node.name}: backend :{node.backend_port}"
            + (f" + bgp-lb agent{drained}" if self.agents else "")
        )

    def render_fleet(self, say: Say = _quiet) -> None:
        """`bgp-lb fleet render FLEET <lab dir>/fleet` (the CLI's own code, in-process: a
        Python start-up costs seconds under TCG) when the topology has a fleet file; every lb
        node must be one of its nodes."""
        fleet = self.topology.fleet
        if fleet is None:
            return
        from bgplb.fleet.cli import run_fleet

        out, err = io.StringIO(), io.StringIO()
        args = argparse.Namespace(
            fleet_command="render",
            fleet=str(fleet),
            out=str(self.fleet_dir),
            force=False,
            network_config="v2",
        )
        if run_fleet(args, out, err) != 0:
            raise RuntimeError(f"bgp-lb fleet render {fleet} failed:\n{err.getvalue()}")
        missing = [
            n.name for n in self.topology.by_role("lb") if not self.config_source(n).is_file()
        ]
        if missing:
            raise RuntimeError(f"{fleet}: no node {', '.join(missing)} (lb nodes of the lab)")
        say(f"agent configs rendered from {fleet} into {self.fleet_dir} (bgp-lb fleet render)")

    def write_drained(self, node: Node) -> None:
        """The agent's persisted drain state (admin.json, format 1) with every service."""
        source = self.config_source(node)
        names = [s["name"] for s in yaml.safe_load(source.read_text()).get("services", [])]
        state = self.node_dir(node.name) / "state"
        state.mkdir(parents=True, exist_ok=True)
        doc = {"version": 1, "node_drained": False, "drained": names, "written_at": time.time()}
        (state / "admin.json").write_text(json.dumps(doc) + "\n")

    def start_agent(self, node_name: str, os_release: Path | None = None) -> int:
        """``bgp-lb run`` in the node; with ``os_release``, that file is the agent's
        /etc/os-release (bind-mounted in the private mount namespace `ip netns exec` gives
        it): the image version it reports (buildinfo.py), as on a node booted from a disk."""
        argv = [str(VENV_BIN / "bgp-lb"), "run", str(self.agent_config(node_name))]
        if os_release is not None:
            script = 'mount --bind "$0" /etc/os-release && exec "$@"'
            argv = ["sh", "-c", script, str(os_release), *argv]
        return self._spawn(node_name, "agent", argv).pid

    def stop_agent(self, node_name: str, timeout: float = 30.0) -> None:
        """SIGTERM the node's agent (the one this object started, or the last one recorded
        in state.json by another process), wait until it is gone (SIGKILL at the timeout)."""
        if (node_name, "agent") in self.procs:
            self.stop_process(node_name, "agent")
            return
        records = [p for p in self.state.processes if (p.node, p.name) == (node_name, "agent")]
        for p in records:
            if alive(p.pid) and start_time(p.pid) == p.start_time:
                kill_pids([p.pid], grace=timeout)

    def replace_disk(self, node_name: str, image_version: str) -> int:
        """What replacing the node's disk with a new image does, in the lab: an empty
        state_dir, the new image's /etc/os-release (IMAGE_VERSION), the seed's config with
        node.start_drained (docs/operations.md), the agent started from them. The agent must
        be stopped first. Returns the new agent's pid."""
        node = self.topology.node(node_name)
        shutil.rmtree(self.node_dir(node_name) / "state", ignore_errors=True)
        release = self.node_dir(node_name) / "os-release"
        lines = [
            line
            for line in Path("/etc/os-release").read_text().splitlines()
            if not line.startswith("IMAGE_VERSION=")
        ]
        release.write_text("\n".join([*lines, f"IMAGE_VERSION={image_version}"]) + "\n")
        self.write_agent_config(node, start_drained=True)
        return self.start_agent(node_name, os_release=release)

    @staticmethod
    def attach(name: str, root: Path = RUN_ROOT) -> Lab:
        """The lab ``name`` that another process brought up (its state.json)."""
        from .topology import load_topology

        state = LabState.load(root / name / "state.json")
        lab = Lab(load_topology(state.topology), root=root)
        lab.state = state
        return lab

    def write_agent_config(self, node: Node, start_drained: bool = False) -> Path:
        """The node's agent config (config_source), with bind targets mapped to their
        sources and per-node state/runtime dirs (the namespaces share one filesystem)."""
        source = self.config_source(node)
        targets = {str(b.target): str(b.source) for b in node.binds}
        d = self.node_dir(node.name)
        shared = node.bind_source(SHARED_TOKEN)
        if shared is not None:  # what start.sh does in the container
            token = d / "api-token"
            token.touch(mode=0o600)
            token.write_bytes(shared.read_bytes())
            targets[str(TOKEN)] = str(token)
        data = _map_strings(yaml.safe_load(source.read_text()), targets)
        data["node"]["state_dir"] = str(d / "state")
        data["node"]["runtime_dir"] = str(d / "run")
        if start_drained:
            data["node"]["start_drained"] = True
        out = self.agent_config(node.name)
        out.write_text(yaml.safe_dump(data, sort_keys=False))
        return out

    def start_backend(self, node_name: str) -> int:
        node = self.topology.node(node_name)
        argv = [sys.executable, str(BACKEND), "--name", node.name, "--port", str(node.backend_port)]
        if node.echo_port is not None:
            argv += ["--echo-port", str(node.echo_port)]
        argv += [str(a) for a in node.backend_addresses]
        return self._spawn(node.name, "backend", argv).pid

    def stop_process(self, node_name: str, name: str, kill: bool = False) -> None:
        """Stop a node's process (SIGTERM, or SIGKILL: an instant crash) and reap it."""
        proc = self.procs.pop((node_name, name))
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def _spawn(self, node: str, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = (self.node_dir(node) / f"{name}.log").open("ab")
        env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        # under TCG a starting ExaBGP needs far longer than the agent's default to connect back
        env.setdefault("BGPLB_EXABGP_CONNECT_TIMEOUT", "300")
        # and a starved bfdd may not answer its vty within the default 2 s (peers[].bfd)
        env.setdefault("BGPLB_BFD_VTYSH_TIMEOUT", "30")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(node), *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            start_new_session=True,
        )
        log.close()
        self.procs[(node, name)] = proc
        self._record(node, name, proc.pid)
        return proc

    def _record(self, node: str, name: str, pid: int) -> None:
        # another process may have recorded one since (replace_disk by `python -m tests.lab`)
        if self.state_file.exists():
            with contextlib.suppress(OSError, ValueError, TypeError):
                self.state.processes = LabState.load(self.state_file).processes
        self.state.processes.append(ProcessRecord(node, name, pid, start_time(pid)))
        self.state.save(self.state_file)

    # ---------------------------------------------------------------- observation
    def fib_nodes(self, router: str, prefix: str) -> list[str]:
        """The lb nodes that are next hops for ``prefix`` in ``router``'s kernel FIB."""
        owners = self.address_owner()
        return sorted(owners.get(h, h) for h in fib(self.ns(router), prefix))

    def wait_ecmp(self, count: int, timeout: float, say: Say = _quiet) -> float:
        t0 = last_say = time.monotonic()
        want = [(r.name, v) for r in self.topology.by_role("router") for v in self.vips()]
        while True:
            missing = [(r, v, n) for r, v in want if len(n := self.fib_nodes(r, v)) != count]
            if not missing:
                say(f"ECMP ready: every router has {count} next hops for {', '.join(self.vips())}")
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                detail = "; ".join(f"{r} {v}: {n}" for r, v, n in missing)
                logs = "".join(
                    f"\n--- {n.name} agent.log\n{_tail(self.node_dir(n.name) / 'agent.log', 8)}"
                    for n in self.topology.by_role("lb")
                )
                raise TimeoutError(f"no {count}-way ECMP within {timeout:.0f}s: {detail}{logs}")
            if time.monotonic() - last_say > 30:
                last_say = time.monotonic()
                counts = ", ".join(f"{r} {v}: {len(n)}/{count}" for r, v, n in missing)
                say(f"waiting for ECMP ({time.monotonic() - t0:.0f}s): {counts}")
            self._check_processes()
            time.sleep(0.2)

    def _check_processes(self) -> None:
        for (node, name), proc in self.procs.items():
            if proc.poll() is not None:
                tail = _tail(self.node_dir(node) / f"{name}.log")
                raise RuntimeError(f"{node}: {name} exited with {proc.returncode}:\n{tail}")

    def exec_in(self, node: str, *argv: str, timeout: float = 60.0) -> str:
        return run("ip", "netns", "exec", self.ns(node), *argv, timeout=timeout)

    # ---------------------------------------------------------------- teardown
    def down(self) -> list[str]:
        if self.keep_logs is not None:
            self.copy_logs(self.keep_logs / self.topology.name)
        self.routers.clear()
        close_fib_sockets()  # an open netlink socket would keep a deleted namespace alive
        removed = teardown(self.topology.name, self.dir.parent)
        for proc in self.procs.values():  # killed by teardown: reap them
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()
        return removed

    def copy_logs(self, target: Path) -> None:
        """Copy the nodes' logs (agents, backends, FRR) and client records to ``target``."""
        if not self.dir.is_dir():  # already removed (and copied) by an earlier down()
            return
        with contextlib.suppress(OSError):
            shutil.rmtree(target, ignore_errors=True)
            for log in [*self.dir.glob("*/**/*.log"), *self.dir.glob("**/*.jsonl")]:
                out = target / log.relative_to(self.dir)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, out)


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _map_strings(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _map_strings(v, mapping) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, mapping) for v in value]
    if isinstance(value, str) and value in mapping:
        return mapping[value]
    return value


def _batch(ns: str | None, lines: list[str]) -> None:
    argv = ["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"]
    res = subprocess.run(
        argv, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60, check=False
    )
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {res.stderr.strip()}\n" + "\n".join(lines))


def list_namespaces() -> list[str]:
    out = run("ip", "netns", "list", check=False, timeout=60)
    return [line.split()[0] for line in out.splitlines() if line.split()]


def _state_files(root: Path, lab: str | None) -> Iterator[Path]:
    if lab is not None:
        yield root / lab / "state.json"
    elif root.is_dir():
        yield from sorted(root.glob("*/state.json"))


def teardown(lab: str | None = None, root: Path = RUN_ROOT) -> list[str]:
    """Remove a lab (or every lab) and everything it left behind. Returns what it removed."""
    removed: list[str] = []
    pids = []
    for path in _state_files(root, lab):
        with contextlib.suppress(OSError, ValueError, TypeError):
            for p in LabState.load(path).processes:
                if alive(p.pid) and start_time(p.pid) == p.start_time:
                    pids.append(p.pid)
                    removed.append(f"process {p.node}/{p.name} ({p.pid})")
    prefix = f"{NS_PREFIX}{lab}-" if lab else NS_PREFIX
    namespaces = [ns for ns in list_namespaces() if ns.startswith(prefix)]
    for ns in namespaces:
        pids += [p for p in ns_pids(ns) if p not in pids]
    kill_pids(pids, grace=5.0)
    for ns in namespaces:
        run("ip", "netns", "del", ns, check=False, timeout=60)
        removed.append(f"netns {ns}")
    dirs = [root / lab] if lab else (sorted(root.iterdir()) if root.is_dir() else [])
    for d in dirs:
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(f"dir {d}")
    return removed
