"""ExaBGP's configuration file, rendered from our Config (pure, apart from reading secrets).

Choices (see docs/bgp.md):
- One ``neighbor`` block per peer, each complete on its own (router-id and local-as repeated),
  so a reload resets exactly the peers whose block text changed.
- ``capability { route-refresh; graceful-restart disable; }``: route-refresh lets the router
  re-apply inbound policy without a hard reset. Graceful restart is OFF on purpose: when this
  node dies we want its routes withdrawn at once (TCP close -> ~80 ms), whereas with GR the
  router would keep the stale routes for the restart time and black-hole the node's share.
- ``family { ipv4 unicast; ipv6 unicast; }`` always: the policy may send a v6 VIP over a v4
  session (with an explicit v6 next hop) and vice versa.
- MD5 keys are written base64-encoded (``md5-base64 true``), which sidesteps every quoting
  problem of ExaBGP's tokeniser; the file is 0600 in a 0700 directory.
- Passive peers: ``passive; listen <port>;`` makes ExaBGP bind local_address:port for this
  peer only (no global ``exabgp.tcp.bind``).
- ``multihop N`` becomes ``outgoing-ttl N``; without it the kernel's default TTL is used.
"""

from __future__ import annotations

import base64
import os
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, PeerConfig
from ..model import PeerKey
from ..statefile import tmp_path, write_atomic

PROCESS_NAME = "bgplb-api"
MAX_MD5 = 80  # RFC 2385 / ExaBGP's limit


class RenderError(ValueError):
    """The configuration cannot be rendered (bad secret file, missing address...)."""


@dataclass(frozen=True)
class Rendered:
    text: str
    blocks: Mapping[PeerKey, str]  # per-peer neighbor block: a changed block = a reset peer


def read_secret(path: Path) -> str:
    """Read an MD5 key file. It must not be readable by others; trailing newlines are cut."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise RenderError(f"cannot read md5_password_file {path}: {e.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if mode & (stat.S_IRWXO | stat.S_IRWXG):
            raise RenderError(f"md5_password_file {path} must be mode 0600 (is {mode & 0o777:o})")
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    secret = data.decode("utf-8", errors="strict").rstrip("\r\n")
    if not secret or len(secret.encode()) > MAX_MD5:
        raise RenderError(f"md5_password_file {path}: the key must be 1-{MAX_MD5} bytes")
    return secret


def read_secrets(config: Config) -> dict[PeerKey, str]:
    return {
        p.key: read_secret(p.md5_password_file)
        for p in config.peers
        if p.md5_password_file is not None
    }


def _neighbor(config: Config, peer: PeerConfig, secret: str | None) -> str:
    node = config.node
    lines = [f"neighbor {peer.address} {{"]
    lines.append(f"    router-id {node.router_id};")
    lines.append(f"    local-as {node.local_as};")
    lines.append(f"    peer-as {peer.asn};")
    if peer.local_address is not None:
        lines.append(f"    local-address {peer.local_address};")
    elif peer.passive:
        raise RenderError(f"peer {peer.address}: a passive peer needs local_address")
    else:
        lines.append("    local-address auto;")
    lines.append(f"    hold-time {peer.hold_time};")
    lines.append(f"    connect {peer.port};")
    if peer.passive:
        lines.append("    passive;")
        lines.append(f"    listen {peer.port};")
    if peer.multihop is not None:
        lines.append(f"    outgoing-ttl {peer.multihop};")
    if secret is not None:
        encoded = base64.b64encode(secret.encode()).decode("ascii")
        lines.append("    md5-base64 true;")
        lines.append(f"    md5-password {encoded};")
    lines.append("    family { ipv4 unicast; ipv6 unicast; }")
    lines.append("    capability { route-refresh; graceful-restart disable; }")
    lines.append(f"    api {{ processes [ {PROCESS_NAME} ]; neighbor-changes; }}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(config: Config, relay_argv: Sequence[str], secrets: Mapping[PeerKey, str]) -> Rendered:
    for arg in relay_argv:
        if not arg or any(c.isspace() or c in ";{}[]\"'" for c in arg):
            raise RenderError(f"relay argument {arg!r} cannot be written into ExaBGP's config")
    blocks = {p.key: _neighbor(config, p, secrets.get(p.key)) for p in config.peers}
    head = (
        "# Rendered by bgp-lb: rewritten on every reconfigure, do not edit.\n"
        f"process {PROCESS_NAME} {{\n"
        f"    run {' '.join(relay_argv)};\n"
        "    encoder json;\n"
        # The relay's death restarts ExaBGP (the agent decides); ExaBGP must not respawn it.
        "    respawn false;\n"
        "}\n"
    )
    return Rendered(text=head + "".join("\n" + b for b in blocks.values()), blocks=blocks)


def ensure_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _move_aside(path: Path) -> None:
    """Something that is not a file sits where ours goes (a directory left by hand or a
    bad restore): keep it, renamed, instead of failing to start over it."""
    if path.is_dir() and not path.is_symlink():
        os.replace(path, path.with_name(f"{path.name}.broken-{time.time_ns()}"))


def write_private(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text``, mode 0600 from the first byte. The file
    is only ever generated: whatever was there (corrupt, edited, a directory) is replaced."""
    _move_aside(tmp_path(path))
    _move_aside(path)
    write_atomic(path, text, mode=0o600)
