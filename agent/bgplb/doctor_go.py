"""``bgp-lb doctor`` and the Go bgp-lb's command line (:mod:`bgplb.gocompat`).

Started from the Go command line (status ``node.go_flags``), the agent runs its file as
:func:`bgplb.gocompat.adjust_config` changes it: the doctor diagnoses that config and says so
in one line. Go flags given to the doctor itself stand in for an agent whose status cannot be
read; given flags that differ from the running agent's are a failure (the agent's are used).
"""

from __future__ import annotations

import os

from .doctor_report import Finding, Level
from .gocompat import GoFlags
from .status import StatusResponse

GO_FLAG_FIELDS = ("config", "network_setup", "ipvs_setup", "metrics_address", "log_level")


def running_flags(st: StatusResponse | None) -> GoFlags | None:
    """The Go flags the agent runs with (None: ``bgp-lb run``, or no status)."""
    g = st.node.go_flags if st is not None else None
    if g is None:
        return None
    return GoFlags(
        config=g.config,
        log_level=g.log_level,
        network_setup=g.network_setup,
        ipvs_setup=g.ipvs_setup,
        metrics_address=g.metrics_address,
    )


def effective_flags(given: GoFlags | None, st: StatusResponse | None) -> GoFlags | None:
    """The flags the diagnosis applies: the running agent's when its status is read (what
    really runs, even when the given ones differ: that is a failure of its own), else the
    ones given to the doctor."""
    return running_flags(st) if st is not None else given


def go_mode(given: GoFlags | None, st: StatusResponse | None) -> list[Finding]:
    """The one line saying the diagnosis is of the config as the Go flags adjust it."""
    flags = effective_flags(given, st)
    if flags is None:
        return []
    whose = (
        "the running agent was started with the Go command line"
        if st is not None
        else "Go flags given to the doctor (the agent's status could not be read)"
    )
    what = []
    if not flags.network_setup:
        what.append("announce only, no VIP or interface")
    elif not flags.ipvs_setup:
        what.append("dummy and VIP, no IPVS virtual service")
    return [
        Finding(
            "config",
            "Go flags",
            Level.OK,
            f"{whose}: {flags.command_line()}; diagnosed against the config as they adjust it"
            + (f" ({what[0]})" if what else ""),
        )
    ]


def _same_path(a: str, b: str) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _same_flag(name: str, a: GoFlags, b: GoFlags) -> bool:
    if name == "config":
        return _same_path(a.config, b.config)
    return bool(getattr(a, name) == getattr(b, name))


def flag_mismatch(given: GoFlags | None, st: StatusResponse, config_path: str) -> list[Finding]:
    """Go flags given to the doctor that are not the running agent's; without them, a file
    read by the doctor that is not the one the Go-started agent runs."""
    running = running_flags(st)
    if given is None:
        if running is None or _same_path(running.config, config_path):
            return []
        return [
            Finding(
                "agent",
                "config file",
                Level.FAIL,
                f"the agent runs {running.config}, the doctor read {config_path}",
                f"bgp-lb doctor {running.config}",
            )
        ]
    if running is None:
        return [
            Finding(
                "agent",
                "Go flags",
                Level.FAIL,
                "the doctor was given Go flags, the agent runs as 'bgp-lb run' (no Go flags): "
                "diagnosed against the config as the agent runs it",
                "run the doctor without the Go flags, or start the agent with them (the unit's "
                f"ExecStart=/opt/bgp-lb/venv/bin/bgp-lb {given.command_line()})",
            )
        ]
    differ = [
        f"-{n.replace('_', '-')}: given {_flag_text(given, n)}, the agent {_flag_text(running, n)}"
        for n in GO_FLAG_FIELDS
        if not _same_flag(n, given, running)
    ]
    if not differ:
        return [Finding("agent", "Go flags", Level.OK, "the same as the running agent's")]
    return [
        Finding(
            "agent",
            "Go flags",
            Level.FAIL,
            "; ".join(differ) + " (diagnosed with the agent's)",
            f"give the doctor the agent's flags (bgp-lb doctor {running.command_line()}), or "
            "restart the agent with the ones you meant (the unit's ExecStart=)",
        )
    ]


def _flag_text(flags: GoFlags, name: str) -> str:
    value = getattr(flags, name)
    return str(value).lower() if isinstance(value, bool) else str(value)
