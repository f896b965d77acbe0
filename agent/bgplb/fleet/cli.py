"""``bgp-lb fleet render FLEET OUT``: exit 0 when written, 2 on a bad fleet file or a non-empty
OUT without --force, 1 when writing failed. Errors one per line as ``<field path>: <reason>``.
``bgp-lb fleet roll``: roll_cli.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from ..config import ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def add_fleet_parser(sub: Any) -> None:
    fleet = sub.add_parser("fleet", help="render a fleet file (docs/fleet.md)")
    verbs = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    render = verbs.add_parser(
        "render",
        help="per-node cloud-init seeds, FRR snippets and Prometheus targets from a fleet file",
    )
    render.add_argument("fleet", help="the fleet file (YAML)")
    render.add_argument("out", help="the output directory (created; must be empty)")
    render.add_argument("--force", action="store_true", help="replace a non-empty OUT")
    render.add_argument(
        "--network-config",
        choices=["v1", "v2"],
        default="v2",
        help="cloud-init network-config version (Proxmox writes v1; default v2)",
    )
    from .roll_cli import add_roll_parser

    add_roll_parser(verbs)


def run_fleet(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    if args.fleet_command == "roll":
        from .roll_cli import run_roll

        return run_roll(args, out, err)
    from .load import load_fleet
    from .output import OutputError, write_tree
    from .render import render_fleet

    out = out or sys.stdout
    err = err or sys.stderr
    source = Path(args.fleet)
    try:
        fleet = load_fleet(source)
        rendering = render_fleet(fleet, 1 if args.network_config == "v1" else 2)
    except ConfigError as e:
        for issue in e.errors:
            print(f"{source}: {issue}" if issue.path else str(issue), file=err)
        return EXIT_USAGE
    for line in rendering.progress:
        print(line, file=out)
    for note in rendering.notes:
        print(f"note: {note}", file=out)
    target = Path(args.out)
    if target.is_dir() and any(target.iterdir()) and not args.force:
        print(f"{target}: not empty (--force replaces it)", file=err)
        return EXIT_USAGE
    try:
        write_tree(target, rendering.files, force=args.force)
    except OutputError as e:
        print(str(e), file=err)
        return EXIT_FAILURE
    print(f"wrote {len(rendering.files)} files to {target} (mode 0600)", file=out)
    return EXIT_OK
