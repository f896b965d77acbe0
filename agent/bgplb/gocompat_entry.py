"""Runs the agent from the Go bgp-lb's command line (:mod:`bgplb.gocompat`): the same
process as ``bgp-lb run`` with the flags' meanings applied to the config at start and on
every reload, and the Go tool's gauge exported."""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from pathlib import Path

from .agent import EXIT_CONFIG
from .gocompat import USAGE, GoFlagError, GoHelp, adjust_config, parse_go_flags
from .logs import setup_logging

EXIT_USAGE = 2


def run_go_command_line(argv: Sequence[str]) -> int:
    try:
        flags = parse_go_flags(argv)
    except GoHelp:
        print(USAGE)
        return 0
    except GoFlagError as e:
        print(f"bgp-lb: {e}\n{USAGE}", file=sys.stderr)
        return EXIT_USAGE
    from .entry import build_real_agent, load_or_report, run_process

    path = Path(flags.config)
    loaded = load_or_report(path)
    if loaded is None:
        return EXIT_CONFIG
    adjust = functools.partial(adjust_config, flags=flags)
    config = adjust(loaded)
    setup_logging(config.node.log.format, config.node.log.level)

    agent = build_real_agent(config, path, config_adjust=adjust, go_flags=flags)
    return run_process(agent)
