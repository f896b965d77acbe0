"""``bgp-lb check-node``: the kernel modules and sysctls the dataplane needs, each with its fix.

Without a config every check applies. With one, only what its services use: IPVS, the
schedulers named, masquerading (forwarding, ``vs.conntrack``), persistence
(``expire_quiescent_template``), IPv6 VIPs, pool mode (``sloppy_tcp``/``sloppy_sctp``,
``vs.conntrack=0``, the memory defense of ``node.ipvs``; the agent sets these itself in its
namespace, knobkeeper.py). Nothing is changed here: this only reads
``/sys/module``, ``/lib/modules`` and ``/proc/sys`` (under ``root``, for tests).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import Config, ConfigError, RealServerConfig, load_config
from ..config.schema import IpvsKnobsConfig
from ..model import ForwardMethod, ServiceMode
from . import knobs

MODULES_FILE = "deploy/modules-load.d/bgp-lb.conf -> /etc/modules-load.d/"
SYSCTL_FILE = "deploy/sysctl.d/90-bgp-lb.conf -> /etc/sysctl.d/"
POOL_SYSCTL_FILE = "deploy/sysctl.d/91-bgp-lb-pool.conf -> /etc/sysctl.d/"
DEFAULT_SCHEDULER = "wlc"


@dataclass(frozen=True)
class Prerequisite:
    name: str  # "module ip_vs", "sysctl net.ipv4.ip_forward"
    ok: bool
    detail: str  # what was found
    fix: str  # what to do when not ok ("" when ok)


@dataclass(frozen=True)
class Needs:
    """What a config uses from the kernel. ``everything()`` when there is no config."""

    dummy: bool = True  # an ipvs-mode service: its VIPs on a dummy link
    ipvs: bool = True  # an ipvs-mode service with ports: IPVS virtual services
    schedulers: frozenset[str] = frozenset({DEFAULT_SCHEDULER})
    masq: bool = True
    masq_v6: bool = True
    persistence: bool = True
    pool: bool = False  # pool mode: conflicts with masq's vs.conntrack=1, so never by default
    memory_defense: tuple[tuple[str, int], ...] = ()  # node.ipvs: amemthresh, drop_entry

    @staticmethod
    def of(config: Config | None) -> Needs:
        if config is None:
            return Needs()
        ipvs = [s for s in config.services if s.mode == ServiceMode.IPVS]
        ports = [p for s in ipvs for p in s.ports]
        # A service without real servers forwards to the node's own backend (masq).
        masq = [s for s in ipvs if s.ports and (not s.real_servers or _any_masq(s.real_servers))]
        return Needs(
            dummy=bool(ipvs),
            # no ports (the Go command line without -ipvs-setup): dummy + VIP, no IPVS
            ipvs=bool(ports),
            schedulers=frozenset(p.scheduler for p in ports),
            masq=bool(masq),
            masq_v6=any(v.version == 6 for s in masq for v in s.vips),
            persistence=any(p.persistence for p in ports),
            pool=knobs.pool_mode(config),
            memory_defense=_memory_defense(config),
        )


def _memory_defense(config: Config) -> tuple[tuple[str, int], ...]:
    ipvs = config.node.ipvs or (IpvsKnobsConfig() if knobs.pool_mode(config) else None)
    if ipvs is None:
        return ()
    return ((knobs.AMEMTHRESH, ipvs.amemthresh), (knobs.DROP_ENTRY, ipvs.drop_entry))


def _any_masq(real_servers: Iterable[RealServerConfig]) -> bool:
    return any(r.forward == ForwardMethod.MASQ for r in real_servers)


# --------------------------------------------------------------------------- probes


def _release(root: Path) -> str:
    osrelease = root / "proc/sys/kernel/osrelease"
    if osrelease.exists():
        return osrelease.read_text().strip()
    return platform.release()


def _module_state(root: Path, name: str) -> str:
    """'loaded' (or built in), 'available' (modprobe would load it) or 'missing'."""
    if (root / "sys/module" / name).exists():
        return "loaded"
    base = root / "lib/modules" / _release(root)
    for index in ("modules.builtin", "modules.dep"):
        try:
            text = (base / index).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            path = line.split(":", 1)[0]
            stem = path.rsplit("/", 1)[-1].split(".ko", 1)[0]
            if stem.replace("-", "_") == name:
                return "loaded" if index == "modules.builtin" else "available"
    return "missing"


def check_module(root: Path, name: str, why: str, autoload: bool) -> Prerequisite:
    """``autoload``: the kernel loads it on first use (dummy links, IPVS schedulers)."""
    state = _module_state(root, name)
    ok = state == "loaded" or (autoload and state == "available")
    detail = {
        "loaded": "loaded",
        "available": "not loaded; the kernel loads it on first use"
        if autoload
        else "not loaded (available as a module)",
        "missing": "not in this kernel",
    }[state]
    if state == "missing":
        fix = f"use a kernel that has {name}, e.g. Debian's linux-image-amd64"
    else:
        fix = f"modprobe {name}; to keep it: {MODULES_FILE}"
    return Prerequisite(f"module {name}", ok, f"{detail} ({why})", "" if ok else fix)


AGENT_SETS = "the agent sets it in its namespace at start; by hand: "


def check_sysctl(root: Path, key: str, want: int, why: str) -> Prerequisite:
    path = root / "proc/sys" / key.replace(".", "/")
    try:
        value = path.read_text().strip()
    except OSError:
        missing = "absent (is ip_vs loaded?)" if ".vs." in key else "absent"
        fix = f"load ip_vs, then sysctl -w {key}={want}" if ".vs." in key else ""
        return Prerequisite(f"sysctl {key}", False, f"{missing} ({why})", fix)
    try:
        ok = knobs.sysctl_holds(key, want, int(value))
    except ValueError:
        ok = False
    fix = "" if ok else f"sysctl -w {key}={want}; to keep it: {SYSCTL_FILE}"
    return Prerequisite(f"sysctl {key}", ok, f"{value}, want {want} ({why})", fix)


def check_pool(root: Path, needs: Needs) -> list[Prerequisite]:
    """Pool mode and ``node.ipvs``: what the agent keeps (knobkeeper.py), checked here too
    so that a node can be verified before the agent runs."""
    wanted: list[tuple[str, int]] = []
    if needs.pool:
        wanted += [(knobs.SLOPPY_TCP, 1), (knobs.SLOPPY_SCTP, 1), (knobs.CONNTRACK, 0)]
    wanted += list(needs.memory_defense)
    out = []
    for key, want in wanted:
        why = knobs.WHY[key]
        if key == knobs.CONNTRACK and needs.masq:
            why += "; this config also masquerades: its replies lose conntrack state"
        p = check_sysctl(root, key, want, why)
        if not p.ok:  # vs.conntrack=0 is not in any file: masq nodes keep 1 (forwarding.md)
            fix = p.fix.replace(SYSCTL_FILE, POOL_SYSCTL_FILE if key != knobs.CONNTRACK else "")
            p = Prerequisite(
                p.name, p.ok, p.detail, AGENT_SETS + fix.removesuffix("; to keep it: ")
            )
        out.append(p)
    return out


def check_prerequisites(config: Config | None, root: Path = Path("/")) -> list[Prerequisite]:
    needs = Needs.of(config)
    out: list[Prerequisite] = []
    if needs.dummy:
        out.append(check_module(root, "dummy", "a dummy link holds each service's VIPs", True))
    if needs.ipvs:
        out.append(check_module(root, "ip_vs", "IPVS virtual services", autoload=False))
        out += [
            check_module(root, f"ip_vs_{s}", f"IPVS scheduler {s}", autoload=True)
            for s in sorted(needs.schedulers)
        ]
        out.append(
            check_sysctl(
                root, "net.ipv4.vs.expire_nodest_conn", 1,
                "drop connections to a removed real server at once",
            )
        )  # fmt: skip
        if needs.persistence:
            out.append(
                check_sysctl(
                    root, "net.ipv4.vs.expire_quiescent_template", 1,
                    "persistent clients leave a real server set to weight 0",
                )
            )  # fmt: skip
    if needs.dummy:
        for key, want in (("arp_ignore", 1), ("arp_announce", 2)):
            out.append(
                check_sysctl(
                    root, f"net.ipv4.conf.all.{key}", want,
                    "VIPs on the dummy link are not answered/announced by ARP on other links",
                )
            )  # fmt: skip
    out += check_pool(root, needs)
    if needs.masq:
        out.append(
            check_sysctl(root, "net.ipv4.ip_forward", 1, "masq replies are forwarded by the node")
        )
    if needs.masq and not needs.pool:  # pool mode wants 0 (check_pool)
        out.append(
            check_sysctl(
                root, "net.ipv4.vs.conntrack", 1,
                "masq connections stay visible to stateful nftables rules",
            )
        )  # fmt: skip
    if needs.masq_v6:
        out.append(
            check_sysctl(root, "net.ipv6.conf.all.forwarding", 1, "IPv6 masq replies are forwarded")
        )
    if config is not None and any(p.bfd is not None for p in config.peers):
        out += check_frr(root)
    return out


FRR_PROGRAMS = ("usr/lib/frr/zebra", "usr/lib/frr/bfdd")


def check_frr(root: Path) -> list[Prerequisite]:
    """peers[].bfd: FRR's zebra and bfdd (Debian package frr, docs/bgp.md#bfd); the agent
    speaks to bfdd's vty socket itself (no vtysh)."""
    out = []
    for rel in FRR_PROGRAMS:
        path = root / rel
        ok = path.is_file() and os.access(path, os.X_OK)
        out.append(
            Prerequisite(
                f"program /{rel}",
                ok,
                "present" if ok else "missing: BFD peers get no route (their session never Up)",
                "" if ok else "apt-get install frr (and keep Debian's frr.service masked)",
            )
        )
    return out


# --------------------------------------------------------------------------- the command


def render_table(results: list[Prerequisite]) -> str:
    if not results:
        return "nothing to check: the config uses no IPVS and no masquerading"
    width = max(len(r.name) for r in results)
    lines = []
    for r in results:
        lines.append(f"{'ok ' if r.ok else 'BAD'}  {r.name:<{width}}  {r.detail}")
        if not r.ok and r.fix:
            lines.append(f"{'':<{width + 5}}  fix: {r.fix}")
    bad = sum(not r.ok for r in results)
    lines.append("all prerequisites met" if not bad else f"{bad} prerequisite(s) not met")
    return "\n".join(lines)


def run_check_node(args: argparse.Namespace) -> int:
    """Exit 0 if every prerequisite is met, 1 if not, 2 if the config is unusable."""
    config: Config | None = None
    if getattr(args, "config", None):
        try:
            config = load_config(args.config)
        except ConfigError as e:
            print(f"{args.config}: invalid config:\n{e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"{args.config}: {e}", file=sys.stderr)
            return 2
    results = check_prerequisites(config, Path(getattr(args, "root", None) or "/"))
    if getattr(args, "json", False):
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(render_table(results))
    return 0 if all(r.ok for r in results) else 1
