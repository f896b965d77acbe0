"""``bgp-lb doctor``: the whole path on a node, in order, each failure with its fix.

Pure: :func:`diagnose` turns what the I/O side gathered (the config or why it is invalid,
the kernel prerequisites from check-node, the running agent's status document or why it could
not be read) into a :class:`Report`. ``doctor_cli.py`` gathers and prints.

Steps, in the order traffic depends on them: config -> kernel -> agent -> processes (ExaBGP,
bfdd when a peer wants BFD) -> sessions -> services (VIP and IPVS service) -> checks ->
acknowledged (what the speaker says each peer holds). A step whose input is missing is
``skip`` with why. ``warn`` (a drained node, a disabled mutating API) does not fail the report;
``fail`` does (exit 1).

Started from the Go bgp-lb's command line, the agent runs the file as the Go flags adjust it:
that config is diagnosed (the I/O side checks the kernel for it too), see :mod:`.doctor_go`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .config import Config, ConfigIssue
from .dataplane.prereq import Prerequisite
from .doctor_go import effective_flags, flag_mismatch, go_mode
from .doctor_report import Finding, Level, Report, render
from .gocompat import GoFlags, adjust_config
from .model import CheckStatus, Decision, PeerState, Reason, ServiceMode
from .status import PeerStatusModel, ServiceStatus, StatusResponse

__all__ = ["Finding", "Inputs", "Level", "Report", "diagnose", "effective_config", "render"]

STEPS = (
    "config",
    "kernel",
    "agent",
    "processes",
    "sessions",
    "services",
    "checks",
    "acknowledged",
)
ANNOUNCING = (Decision.ANNOUNCE, Decision.DEGRADED, Decision.DRAINING)
JOURNAL = "journalctl -u bgp-lb -n 100"


@dataclass(frozen=True)
class Inputs:
    """What the I/O side found. ``config_issues`` set: the file is invalid; ``status_error``
    set: the agent's API could not be read (then ``status`` is None)."""

    config_path: str
    config: Config | None = None
    config_issues: Sequence[ConfigIssue] = ()
    config_error: str | None = None  # unreadable file (OSError)
    prerequisites: Sequence[Prerequisite] | None = None
    status: StatusResponse | None = None
    status_error: str | None = None
    api: str = ""
    config_note: str = ""  # how the file was chosen (no CONFIG given)
    go_flags: GoFlags | None = None  # Go flags given to the doctor (None: none)


def effective_config(inp: Inputs) -> Config | None:
    """The config as the agent runs it (the file, adjusted by the effective Go flags)."""
    flags = effective_flags(inp.go_flags, inp.status)
    if inp.config is None or flags is None:
        return inp.config
    return adjust_config(inp.config, flags)


def diagnose(inp: Inputs) -> Report:
    out: list[Finding] = []
    out += _config(inp)
    out += go_mode(inp.go_flags, inp.status)
    out += _kernel(inp)
    st = inp.status
    if st is None:
        why = inp.status_error or "no status"
        out.append(
            Finding(
                "agent",
                f"agent API {inp.api}",
                Level.FAIL,
                why,
                f"systemctl status bgp-lb; {JOURNAL}; the API address is node.api.listen/"
                "port (or --api)",
            )
        )
        for step in STEPS[3:]:
            out.append(Finding(step, step, Level.SKIP, "the agent's status could not be read"))
        return Report(tuple(out))
    out += _agent(st)
    out += flag_mismatch(inp.go_flags, st, inp.config_path)
    out += _processes(st, inp.config)
    out += _sessions(st)
    out += _services(st, effective_config(inp))
    out += _checks(st)
    out += _acknowledged(st)
    return Report(tuple(out))


# --------------------------------------------------------------------------- steps


def _config(inp: Inputs) -> list[Finding]:
    path = inp.config_path
    note = f" ({inp.config_note})" if inp.config_note else ""
    if inp.config_error is not None:
        return [
            Finding(
                "config",
                path,
                Level.FAIL,
                inp.config_error + note,
                f"check the path: ls -l {path}",
            )
        ]
    if inp.config_issues:
        return [
            Finding(
                "config",
                f"{path}: {i.path or '(file)'}",
                Level.FAIL,
                i.message,
                f"edit {path}, then bgp-lb check-config {path} and systemctl reload bgp-lb",
            )
            for i in inp.config_issues
        ]
    cfg = inp.config
    detail = f"{len(cfg.services)} service(s), {len(cfg.peers)} peer(s)" if cfg else ""
    return [Finding("config", path, Level.OK, (detail + note).strip())]


def _kernel(inp: Inputs) -> list[Finding]:
    if inp.prerequisites is None:
        return [Finding("kernel", "prerequisites", Level.SKIP, "not checked")]
    found = [
        Finding("kernel", p.name, Level.OK if p.ok else Level.FAIL, p.detail, p.fix)
        for p in inp.prerequisites
    ]
    return found or [Finding("kernel", "prerequisites", Level.OK, "nothing needed")]


def _agent(st: StatusResponse) -> list[Finding]:
    n = st.node
    version = n.version + (f", image {n.image_version}" if n.image_version else "")
    out = [
        Finding(
            "agent",
            "agent",
            Level.OK if n.ready else Level.FAIL,
            f"version {version}, up {n.uptime:.0f} s" + ("" if n.ready else ", NOT ready"),
            "" if n.ready else f"the first reconcile pass has not finished: {JOURNAL}",
        )
    ]
    if n.drained:
        out.append(
            Finding(
                "agent",
                "node drain",
                Level.WARN,
                n.drain_reason or "drained by an operator: nothing is announced",
                "bgp-lb undrain --all (once the node is healthy)",
            )
        )
    for s in st.services:
        if s.drained:
            out.append(
                Finding(
                    "agent",
                    f"service {s.name} drain",
                    Level.WARN,
                    "drained by an operator",
                    f"bgp-lb undrain {s.name}",
                )
            )
    if n.mutating_api is not None:
        out.append(
            Finding(
                "agent",
                "mutating API",
                Level.WARN,
                n.mutating_api,
                "fix node.api.token_file (chmod 600, not empty), then systemctl reload bgp-lb",
            )
        )
    for f in st.state_files:
        if not f.ok:
            out.append(
                Finding(
                    "agent",
                    f"state file {f.file}",
                    Level.FAIL,
                    f"{f.path}: {f.problem}",
                    "see docs/operations.md#recovering",
                )
            )
    for k in st.kernel_knobs:
        if not k.ok:
            out.append(
                Finding(
                    "kernel",
                    f"knob {k.knob}",
                    Level.FAIL,
                    f"want {k.want}, got {k.got}" + (f": {k.error}" if k.error else ""),
                    f"see docs/forwarding.md#kernel-knobs; {JOURNAL}",
                )
            )
    if st.last_reload is not None and not st.last_reload.ok:
        out.append(
            Finding(
                "agent",
                "last reload",
                Level.WARN,
                "; ".join(st.last_reload.errors) + " (the previous config stays in force)",
                "fix the config (bgp-lb check-config), then systemctl reload bgp-lb",
            )
        )
    return out


def _wants_bfd(config: Config | None) -> bool:
    """A peer with BFD on (``peers[].bfd``, once it exists: read defensively)."""
    if config is None:
        return False
    for peer in config.peers:
        bfd = getattr(peer, "bfd", None)
        if bfd is not None and bfd is not False and getattr(bfd, "enabled", True):
            return True
    return False


def _processes(st: StatusResponse, config: Config | None) -> list[Finding]:
    procs = {p.name: p for p in st.processes}
    wanted = ["exabgp"] + (["bfdd"] if _wants_bfd(config) else [])
    out = []
    for name in wanted:
        p = procs.get(name)
        if p is None:
            out.append(
                Finding(
                    "processes",
                    name,
                    Level.FAIL if name == "bfdd" else Level.SKIP,
                    "the agent does not report this process",
                    "upgrade the agent (it predates processes[] in the status)"
                    if name == "exabgp"
                    else "an agent with BFD support runs bfdd: upgrade it, or remove peers[].bfd",
                )
            )
        elif p.running:
            restarts = f", {p.restarts} restart(s)" if p.restarts else ""
            out.append(Finding("processes", name, Level.OK, f"pid {p.pid}{restarts}"))
        else:
            out.append(
                Finding(
                    "processes",
                    name,
                    Level.FAIL,
                    f"not running ({p.restarts} restart(s) so far)",
                    f"{JOURNAL} -g {name}: the agent restarts it with backoff; "
                    f"is {name} installed (bgp-lb's venv)?",
                )
            )
    return out


def _sessions(st: StatusResponse) -> list[Finding]:
    if not st.peers:
        return [Finding("sessions", "peers", Level.FAIL, "no peers", "add peers[] to the config")]
    return [_session(p, st.node.local_as) for p in st.peers]


def _session(p: PeerStatusModel, local_as: int) -> Finding:
    name = f"peer {p.address}" + (f" ({p.name})" if p.name else "")
    if p.state is PeerState.UP:
        return Finding(
            "sessions", name, Level.OK, f"Established, {p.routes_advertised} route(s) sent"
        )
    why = p.reason or "no reason reported"
    if p.state is PeerState.CONNECTED:
        fix = (
            "TCP is up but BGP is not: on the router, the neighbor's remote-as must be "
            f"{local_as} and ours must expect AS {p.asn}; check the router id, hold time and "
            "the MD5 password on both sides"
        )
    else:
        fix = (
            f"nothing answers on {p.address}:179 (or it refuses us): the router needs "
            f"'neighbor <this node> remote-as {local_as}'; check routing to {p.address}, "
            "firewalls for TCP 179, and multihop/local_address if not directly connected"
        )
    return Finding("sessions", name, Level.FAIL, f"{p.state}: {why}", fix)


_SERVICE_FIX = {
    Reason.VIP_MISSING: (
        "the VIP is not on the dummy interface: {journal} -g vip; ip -br addr show type dummy"
    ),
    Reason.IPVS_MISSING: "the IPVS virtual service is missing: ipvsadm -Ln; {journal} -g ipvs",
    Reason.DATAPLANE_CONFLICT: (
        "an object another tool made holds the VIP or IPVS service; remove it "
        "(ip addr del / ipvsadm -D) and the agent makes its own; see docs/operations.md"
    ),
}


def _services(st: StatusResponse, config: Config | None) -> list[Finding]:
    out = []
    configured = {c.name: c for c in config.services} if config is not None else {}
    for s in st.services:
        vips = ",".join(str(v) for v in s.vips)
        svc = configured.get(s.name)
        if s.mode != ServiceMode.IPVS:
            what = (
                "VIP present"
                if svc is None or svc.require_vip
                else "announced without a VIP looked for (announce mode)"
            )
        elif svc is not None and not svc.ports:
            what = "VIP present; no IPVS virtual service (no ports, or no -ipvs-setup)"
        else:
            what = "VIP and IPVS service present"
        fix = _SERVICE_FIX.get(s.reason)
        if fix is not None:
            out.append(
                Finding(
                    "services",
                    f"service {s.name} {vips}",
                    Level.FAIL,
                    f"{s.reason}: {s.detail}".rstrip(": "),
                    fix.format(journal=JOURNAL),
                )
            )
            continue
        out.append(Finding("services", f"service {s.name} {vips}", Level.OK, what))
        for t in s.pool_tables:
            if not t.order_ok:
                out.append(
                    Finding(
                        "services",
                        f"service {s.name} pool table {t.vip}:{t.port}/{t.protocol}",
                        Level.FAIL,
                        "the kernel's real-server order differs from the config",
                        f"bgp-lb drain {s.name} --wait; bgp-lb undrain {s.name} (the agent "
                        "rebuilds the table)",
                    )
                )
    return out


def _checks(st: StatusResponse) -> list[Finding]:
    out = []
    for s in st.services:
        for c in s.checks:
            where = f"{s.name}/{c.target}/{c.check}" if c.target else f"{s.name}/{c.check}"
            if c.status == CheckStatus.UP:
                out.append(Finding("checks", where, Level.OK, f"up ({c.successes} ok in a row)"))
                continue
            error = c.last_error or ("no result yet" if c.last_ok is None else "failed")
            out.append(
                Finding(
                    "checks",
                    where,
                    Level.FAIL,
                    f"down after {c.failures} failure(s): {error}",
                    "probe the backend by hand the way the check does (port, path, expected "
                    "status) and fix the backend or the check's config",
                )
            )
        if s.decision == Decision.WITHDRAW and s.reason in (
            Reason.BELOW_MIN_HEALTHY,
            Reason.STARTING,
        ):
            out.append(
                Finding(
                    "checks",
                    s.name,
                    Level.FAIL if s.reason is Reason.BELOW_MIN_HEALTHY else Level.WARN,
                    f"withdrawn: {s.reason} {s.detail}".rstrip(),
                    "wait for rise successes" if s.reason is Reason.STARTING else "",
                )
            )
    return out


def _acknowledged(st: StatusResponse) -> list[Finding]:
    up = {p.address for p in st.peers if p.state is PeerState.UP}
    out = []
    for s in st.services:
        if s.decision not in ANNOUNCING:
            out.append(
                Finding(
                    "acknowledged",
                    f"service {s.name}",
                    Level.WARN if s.drained or st.node.drained else Level.FAIL,
                    f"not announced: {s.decision} ({s.reason})",
                    _withdraw_fix(s),
                )
            )
            continue
        for peer in s.peers:
            if peer not in up:
                continue  # the session step already failed it
            held = set(s.routes.get(peer, []))
            missing = [str(v) for v in s.vips if not any(h.startswith(f"{v}/") for h in held)]
            if missing:
                out.append(
                    Finding(
                        "acknowledged",
                        f"service {s.name} -> {peer}",
                        Level.FAIL,
                        f"wanted but not acknowledged by the speaker: {', '.join(missing)}",
                        f"{JOURNAL} -g exabgp; bgplb_speaker_* metrics (ack timeouts, refused "
                        "commands); the agent re-sends on its next pass",
                    )
                )
            else:
                out.append(
                    Finding(
                        "acknowledged",
                        f"service {s.name} -> {peer}",
                        Level.OK,
                        ", ".join(sorted(held)),
                    )
                )
    return out


def _withdraw_fix(s: ServiceStatus) -> str:
    if s.drained:
        return f"bgp-lb undrain {s.name}"
    if s.reason in (Reason.CHECK_FAILED, Reason.BELOW_MIN_HEALTHY, Reason.STARTING):
        return "see the checks step above"
    if s.reason in _SERVICE_FIX:
        return "see the services step above"
    if s.reason is Reason.NODE_DRAINING:
        return "bgp-lb undrain --all"
    return JOURNAL
