"""``bgp-lb fleet roll FLEET --install CMD --image-version V``: the rolling replacement
(roll.py) of the fleet file's nodes, in its order, by the operator's commands (roll_ops.py).
Exit 0 when every node runs the new version and announces, 1 when the roll stopped (the output
says at which node and step), 2 on bad input (nothing was done)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ..config import ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def add_roll_parser(verbs: Any) -> None:
    from .roll import Timing

    t = Timing()
    roll = verbs.add_parser(
        "roll",
        help="replace the nodes one at a time: drain --all --wait, stop, install, healthy at "
        "the new version, undrain (docs/operations.md#rolling-upgrade-bgp-lb-fleet-roll)",
    )
    roll.add_argument("fleet", help="the fleet file: its nodes, in its order")
    roll.add_argument("--nodes", default=None, help="these nodes only, in this order (a,b,c)")
    roll.add_argument(
        "--install",
        required=True,
        metavar="CMD",
        help="run here per node ({node}, $BGPLB_NODE): put the new version in place and start "
        "it (a VM: its new disk, booted; start it drained: node.start_drained)",
    )
    roll.add_argument(
        "--version", dest="want_version", default=None, help="the agent's new version"
    )
    roll.add_argument("--image-version", default=None, help="the image's new IMAGE_VERSION")
    roll.add_argument(
        "--on-node",
        default="",
        metavar="PREFIX",
        help="how to run a command on a node, e.g. 'ssh root@{node}' (default: here)",
    )
    roll.add_argument("--bgp-lb", default="bgp-lb", metavar="CMD", help="the CLI on the node")
    roll.add_argument(
        "--node-config", default=None, metavar="PATH", help="--config for the CLI on the node"
    )
    roll.add_argument(
        "--stop",
        default=None,
        metavar="CMD",
        help="run here per node instead of 'systemctl stop bgp-lb' on it",
    )
    roll.add_argument(
        "--traffic-counter",
        default=None,
        metavar="CMD",
        help='run here after each step; its last line {"sent": N, "failed": M} (cumulative): '
        "the roll prints the requests sent and failed per step and node",
    )
    roll.add_argument("--drain-timeout", type=float, default=300.0, metavar="S")
    roll.add_argument("--healthy-timeout", type=float, default=t.healthy_timeout, metavar="S")
    roll.add_argument("--announce-timeout", type=float, default=t.announce_timeout, metavar="S")
    roll.add_argument(
        "--poll", type=float, default=t.poll, metavar="S", help="between status reads"
    )
    roll.add_argument("--json", action="store_true", help="a JSON summary as the last line")


def run_roll(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    from .load import load_fleet
    from .roll import Roll, Target, Timing, summary_rows
    from .roll_ops import CommandCounter, CommandOps, Commands

    out = out or sys.stdout
    err = err or sys.stderr
    source = Path(args.fleet)
    try:
        fleet = load_fleet(source)
    except ConfigError as e:
        for issue in e.errors:
            print(f"{source}: {issue}" if issue.path else str(issue), file=err)
        return EXIT_USAGE
    names = [n.name for n in fleet.spec.nodes]
    nodes = names
    if args.nodes is not None:
        nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
        unknown = [n for n in nodes if n not in names]
        if unknown or not nodes or len(set(nodes)) != len(nodes):
            print(
                f"--nodes: {', '.join(unknown) or 'empty or repeated'} "
                f"(the fleet's nodes: {', '.join(names)})",
                file=err,
            )
            return EXIT_USAGE
    if args.want_version is None and args.image_version is None:
        print("give the new version: --version and/or --image-version", file=err)
        return EXIT_USAGE
    bad = [
        f"--{k.replace('_', '-')}"
        for k in ("drain_timeout", "healthy_timeout", "announce_timeout", "poll")
        if not getattr(args, k) > 0
    ]
    if bad:
        print(f"{', '.join(bad)}: must be positive seconds", file=err)
        return EXIT_USAGE

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    commands = Commands(
        on_node=args.on_node,
        bgp_lb=args.bgp_lb,
        node_config=args.node_config,
        stop=args.stop,
        install=args.install,
        drain_timeout=args.drain_timeout,
    )
    roll = Roll(
        nodes,
        Target(args.want_version, args.image_version),
        CommandOps(commands, say),
        now=time.monotonic,
        sleep=time.sleep,
        say=say,
        timing=Timing(args.healthy_timeout, args.announce_timeout, args.poll),
        counter=CommandCounter(args.traffic_counter) if args.traffic_counter else None,
    )
    result = roll.run()
    if args.json:
        summary: dict[str, object] = {
            "ok": result.ok,
            "seconds": round(result.seconds, 1),
            "error": result.error,
            "nodes": summary_rows(result),
        }
        if result.traffic is not None:
            summary["sent"] = result.traffic.sent
            summary["failed"] = result.traffic.failed
        print(json.dumps(summary), file=out, flush=True)
    return EXIT_OK if result.ok else EXIT_FAILURE
