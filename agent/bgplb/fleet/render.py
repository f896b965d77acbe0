"""The whole render, pure: a loaded :class:`~.load.Fleet` -> every output file, by path.

``OUT/``::

    nodes/<node>/config.yaml          the agent's config (also inside the seed's user-data)
    nodes/<node>/seed/meta-data       NoCloud seed: instance-id from the content, local-hostname
    nodes/<node>/seed/user-data       #cloud-config: write_files (config, token, MD5 keys), ssh keys
    nodes/<node>/seed/network-config  when the node has a network (v2, or v1 on request)
    routers/<router>.frr.conf         the router's FRR snippet
    prometheus/bgp-lb.json            Prometheus file_sd targets (each node's metrics listener)
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ..config import ConfigError, ConfigIssue
from .frr import router_snippet
from .load import Fleet
from .network import NetworkVersion
from .nodes import RenderedNode, render_node
from .seed import render_seed, seed_paths

FILE_SD = PurePosixPath("prometheus", "bgp-lb.json")


@dataclass
class Rendering:
    files: dict[PurePosixPath, str] = field(default_factory=dict)
    progress: list[str] = field(default_factory=list)  # one line per node / router / file_sd
    notes: list[str] = field(default_factory=list)  # what the operator should know


def render_fleet(fleet: Fleet, network_version: NetworkVersion = 2) -> Rendering:
    spec = fleet.spec
    out = Rendering()
    nodes: list[RenderedNode] = []
    issues: list[ConfigIssue] = []
    for i in range(len(spec.nodes)):
        try:
            nodes.append(render_node(fleet, i))
        except ConfigError as e:
            issues += e.errors
    issues += _duplicates(nodes)
    if issues:
        raise ConfigError(issues)
    for spec_node, node in zip(spec.nodes, nodes, strict=True):
        base = PurePosixPath("nodes", node.name)
        out.files[base / "config.yaml"] = node.text
        keys = (*spec.ssh_authorized_keys, *spec_node.ssh_authorized_keys)
        seed = render_seed(node, keys, spec_node.network, network_version)
        paths = seed_paths(node.name)
        for name, text in seed.files.items():
            out.files[paths[name]] = text
        out.progress.append(
            f"node {node.name}: {_count(len(node.config.peers), 'peer')}, "
            f"{_count(len(node.config.services), 'service')}, instance-id {seed.instance_id}"
        )
    for router in spec.routers:
        path = PurePosixPath("routers", f"{router.name}.frr.conf")
        out.files[path] = router_snippet(
            router, nodes, fleet.source.name, fleet.md5_keys.get(router.name)
        )
        count = sum(1 for n in nodes for s in n.sessions if s.router.name == router.name)
        out.progress.append(f"router {router.name}: {_count(count, 'neighbor')}")
        if count == 0:
            out.notes.append(f"router {router.name}: no node has a session with it")
        if router.bfd is not None and not _agent_has_bfd():
            out.notes.append(
                f"router {router.name}: bfd is in its FRR snippet only: this agent has no "
                "peers[].bfd yet"
            )
    targets = [_target(n) for n in nodes]
    out.files[FILE_SD] = json.dumps([t for t in targets if t], indent=2) + "\n"
    for n, t in zip(nodes, targets, strict=True):
        if t is None:
            out.notes.append(
                f"node {n.name}: its metrics listen on loopback only: not in {FILE_SD} "
                "(set node.api.metrics_listen and metrics_port)"
            )
    out.progress.append(f"prometheus: {sum(1 for t in targets if t)} file_sd targets")
    return out


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _agent_has_bfd() -> bool:
    from ..config import PeerConfig

    return "bfd" in PeerConfig.model_fields


def _duplicates(nodes: list[RenderedNode]) -> list[ConfigIssue]:
    """Two nodes with one router_id, or one router with one neighbor address twice."""
    issues = []
    ids: dict[str, str] = {}
    neighbors: dict[tuple[str, str], str] = {}
    for i, n in enumerate(nodes):
        rid = str(n.config.node.router_id)
        if rid in ids:
            issues.append(ConfigIssue(f"nodes[{i}].node.router_id", f"{rid} is also {ids[rid]}'s"))
        ids.setdefault(rid, n.name)
        for j, s in enumerate(n.sessions):
            key = (s.router.name, str(s.neighbor))
            if key in neighbors:
                issues.append(
                    ConfigIssue(
                        f"nodes[{i}].sessions[{j}].local_address",
                        f"router {s.router.name} would see {s.neighbor} from "
                        f"{neighbors[key]} and {n.name}: set local_address",
                    )
                )
            neighbors.setdefault(key, n.name)
    return issues


def _target(node: RenderedNode) -> dict[str, Any] | None:
    api = node.config.node.api
    if api.metrics_listen is not None and api.metrics_port is not None:
        address, port = api.metrics_listen, api.metrics_port
    else:
        address, port = api.listen, api.port
    if address.is_loopback:
        return None
    if address.is_unspecified:
        address = node.config.node.router_id
    host = f"[{address}]" if isinstance(address, ipaddress.IPv6Address) else str(address)
    return {
        "targets": [f"{host}:{port}"],
        "labels": {"node": node.name, "router_id": str(node.config.node.router_id)},
    }
