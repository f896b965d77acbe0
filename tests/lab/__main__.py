"""``python -m tests.lab``: the lab runner's command line (root; see containerlab/README.md).

up TOPOLOGY [--no-agents]   build the lab here and leave it running (needs ip_vs + dummy
                            for the agents; --no-agents: routers + backends only)
down [LAB]                  remove a lab (default: every lab) and anything it left behind
shell TOPOLOGY              build the lab and open a shell (inside the VM if needed);
                            the lab is removed when the shell exits
demo                        the ECMP demo (make demo)
test [PYTEST ARGS]          the lab tests (make test-lab), inside the VM if needed
node stop LAB NODE          stop a running lab node's agent (SIGTERM, waits for it)
node replace LAB NODE --image-version V
                            what a new disk does to the node: empty state_dir, IMAGE_VERSION V,
                            node.start_drained, the agent started (the rolling upgrade test)
"""

from __future__ import annotations

import argparse
import sys

from .runner import Lab, teardown
from .topology import TopologyError, load_topology


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("topology")
    up.add_argument("--no-agents", action="store_true")
    down = sub.add_parser("down")
    down.add_argument("lab", nargs="?")
    check = sub.add_parser("check", help="validate a topology file")
    check.add_argument("topology")
    shell = sub.add_parser("shell")
    shell.add_argument("topology")
    shell.add_argument("--native", action="store_true", help=argparse.SUPPRESS)
    demo = sub.add_parser("demo")
    demo.add_argument("--native", action="store_true", help=argparse.SUPPRESS)
    test = sub.add_parser("test")
    test.add_argument("--native", action="store_true", help=argparse.SUPPRESS)
    test.add_argument("pytest_args", nargs=argparse.REMAINDER)
    node = sub.add_parser("node")
    node.add_argument("action", choices=["stop", "replace"])
    node.add_argument("lab")
    node.add_argument("node")
    node.add_argument("--image-version", default=None)
    args, extra = p.parse_known_args(argv)
    if extra and args.cmd != "test":
        p.error(f"unrecognized arguments: {' '.join(extra)}")

    if args.cmd == "down":
        for item in teardown(args.lab):
            print(f"removed {item}")
        return 0
    if args.cmd == "node":
        lab = Lab.attach(args.lab)
        if args.node not in {n.name for n in lab.topology.by_role("lb")}:
            p.error(f"{args.node}: not an lb node of {args.lab}")
        lab.stop_agent(args.node)
        if args.action == "stop":
            print(f"{args.node}: agent stopped")
            return 0
        if not args.image_version:
            p.error("replace needs --image-version")
        pid = lab.replace_disk(args.node, args.image_version)
        print(f"{args.node}: new disk (image {args.image_version}), agent started (pid {pid})")
        return 0
    if args.cmd == "demo":
        from .demo import run_demo

        return run_demo(native=args.native)
    if args.cmd == "test":
        from .vm import run_lab_tests

        return run_lab_tests([*args.pytest_args, *extra], native=args.native)
    try:
        topology = load_topology(args.topology)
    except TopologyError as e:
        print(f"error: invalid topology:\n{e}", file=sys.stderr)
        return 2
    if args.cmd == "check":
        print(f"{topology.path}: OK ({len(topology.nodes)} nodes, {len(topology.links)} links)")
        return 0
    if args.cmd == "shell":
        from .vm import run_shell

        return run_shell(topology, native=args.native)
    if not args.no_agents:
        from .vm import native

        if not native():
            print("==> this kernel has no IPVS/dummy: the lab runs in a VM; you get a shell in it")
            print("==> (the lab is removed when you leave the shell)")
            from .vm import run_shell

            return run_shell(topology)
    lab = Lab(topology, agents=not args.no_agents)
    took = lab.up(say=print)
    print(f"lab {topology.name} is up ({took:.1f}s); `make lab-down` removes it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
