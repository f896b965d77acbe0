"""The ``bgp-lb`` command line. Each subcommand is a thin call into the module that owns it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad input: a bad config, an unknown service, a bad argument

DEFAULT_CONFIG = "/etc/bgp-lb/config.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bgp-lb", description=__doc__)
    p.add_argument("--version", action="version", version=f"bgp-lb {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent")
    run.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    run.add_argument("--log-format", choices=["json", "text"], default=None)
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)

    chk = sub.add_parser("check-config", help="validate a config file; exit 2 on errors")
    chk.add_argument("config")

    prt = sub.add_parser("print-config", help="print the parsed config (secrets redacted)")
    prt.add_argument("config")
    prt.add_argument("--effective", action="store_true", help="include every default")
    prt.add_argument("--format", choices=["yaml", "json"], default="yaml")

    node = sub.add_parser("check-node", help="check kernel modules and sysctls the agent needs")
    node.add_argument("config", nargs="?", default=None)
    node.add_argument("--json", action="store_true")

    for name, help_ in (
        ("status", "show the agent's status"),
        ("drain", "drain a service (or --all: the node)"),
        ("undrain", "undrain a service (or --all: the node)"),
        ("reload", "ask the agent to reload its config"),
    ):
        c = sub.add_parser(name, help=help_)
        if name in ("drain", "undrain"):
            g = c.add_mutually_exclusive_group(required=True)
            g.add_argument("service", nargs="?")
            g.add_argument("--all", action="store_true", help="the whole node")
        if name == "drain":
            _drain_wait_arguments(c)
        if name == "status":
            c.add_argument("--json", action="store_true")
        if name == "reload":
            c.add_argument(
                "--probe",
                action="store_true",
                help="probe the changed and new checks first; refuse the config if one fails",
            )
        c.add_argument("--config", default=None, help="read the API address/token from here")
        c.add_argument("--api", default=None, help="API base URL (default from config)")
        c.add_argument("--token-file", default=None)

    from .doctor_cli import add_doctor_parser
    from .unconfigured import add_unconfigured_parser

    add_unconfigured_parser(sub)
    from .fleet.cli import add_fleet_parser

    add_fleet_parser(sub)
    add_doctor_parser(sub)
    return p


def _drain_wait_arguments(c: argparse.ArgumentParser) -> None:
    from .client import WAIT_TIMEOUT
    from .drainwatch import DEFAULT_QUIET, DEFAULT_THRESHOLD

    c.add_argument(
        "--wait",
        action="store_true",
        help="wait until the routes are withdrawn, then (ipvs mode) print this node's inbound "
        "packets/s per VIP about once a second and return once every VIP stayed below "
        "--threshold for --quiet seconds. Not active connections: with direct routing IPVS "
        "sees only the inbound half of a flow and keeps an entry ESTABLISHED for up to 900 s "
        "after its last packet. Announce-mode services have no IPVS counters: only their "
        "withdraw is waited for",
    )
    c.add_argument(
        "--threshold",
        type=_positive,
        default=DEFAULT_THRESHOLD,
        metavar="PPS",
        help=f"--wait: inbound packets/s per VIP counted as quiet (default {DEFAULT_THRESHOLD:g})",
    )
    c.add_argument(
        "--quiet",
        type=_positive,
        default=DEFAULT_QUIET,
        metavar="SECONDS",
        help=f"--wait: how long every VIP must stay below it (default {DEFAULT_QUIET:g})",
    )
    c.add_argument(
        "--timeout",
        type=_positive,
        default=WAIT_TIMEOUT,
        metavar="SECONDS",
        help="--wait: give up (exit 1, saying what the rate still was) after this long "
        f"(default {WAIT_TIMEOUT:g})",
    )


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be a positive number of seconds or packets/s: {text!r}"
        )
    return value


def main(argv: Sequence[str] | None = None) -> int:
    from .gocompat import is_go_command_line

    argv = list(sys.argv[1:] if argv is None else argv)
    if is_go_command_line(argv):  # the Go bgp-lb's flags, no subcommand
        from .gocompat_entry import run_go_command_line

        return run_go_command_line(argv)
    go_argv: list[str] = []
    if argv[:1] == ["doctor"]:  # the Go flags among the doctor's options (doctor_cli.py)
        from .doctor_cli import split_go_flags

        own, go_argv = split_go_flags(argv[1:])
        argv = ["doctor", *own]
    args = _parser().parse_args(argv)
    cmd: str = args.command
    if cmd in ("check-config", "print-config"):
        from .config_cli import run_config_command

        return run_config_command(args)
    if cmd == "run":
        from .entry import run_agent

        return run_agent(args)
    if cmd == "check-node":
        from .dataplane.prereq import run_check_node

        return run_check_node(args)
    if cmd == "doctor":
        from .doctor_cli import parse_doctor_go_flags, run_doctor
        from .gocompat import GoFlagError

        try:
            args.go_flags = parse_doctor_go_flags(args, go_argv)
        except GoFlagError as e:
            print(f"bgp-lb doctor: {e}", file=sys.stderr)
            return EXIT_USAGE
        return run_doctor(args)
    if cmd == "unconfigured":
        from .unconfigured import run_unconfigured

        return run_unconfigured(args)
    if cmd == "fleet":
        from .fleet.cli import run_fleet

        return run_fleet(args)
    from .client import run_client_command

    return run_client_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
