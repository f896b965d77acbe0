"""Reading a fleet file: decode (the agent's YAML reader), validate, cross-check, read secrets.

Every problem is a :class:`~bgplb.config.ConfigIssue` with the fleet file's field path; they are
all collected and raised together as one :class:`~bgplb.config.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ..config import ConfigError, ConfigIssue, read_config_data
from ..config.issues import issues_from_validation
from .schema import FleetFile

MAX_MD5 = 80  # the kernel's TCP_MD5SIG_MAXKEYLEN
MAX_TOKEN = 4096


@dataclass(frozen=True)
class Fleet:
    spec: FleetFile
    source: Path  # the fleet file (named in the rendered files' headers)
    api_tokens: Mapping[str, str]  # node name -> its API token (when a source is given)
    md5_keys: Mapping[str, str]  # router name -> the TCP-MD5 key of its sessions


def load_fleet(path: Path) -> Fleet:
    data = read_config_data(path)
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue("", "the fleet file must be a mapping")])
    try:
        spec = FleetFile.model_validate(data)
    except ValidationError as e:
        raise ConfigError(issues_from_validation(e, FleetFile)) from None
    issues = list(check_fleet(spec))
    if issues:
        raise ConfigError(issues)
    base = path.parent
    tokens: dict[str, str] = {}
    keys: dict[str, str] = {}
    for i, node in enumerate(spec.nodes):
        source = node.api_token_source or spec.api_token_source
        if source is None:
            continue
        where = f"nodes[{i}].api_token_source" if node.api_token_source else "api_token_source"
        token = _secret(base / source, where, MAX_TOKEN, issues)
        if token is not None:
            tokens[node.name] = token
    for i, router in enumerate(spec.routers):
        if router.md5_password_source is None:
            continue
        key = _secret(
            base / router.md5_password_source, f"routers[{i}].md5_password_source", MAX_MD5, issues
        )
        if key is not None and any(c.isspace() or not c.isprintable() for c in key):
            issues.append(
                ConfigIssue(
                    f"routers[{i}].md5_password_source",
                    "the key must be printable and without spaces "
                    "(FRR's 'neighbor ... password WORD')",
                )
            )
        elif key is not None:
            keys[router.name] = key
    if issues:
        raise ConfigError(issues)
    return Fleet(spec, path, tokens, keys)


def _secret(path: Path, where: str, limit: int, issues: list[ConfigIssue]) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        issues.append(ConfigIssue(where, f"cannot read {path}: {why}"))
        return None
    if not text or len(text.encode()) > limit:
        issues.append(ConfigIssue(where, f"{path}: must hold 1-{limit} bytes"))
        return None
    return text


def check_fleet(spec: FleetFile) -> Iterator[ConfigIssue]:
    """The rules between sections: unique names, sessions to known routers, known services."""
    yield from _unique([r.name for r in spec.routers], "routers[{}].name", "router")
    yield from _unique([n.name.lower() for n in spec.nodes], "nodes[{}].name", "node")
    yield from _unique([s.name for s in spec.services], "services[{}].name", "service")
    yield from _unique([r.peer_group for r in spec.routers], "routers[{}].peer_group", "")
    routers = {r.name for r in spec.routers}
    services = {s.name for s in spec.services}
    for i, node in enumerate(spec.nodes):
        for j, session in enumerate(node.sessions):
            if session.router not in routers:
                yield ConfigIssue(
                    f"nodes[{i}].sessions[{j}].router",
                    f"unknown router {session.router!r} (routers: {', '.join(sorted(routers))})",
                )
        yield from _unique(
            [s.router for s in node.sessions],
            f"nodes[{i}].sessions[{{}}].router",
            "session to router",
        )
        for k, name in enumerate(node.services or ()):
            if name not in services:
                yield ConfigIssue(f"nodes[{i}].services[{k}]", f"unknown service {name!r}")
    for k, service in enumerate(spec.services):
        for m, peer in enumerate(service.peers or ()):
            if peer not in routers:
                yield ConfigIssue(f"services[{k}].peers[{m}]", f"unknown router {peer!r}")


def _unique(names: list[str], path: str, what: str) -> Iterator[ConfigIssue]:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen and what:
            yield ConfigIssue(path.format(i), f"{what} {name!r} again (first at [{seen[name]}])")
        seen.setdefault(name, i)
