"""``bgp-lb doctor [CONFIG] [--json] [--api URL] [Go flags]``: gathers what
:mod:`bgplb.doctor` diagnoses (the config file, check-node's prerequisites for the config as the
agent runs it, the running agent's status over its API), prints the report (text or ``--json``)
and exits 0 (no failure) or 1; 2 for a bad command line.

The Go bgp-lb's flags (``-config FILE -ipvs-setup -network-setup=false ...``, Go's syntax, parsed
by :func:`bgplb.gocompat.parse_go_flags`) may be mixed with the doctor's own options in any
order: they say how the agent is (or was) started, for when its status cannot be read."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from .client import ClientError, Target, _url_host, request
from .config import Config, ConfigError, ConfigIssue, load_config
from .dataplane.prereq import check_prerequisites
from .doctor import Inputs, diagnose, effective_config, render
from .gocompat import FLAGS, GO_DEFAULT_CONFIG, VALUE_FLAGS, GoFlagError, GoFlags, parse_go_flags
from .status import StatusResponse

DEFAULT_API = "http://127.0.0.1:9180"
YAML_DEFAULT = "/etc/bgp-lb/config.yaml"

GO_FLAGS_HELP = (
    "Go flags: the Go bgp-lb's -config FILE, -network-setup[=BOOL], -ipvs-setup[=BOOL], "
    "-metrics-address ADDR and -log-level L (Go's syntax) mix in any order with --json and "
    "--api, which keep their meaning (--api, not -metrics-address, is the agent's API). With "
    f"Go flags the file is -config's (default {GO_DEFAULT_CONFIG}; no CONFIG) and, while the "
    "agent's status cannot be read, the config is diagnosed as they adjust it. An agent started "
    "with Go flags (status node.go_flags) is always diagnosed with its own; given flags that "
    "differ from them are a failure."
)


def add_doctor_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser(
        "doctor",
        help="walk config -> kernel -> ExaBGP -> sessions -> VIPs/IPVS -> checks -> "
        "announced routes, with a fix for each failure; exit 1 on a failure",
        description="Diagnose this node, a fix under each failure; exit 0/1. " + GO_FLAGS_HELP,
        usage="bgp-lb doctor [CONFIG] [--json] [--api URL] [-config FILE] [-network-setup[=BOOL]]"
        " [-ipvs-setup[=BOOL]] [-metrics-address ADDR] [-log-level L]",
    )
    d.add_argument(
        "config",
        nargs="?",
        default=None,
        help=f"default {YAML_DEFAULT}, or {GO_DEFAULT_CONFIG} if only that exists",
    )
    d.add_argument("--json", action="store_true")
    d.add_argument("--api", default=None, help="API base URL (default from the config)")
    d.add_argument("--root", default="/", help=argparse.SUPPRESS)  # tests: a fake /proc, /sys


def split_go_flags(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``doctor``'s arguments -> (the doctor's own, the Go flags). A Go flag is ``-x``/``--x``
    (``=v`` or, for a non-bool flag, the next argument as its value) with ``x`` a Go flag."""
    own: list[str] = []
    go: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name = arg[2:] if arg.startswith("--") else arg[1:] if arg.startswith("-") else ""
        name, eq, _ = name.partition("=")
        if name in FLAGS:
            go.append(arg)
            if name in VALUE_FLAGS and not eq and i + 1 < len(args):
                i += 1
                go.append(args[i])
        else:
            own.append(arg)
        i += 1
    return own, go


def parse_doctor_go_flags(args: argparse.Namespace, go_argv: Sequence[str]) -> GoFlags | None:
    """The Go flags given to the doctor (None: none). Raises GoFlagError."""
    if not go_argv:
        return None
    flags = parse_go_flags(go_argv)
    if args.config is not None:
        raise GoFlagError(
            f"unexpected argument {args.config!r} with the Go flags: give the file as -config FILE"
        )
    return flags


def choose_config(
    config: str | None, go_flags: GoFlags | None, exists: Callable[[str], bool] = os.path.exists
) -> tuple[str, str]:
    """(the file to diagnose, how it was chosen: "" when given)."""
    if go_flags is not None:
        return go_flags.config, ""
    if config is not None:
        return config, ""
    if not exists(YAML_DEFAULT) and exists(GO_DEFAULT_CONFIG):
        return GO_DEFAULT_CONFIG, f"no CONFIG given and no {YAML_DEFAULT}: the Go default"
    return YAML_DEFAULT, "no CONFIG given: the default"


def gather(args: argparse.Namespace) -> Inputs:
    go_flags: GoFlags | None = getattr(args, "go_flags", None)
    path, note = choose_config(args.config, go_flags)
    config: Config | None = None
    issues: list[ConfigIssue] = []
    error = None
    try:
        config = load_config(path)
    except ConfigError as e:
        issues = list(e.errors)
    except OSError as e:
        error = e.strerror or str(e)
    api = args.api
    if api is None and config is not None:
        api = f"http://{_url_host(str(config.node.api.listen))}:{config.node.api.port}"
    api = (api or DEFAULT_API).rstrip("/")
    status: StatusResponse | None = None
    status_error = None
    try:
        status = StatusResponse.model_validate(request(Target(api, None), "GET", "/api/v1/status"))
    except ClientError as e:
        status_error = str(e)
    except ValidationError as e:
        status_error = f"the agent's status does not match this doctor's version: {e}"
    inputs = Inputs(
        config_path=str(path),
        config=config,
        config_issues=tuple(issues),
        config_error=error,
        status=status,
        status_error=status_error,
        api=api,
        config_note=note,
        go_flags=go_flags,
    )
    if issues:
        return inputs
    # the kernel as the agent runs the config: without -ipvs-setup no IPVS is needed
    prerequisites = check_prerequisites(effective_config(inputs), Path(args.root))
    return dataclasses.replace(inputs, prerequisites=prerequisites)


def run_doctor(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    report = diagnose(gather(args))
    if args.json:
        out.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        out.write(render(report) + "\n")
    return 0 if report.ok else 1
