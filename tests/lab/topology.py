"""A containerlab topology file, read strictly and resolved for the lab runner.

``load_topology(path)`` parses the YAML (duplicate keys are errors), validates it against
:mod:`tests.lab.schema` and checks what the runner needs to reproduce it faithfully: every
node has a role (label ``bgplb-lab.role``: router | lb | client | server | switch), links
name existing nodes and unique interfaces (never ``eth0``, containerlab's management
interface), ``exec`` lines are in the supported subset (:mod:`tests.lab.netcmd`) and only
name the node's own interfaces (or a bridge it made), bind sources exist, sysctls are
per-namespace (``net.*``), and each role has the binds/env it needs. Every problem is
reported as ``file: key.path: why``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import ValidationError

from .netcmd import BridgeAdd, ExecLineError, NetCommand, parse_exec_line
from .schema import LabDef, NodeDef, Role, allowed_keys

NODE_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
IFNAME_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
FRR_CONF = PurePosixPath("/etc/frr/frr.conf")
FRR_DAEMONS = PurePosixPath("/etc/frr/daemons")
AGENT_CONF = PurePosixPath("/etc/bgp-lb/config.yaml")
# the lb entry point (containerlab/node/start.sh) installs this bind as TOKEN, mode 0600
SHARED_TOKEN = PurePosixPath("/etc/bgp-lb/api-token.shared")
TOKEN = PurePosixPath("/etc/bgp-lb/api-token")
LB_ENV = ("BGPLB_BACKEND_ADDRS", "BGPLB_BACKEND_PORT")
# a real server (role server) runs only the backend; it may also run a byte echo on a port
SERVER_ENV = (*LB_ENV, "BGPLB_ECHO_PORT")
FRR_SUPPORTED_DAEMONS = frozenset({"bgpd", "bfdd"})  # zebra always runs; bgpd too
CLIENT_CMD = "sleep infinity"
FLEET_FILE = "fleet.yaml"


@dataclass(frozen=True)
class Issue:
    path: str
    message: str


class TopologyError(Exception):
    def __init__(self, file: Path, issues: list[Issue]) -> None:
        self.file = file
        self.issues = issues
        super().__init__("\n".join(f"{file}: {i.path}: {i.message}" for i in issues))


@dataclass(frozen=True)
class Bind:
    source: Path  # absolute, on the machine running the lab
    target: PurePosixPath  # inside the node
    read_only: bool


@dataclass(frozen=True)
class Endpoint:
    node: str
    iface: str


@dataclass(frozen=True)
class Link:
    a: Endpoint
    b: Endpoint


@dataclass(frozen=True)
class Node:
    name: str
    role: Role
    image: str
    binds: tuple[Bind, ...]
    env: Mapping[str, str]
    sysctls: tuple[tuple[str, str], ...]
    commands: tuple[NetCommand, ...]
    interfaces: tuple[str, ...]

    def bind_source(self, target: PurePosixPath) -> Path | None:
        return next((b.source for b in self.binds if b.target == target), None)

    @property
    def backend_addresses(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        return tuple(ipaddress.ip_address(a) for a in self.env["BGPLB_BACKEND_ADDRS"].split())

    @property
    def backend_port(self) -> int:
        return int(self.env["BGPLB_BACKEND_PORT"])

    @property
    def echo_port(self) -> int | None:
        port = self.env.get("BGPLB_ECHO_PORT")
        return int(port) if port else None


@dataclass(frozen=True)
class Topology:
    name: str
    path: Path
    nodes: tuple[Node, ...]
    links: tuple[Link, ...] = field(default=())
    # <topology dir>/<lab name>/fleet.yaml when there is one: the lab runner renders the lb
    # nodes' agent configs from it (`bgp-lb fleet render`) instead of reading the bound copies
    fleet: Path | None = None

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def by_role(self, role: Role) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == role)


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        keys.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_topology(path: str | Path) -> Topology:
    file = Path(path).resolve()
    try:
        data = yaml.load(file.read_text(), Loader=_UniqueKeyLoader)
    except (OSError, yaml.YAMLError) as e:
        raise TopologyError(file, [Issue("(file)", str(e))]) from None
    return parse_topology(data, file)


def parse_topology(data: object, file: Path) -> Topology:
    try:
        lab = LabDef.model_validate(data)
    except ValidationError as e:
        raise TopologyError(file, [_issue(err) for err in e.errors()]) from None
    issues: list[Issue] = []
    links = _links(lab, issues)
    ifaces: dict[str, list[str]] = {n: [] for n in lab.topology.nodes}
    for link in links:
        for ep in (link.a, link.b):
            ifaces.setdefault(ep.node, []).append(ep.iface)
    nodes = tuple(
        _node(lab, name, nd, tuple(ifaces[name]), file.parent, issues)
        for name, nd in lab.topology.nodes.items()
    )
    if issues:
        raise TopologyError(file, issues)
    fleet = file.parent / lab.name / FLEET_FILE
    return Topology(
        name=lab.name,
        path=file,
        nodes=nodes,
        links=links,
        fleet=fleet if fleet.is_file() else None,
    )


def _issue(err: Any) -> Issue:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        keys = allowed_keys(loc[:-1])
        hint = f" (supported here: {', '.join(keys)})" if keys else ""
        return Issue(_loc(loc), f"key not supported by the lab runner{hint}")
    return Issue(_loc(loc), str(err["msg"]))


def _links(lab: LabDef, issues: list[Issue]) -> tuple[Link, ...]:
    out: list[Link] = []
    seen: dict[Endpoint, str] = {}
    for i, ld in enumerate(lab.topology.links):
        eps: list[Endpoint] = []
        for j, text in enumerate(ld.endpoints):
            p = f"topology.links[{i}].endpoints[{j}]"
            node, sep, iface = text.partition(":")
            if not sep:
                issues.append(Issue(p, f"{text!r}: expected NODE:INTERFACE"))
                continue
            if node not in lab.topology.nodes:
                issues.append(Issue(p, f"{text!r}: no node named {node!r}"))
            if not IFNAME_RE.match(iface):
                issues.append(Issue(p, f"{text!r}: interface names are lower-case letters/digits"))
            if iface == "eth0":
                issues.append(Issue(p, f"{text!r}: eth0 is containerlab's management interface"))
            ep = Endpoint(node, iface)
            if ep in seen:
                issues.append(Issue(p, f"{text!r} is already used by {seen[ep]}"))
            seen[ep] = p
            eps.append(ep)
        if len(eps) == 2:
            if eps[0].node == eps[1].node:
                issues.append(Issue(f"topology.links[{i}]", "both ends on the same node"))
            out.append(Link(eps[0], eps[1]))
    return tuple(out)


def _binds(texts: tuple[str, ...], base: Path, p: str, issues: list[Issue]) -> list[Bind]:
    out: list[Bind] = []
    for k, text in enumerate(texts):
        parts = text.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            issues.append(Issue(f"{p}[{k}]", f"{text!r}: expected SOURCE:TARGET[:ro|rw]"))
            continue
        source = (base / parts[0]).resolve()
        target = PurePosixPath(parts[1])
        if not target.is_absolute():
            issues.append(Issue(f"{p}[{k}]", f"{text!r}: the target must be an absolute path"))
        if not source.is_file():
            issues.append(Issue(f"{p}[{k}]", f"{text!r}: no file {source}"))
        out.append(Bind(source, target, len(parts) == 3 and parts[2] == "ro"))
    return out


def _node(
    lab: LabDef, name: str, nd: NodeDef, ifaces: tuple[str, ...], base: Path, issues: list[Issue]
) -> Node:
    p = f"topology.nodes.{name}"
    if not NODE_NAME_RE.match(name):
        issues.append(
            Issue(p, "node names are 1-8 lower-case letters/digits (used in netns names)")
        )
    kind = lab.topology.kinds.get(nd.kind)
    image = nd.image or (kind.image if kind else None)
    if not image:
        issues.append(Issue(f"{p}.image", "no image (neither on the node nor in its kind)"))
    kbinds = _binds(kind.binds, base, f"topology.kinds.{nd.kind}.binds", issues) if kind else []
    nbinds = _binds(nd.binds, base, f"{p}.binds", issues)
    node_targets = {b.target for b in nbinds}
    binds = tuple([b for b in kbinds if b.target not in node_targets] + nbinds)
    env = {**(kind.env if kind else {}), **nd.env}
    sysctls = {**(kind.sysctls if kind else {}), **nd.sysctls}
    for key in sysctls:
        if not key.startswith("net."):
            issues.append(
                Issue(f"{p}.sysctls.{key}", "only per-namespace net.* sysctls are supported")
            )
    commands: list[NetCommand] = []
    bridges: set[str] = set()  # made by an earlier exec line of this node
    for k, line in enumerate(nd.exec_):
        try:
            cmd = parse_exec_line(line)
        except ExecLineError as e:
            issues.append(Issue(f"{p}.exec[{k}]", str(e)))
            continue
        if isinstance(cmd, BridgeAdd):
            if cmd.name in ifaces or cmd.name in bridges or not IFNAME_RE.match(cmd.name):
                issues.append(Issue(f"{p}.exec[{k}]", f"bridge name {cmd.name!r} is taken/invalid"))
            bridges.add(cmd.name)
        for iface in cmd.interfaces:
            if iface != "lo" and iface not in ifaces and iface not in bridges:
                issues.append(
                    Issue(
                        f"{p}.exec[{k}]",
                        f"{name} has no interface {iface!r} (links: {', '.join(ifaces) or 'none'})",
                    )
                )
        commands.append(cmd)
    node = Node(
        name=name,
        role=nd.labels.role,
        image=image or "",
        binds=binds,
        env=env,
        sysctls=tuple((k, str(v)) for k, v in sysctls.items()),
        commands=tuple(commands),
        interfaces=ifaces,
    )
    _role_checks(node, nd, p, issues)
    return node


def _role_checks(node: Node, nd: NodeDef, p: str, issues: list[Issue]) -> None:
    if node.role == "router":
        conf = node.bind_source(FRR_CONF)
        if conf is None:
            issues.append(Issue(f"{p}.binds", f"a router needs a bind to {FRR_CONF}"))
        daemons = node.bind_source(FRR_DAEMONS)
        if daemons is not None and daemons.is_file():
            for d in sorted(frr_daemons(daemons) - FRR_SUPPORTED_DAEMONS):
                issues.append(
                    Issue(
                        f"{p}.binds",
                        f"{daemons.name}: {d}=yes is not supported "
                        "(the runner starts zebra, bfdd, bgpd)",
                    )
                )
        if nd.cmd is not None:
            issues.append(Issue(f"{p}.cmd", "a router runs its image's own command"))
    elif node.role == "lb":
        if node.bind_source(AGENT_CONF) is None:
            issues.append(Issue(f"{p}.binds", f"an lb node needs a bind to {AGENT_CONF}"))
        for key in sorted(set(node.env) - set(LB_ENV)):
            issues.append(
                Issue(f"{p}.env.{key}", f"not supported (an lb node takes {', '.join(LB_ENV)})")
            )
        for key in LB_ENV:
            if key not in node.env:
                issues.append(Issue(f"{p}.env", f"an lb node needs {key}"))
        try:
            if "BGPLB_BACKEND_ADDRS" in node.env and not node.backend_addresses:
                raise ValueError("empty")
            if "BGPLB_BACKEND_PORT" in node.env and not 0 < node.backend_port < 65536:
                raise ValueError("port out of range")
        except ValueError as e:
            issues.append(Issue(f"{p}.env", f"bad backend address/port: {e}"))
        if nd.cmd is not None:
            issues.append(
                Issue(f"{p}.cmd", "an lb node runs the image's command (agent + backend)")
            )
    elif node.role == "server":
        _server_checks(node, nd, p, issues)
    else:  # client, switch: no process of their own
        if nd.cmd not in (None, CLIENT_CMD):
            issues.append(
                Issue(f"{p}.cmd", f"a client runs nothing: only {CLIENT_CMD!r} is supported")
            )
        if node.binds or node.env:
            issues.append(Issue(p, "a client takes no binds and no env"))


def _server_checks(node: Node, nd: NodeDef, p: str, issues: list[Issue]) -> None:
    """A real server runs the backend only (start.sh without an agent config)."""
    if node.bind_source(AGENT_CONF) is not None:
        issues.append(Issue(f"{p}.binds", "a server runs no agent (no bind to the agent config)"))
    for key in sorted(set(node.env) - set(SERVER_ENV)):
        issues.append(
            Issue(f"{p}.env.{key}", f"not supported (a server takes {', '.join(SERVER_ENV)})")
        )
    for key in LB_ENV:
        if key not in node.env:
            issues.append(Issue(f"{p}.env", f"a server needs {key}"))
    try:
        ports = [node.backend_port] if "BGPLB_BACKEND_PORT" in node.env else []
        ports += [node.echo_port] if node.echo_port is not None else []
        if any(not 0 < port < 65536 for port in ports):
            raise ValueError("port out of range")
        if "BGPLB_BACKEND_ADDRS" in node.env and not node.backend_addresses:
            raise ValueError("empty")
    except ValueError as e:
        issues.append(Issue(f"{p}.env", f"bad backend address/port: {e}"))
    if nd.cmd is not None:
        issues.append(Issue(f"{p}.cmd", "a server runs the image's command (the backend)"))


def with_agent_configs(topology: Topology, directory: Path, name: str) -> Topology:
    """The same lab with every lb node's agent config taken from ``directory/<node>/``
    (e.g. the pool lab's control variant), under another lab name (its own namespaces)."""
    nodes = []
    for node in topology.nodes:
        if node.role == "lb":
            source = (directory / node.name / "config.yaml").resolve()
            if not source.is_file():
                raise TopologyError(topology.path, [Issue(node.name, f"no file {source}")])
            binds = tuple(
                replace(b, source=source) if b.target == AGENT_CONF else b for b in node.binds
            )
            node = replace(node, binds=binds)
        nodes.append(node)
    return replace(topology, name=name, nodes=tuple(nodes), fleet=None)


def frr_daemons(path: Path) -> set[str]:
    """The daemons marked ``NAME=yes`` in an FRR ``daemons`` file (zebra excluded)."""
    out = set()
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*([a-z0-9]+d)\s*=\s*yes\s*$", line)
        if m and m.group(1) != "zebra":
            out.add(m.group(1))
    return out


def zebra_long_options(path: Path) -> tuple[str, ...]:
    """The ``--long`` options of ``zebra_options`` in an FRR ``daemons`` file (the runner
    gives zebra its own socket and vty options; ``-A``/``-s`` are not passed on)."""
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*zebra_options\s*=\s*\"([^\"]*)\"\s*$", line)
        if m:
            return tuple(w for w in m.group(1).split() if w.startswith("--"))
    return ()
