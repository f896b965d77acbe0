"""A fleet node -> the agent's config for it, validated by the agent's own loader.

``defaults`` and ``nodes[i].node`` are merged (mappings deep, the node's keys win), the sessions
become ``peers`` (the router's name, ASN, hold time, MD5 key file, BFD), the fleet's services
(``nodes[i].services`` of them) become ``services`` with ``local_real_server`` expanded. The text
is then read back through the agent's loader (:func:`~bgplb.config.loader.decode` +
:func:`~bgplb.config.parse_config`, the cross-checks included): a node config that the agent
would refuse is never written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from ..config import Config, ConfigError, ConfigIssue, NodeConfig, PeerConfig, parse_config
from ..config.issues import issues_from_validation, join_path
from ..config.loader import decode
from .load import Fleet
from .schema import FleetService, NodeSpec, RouterSpec, SessionSpec
from .text import dump_yaml

CONFIG_PATH = PurePosixPath("/etc/bgp-lb/config.yaml")
TOKEN_PATH = PurePosixPath("/etc/bgp-lb/api-token")
MD5_DIR = PurePosixPath("/etc/bgp-lb")


@dataclass(frozen=True)
class Session:
    router: RouterSpec
    spec: SessionSpec
    neighbor: (
        ipaddress.IPv4Address | ipaddress.IPv6Address
    )  # the node's address, as the router sees it


@dataclass(frozen=True)
class RenderedNode:
    name: str
    config: Config
    text: str  # /etc/bgp-lb/config.yaml
    secrets: Mapping[PurePosixPath, str]  # other files the node needs (API token, MD5 keys)
    sessions: tuple[Session, ...]


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of two mappings: nested mappings merge, anything else in ``over`` wins."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merge(old, value)
        else:
            out[key] = value
    return out


def _has(data: Mapping[str, Any], loc: tuple[int | str, ...]) -> bool:
    cur: object = data
    for part in loc:
        if not isinstance(cur, Mapping) or part not in cur:
            return False
        cur = cur[part]
    return True


def _split(path: str) -> tuple[int | str, ...]:
    """``api.port`` / ``ipvs['x']`` / ``a[0]`` -> its parts (the inverse of join_path)."""
    parts = [p for p in path.replace("[", ".").replace("]", "").split(".") if p]
    return tuple(int(p) if p.isdigit() else p.strip("'") for p in parts)


def render_node(fleet: Fleet, index: int) -> RenderedNode:
    spec = fleet.spec
    node = spec.nodes[index]
    where = f"nodes[{index}]"
    merged = merge(spec.defaults, node.node)
    secrets: dict[PurePosixPath, str] = {}
    token = fleet.api_tokens.get(node.name)
    if token is not None:
        api = dict(merged.get("api") or {})
        api.setdefault("token_file", str(TOKEN_PATH))
        merged["api"] = api
    try:
        node_config = NodeConfig.model_validate(merged)
    except ValidationError as e:
        issues = []
        for issue in issues_from_validation(e, NodeConfig):
            inner = _split(issue.path)
            own = _has(node.node, inner) or not _has(spec.defaults, inner)
            root = f"{where}.node" if own else "defaults"
            issues.append(ConfigIssue(join_path(inner, root), issue.message))
        raise ConfigError(issues) from None
    if token is not None and node_config.api.token_file is not None:
        secrets[PurePosixPath(node_config.api.token_file)] = token + "\n"
    sessions = []
    peers = []
    for j, session in enumerate(node.sessions):
        router = spec.router(session.router)
        assert router is not None  # check_fleet
        peer = _peer(router, session, fleet.md5_keys.get(router.name), secrets)
        try:
            validated = PeerConfig.model_validate(peer)
        except ValidationError as e:
            raise ConfigError(
                issues_from_validation(e, PeerConfig, f"{where}.sessions[{j}]")
            ) from None
        peers.append(validated.model_dump(mode="json", exclude_unset=True))
        neighbor = session.local_address or node_config.router_id
        sessions.append(Session(router, session, neighbor))
    data: dict[str, Any] = {
        "node": node_config.model_dump(mode="json", exclude_unset=True),
        "peers": peers,
    }
    services = [_service(s, node_config) for s in spec.services if _carries(node, s)]
    if services:
        data["services"] = services
    text = _header(fleet, node) + dump_yaml(data)
    try:
        config = parse_config(decode(text, str(CONFIG_PATH)))
    except ConfigError as e:
        raise ConfigError(
            [ConfigIssue(where, f"the rendered config of {node.name}: {i}") for i in e.errors]
        ) from None
    return RenderedNode(node.name, config, text, secrets, tuple(sessions))


def _header(fleet: Fleet, node: NodeSpec) -> str:
    return (
        f"# bgp-lb agent config of node {node.name}, rendered by `bgp-lb fleet render` from\n"
        f"# {fleet.source.name}: edit that file and render again, not this one (docs/fleet.md).\n"
    )


def _peer(
    router: RouterSpec,
    session: SessionSpec,
    md5_key: str | None,
    secrets: dict[PurePosixPath, str],
) -> dict[str, Any]:
    peer: dict[str, Any] = {"name": router.name, "address": str(session.address), "asn": router.asn}
    own = session.model_dump(mode="json", exclude_unset=True, exclude={"router", "address"})
    peer.update(own)
    if "hold_time" not in own and router.hold_time is not None:
        peer["hold_time"] = router.hold_time
    if router.multihop is not None:
        peer["multihop"] = router.multihop
    if md5_key is not None:
        path = MD5_DIR / f"bgp-{router.name}.key"
        secrets[path] = md5_key + "\n"
        peer["md5_password_file"] = str(path)
    if router.bfd is not None and "bfd" in PeerConfig.model_fields:
        # the agent's own peers[].bfd, once it has one; the router's snippet has it regardless
        peer["bfd"] = router.bfd.model_dump(mode="json")
    return peer


def _carries(node: NodeSpec, service: FleetService) -> bool:
    return node.services is None or service.name in node.services


def _service(service: FleetService, node: NodeConfig) -> dict[str, Any]:
    data = service.model_dump(mode="json", exclude_unset=True, exclude={"local_real_server"})
    local = service.local_real_server
    if local is not None:
        fields = local.model_dump(mode="json", exclude_unset=True)
        own = [node.local_backend_v4] + ([node.backend_v6] if node.backend_v6 else [])
        data["real_servers"] = [
            *data.get("real_servers", []),
            *({"address": str(a), **fields} for a in own),
        ]
    ordered = _type_first(data)
    assert isinstance(ordered, dict)
    return ordered


def _type_first(data: object) -> object:
    """Checks read ``type: tcp`` first, as people write them (pydantic dumps it last)."""
    if isinstance(data, dict):
        items = sorted(data.items(), key=lambda kv: kv[0] != "type")
        return {k: _type_first(v) for k, v in items}
    if isinstance(data, list):
        return [_type_first(v) for v in data]
    return data
