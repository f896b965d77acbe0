"""``bgp-lb doctor [CONFIG] [--json]``: gathers what :mod:`bgplb.doctor` diagnoses (the
config file, check-node's prerequisites, the running agent's status over its API), prints the
report (text or ``--json``) and exits 0 (no failure) or 1."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from .client import ClientError, Target, _url_host, request
from .config import Config, ConfigError, ConfigIssue, load_config
from .dataplane.prereq import check_prerequisites
from .doctor import Inputs, diagnose, render
from .status import StatusResponse

DEFAULT_API = "http://127.0.0.1:9180"


def add_doctor_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = sub.add_parser(
        "doctor",
        help="walk config -> kernel -> ExaBGP -> sessions -> VIPs/IPVS -> checks -> "
        "announced routes, with a fix for each failure; exit 1 on a failure",
    )
    d.add_argument("config", nargs="?", default=None, help="default /etc/bgp-lb/config.yaml")
    d.add_argument("--json", action="store_true")
    d.add_argument("--api", default=None, help="API base URL (default from the config)")
    d.add_argument("--root", default="/", help=argparse.SUPPRESS)  # tests: a fake /proc, /sys


def gather(args: argparse.Namespace) -> Inputs:
    from .cli import DEFAULT_CONFIG

    path = args.config or DEFAULT_CONFIG
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
    prerequisites = check_prerequisites(config, Path(args.root)) if not issues else None
    return Inputs(
        config_path=str(path),
        config=config,
        config_issues=tuple(issues),
        config_error=error,
        prerequisites=prerequisites,
        status=status,
        status_error=status_error,
        api=api,
    )


def run_doctor(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    report = diagnose(gather(args))
    if args.json:
        out.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        out.write(render(report) + "\n")
    return 0 if report.ok else 1
