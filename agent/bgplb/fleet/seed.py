"""A node's cloud-init NoCloud seed: ``meta-data``, ``user-data`` (``#cloud-config``) and, when
the node has a ``network``, ``network-config``. Make the ``cidata`` disk from the directory
with a standard tool (``cloud-localds``, ``genisoimage -V cidata``) or let the platform serve it.

cloud-init runs its per-instance modules (write_files, ssh keys) once per instance-id: the
instance-id is derived from the seed's content, so a changed config gets a new one and is
applied on the next boot; an unchanged render keeps it (docs/fleet.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from .network import NetworkVersion, network_config
from .nodes import CONFIG_PATH, RenderedNode
from .schema import NetworkSpec
from .text import dump_yaml


@dataclass(frozen=True)
class Seed:
    instance_id: str
    files: Mapping[str, str]  # meta-data, user-data, network-config


def user_data(node: RenderedNode, ssh_keys: tuple[str, ...]) -> str:
    files: list[dict[str, Any]] = [
        {
            "path": str(CONFIG_PATH),
            "owner": "root:root",
            "permissions": "0600",
            "content": node.text,
        },
    ]
    for path, content in sorted(node.secrets.items()):
        files.append(
            {"path": str(path), "owner": "root:root", "permissions": "0600", "content": content}
        )
    data: dict[str, Any] = {}
    if ssh_keys:
        data["ssh_authorized_keys"] = list(ssh_keys)
    data["write_files"] = files
    return "#cloud-config\n" + dump_yaml(data)


def render_seed(
    node: RenderedNode,
    ssh_keys: tuple[str, ...],
    network: NetworkSpec | None,
    version: NetworkVersion,
) -> Seed:
    files = {"user-data": user_data(node, ssh_keys)}
    if network is not None:
        files["network-config"] = dump_yaml(network_config(network, version))
    digest = hashlib.sha256()
    for name, text in sorted(files.items()):
        digest.update(f"{name}\0{len(text)}\0".encode())
        digest.update(text.encode())
    instance_id = f"bgplb-{node.name}-{digest.hexdigest()[:16]}"
    files["meta-data"] = dump_yaml({"instance-id": instance_id, "local-hostname": node.name})
    return Seed(instance_id, files)


def seed_paths(node: str) -> dict[str, PurePosixPath]:
    base = PurePosixPath("nodes", node, "seed")
    return {name: base / name for name in ("meta-data", "user-data", "network-config")}
